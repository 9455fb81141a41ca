"""`make cluster` and `make cluster-down` as a user meets them beyond the README's path (which
tests/e2e/test_readme.py runs verbatim on a cluster of its own): `cluster up` on a running cluster
returns it, `cluster down` twice, `--purge`, and `make clean` on a running cluster. Its own cluster
directory, apart from the suite's session cluster."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs import REPO, docs_text

pytestmark = pytest.mark.integration

STOPPED = "stopped etcd, kube-apiserver, minio, kserve-controller-manager, knative-standin"


def run(argv: list[str], env: dict, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def running(pid: int) -> bool:
    """A live process (not a zombie, which has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def test_cluster_up_twice_down_twice_purge_and_make_clean(tmp_path):
    assert "When you are done, `make cluster-down` stops every server of the cluster." in " ".join(docs_text().split())
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parents[1])  # a checkout's venv; make clean removes the link
    directory = tmp_path / ".fraud-rollout" / "cluster"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KUBECONFIG", "S3_", "AWS_"))}
    cli = [sys.executable, "-m", "fraud_rollout"]
    up = run([*cli, "cluster", "up"], base, tmp_path, timeout=900)  # what `make cluster` runs
    try:
        assert up.returncode == 0, up.stderr
        assert f"use it from this shell:  set -a; . {directory.resolve() / 'env'}; set +a" in up.stdout
        again = run([*cli, "cluster", "up"], base, tmp_path)  # running: returns it
        assert again.returncode == 0 and "cluster ready" in again.stdout
    finally:
        down = run([*cli, "cluster", "down"], base, tmp_path)  # what `make cluster-down` runs
    assert down.stdout.strip() == STOPPED
    assert run([*cli, "cluster", "down"], base, tmp_path).stdout.strip() == (
        f"no cluster running in {Path('.fraud-rollout/cluster')}")
    # what a stopped cluster leaves (etcd's data, MinIO's objects, logs) goes with --purge
    assert directory.is_dir()
    purged = run([*cli, "cluster", "down", "--purge"], base, tmp_path)
    assert purged.stdout.splitlines() == [f"no cluster running in {Path('.fraud-rollout/cluster')}",
                                          f"removed {Path('.fraud-rollout/cluster')}"]
    assert not directory.exists()

    # `make clean` stops a running cluster before it removes the files its servers use (it once
    # removed them under the running servers); the venv here is a link, which it removes alone
    assert run([*cli, "cluster", "up"], base, tmp_path, timeout=900).returncode == 0
    pids = json.loads((directory / "cluster.json").read_text())["pids"]
    clean = run(["make", "-f", str(REPO / "Makefile"), "clean"], base, tmp_path)
    assert clean.returncode == 0, clean.stderr
    assert STOPPED in clean.stdout
    assert [pid for pid in pids.values() if running(pid)] == []
    assert not (tmp_path / ".fraud-rollout").exists() and Path(sys.executable).exists()


def test_make_cluster_installs_only_what_the_cluster_uses():
    """`make cluster` once apt-installed the suite's Prometheus, wrk and PostgreSQL too: it needs the venv,
    kubectl (the README's commands) and Go (the servers), and nothing of `make test`'s packages."""
    database = subprocess.run(["make", "-pn", "cluster"], cwd=REPO, capture_output=True, text=True, timeout=60).stdout
    rules = {line.split(":", 1)[0]: line.split(":", 1)[1].split() for line in database.splitlines()
             if line.startswith(("cluster:", ".venv/.kubectl:"))}
    assert rules["cluster"] == [".venv/.installed", ".venv/.kubectl", "go-servers"]
    recipe = subprocess.run(["make", "-n", "-B", ".venv/.kubectl"], cwd=REPO,
                            capture_output=True, text=True, timeout=60).stdout
    assert "kubernetes-client" in recipe and not re.search(r"\b(prometheus|wrk|postgresql|podman)\b", recipe)
