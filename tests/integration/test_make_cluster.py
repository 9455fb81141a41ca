"""The README's "Try the kserve target on this machine" path, as a user runs it: `fraud-rollout
cluster up` (what `make cluster` runs), its env file, `kubectl get crd`, `fraud-rollout deploy
--target kserve`, the split as KServe's controller computed it, the README's promote and rollback
commands, `cluster down`. Its own cluster directory, apart from the suite's session cluster."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_kubectl_canary_commands import COMMANDS

pytestmark = pytest.mark.integration


def run(argv: list[str], env: dict, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def sourced(env_file: Path) -> dict[str, str]:
    """What `set -a; . env; set +a` exports."""
    out = subprocess.run(["bash", "-c", f"set -a; . {shlex.quote(str(env_file))}; set +a; env -0"],
                         capture_output=True, check=True).stdout.decode()
    return dict(line.split("=", 1) for line in out.split("\0") if "=" in line)


def test_cluster_up_deploy_promote_rollback_down(tiny_run, tmp_path):
    directory = tmp_path / "cluster"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KUBECONFIG", "S3_", "AWS_"))}
    cli = [sys.executable, "-m", "fraud_rollout"]
    up = run([*cli, "cluster", "up", "--dir", str(directory)], base, tmp_path, timeout=900)
    try:
        assert up.returncode == 0, up.stderr
        assert f"use it from this shell:  set -a; . {directory.resolve() / 'env'}; set +a" in up.stdout
        env = {**base, **sourced(directory / "env"), "NS": "default", "HOME": str(tmp_path)}

        crd = run(["kubectl", "get", "crd", "inferenceservices.serving.kserve.io", "-o", "name"], env, tmp_path)
        assert crd.stdout.strip() == "customresourcedefinition.apiextensions.k8s.io/inferenceservices.serving.kserve.io"

        deployed = run([*cli, "deploy", "--target", "kserve", "--namespace", "default", "--baseline", str(tiny_run.v1),
                        "--candidate", str(tiny_run.v2), "--timeout", "120"], env, tmp_path)
        assert deployed.returncode == 0, deployed.stderr
        assert deployed.stdout.splitlines()[0] == "default/fraud-detector: created with v1; canary v2 at 20 %"

        def split() -> list[tuple[str, int]]:
            shown = run(["kubectl", "get", "isvc", "fraud-detector", "-n", "default", "-o",
                         "jsonpath={.status.components.predictor.traffic}"], env, tmp_path)
            return [(t["revisionName"], t["percent"]) for t in json.loads(shown.stdout)]

        assert split() == [("fraud-detector-predictor-00002", 20), ("fraud-detector-predictor-00001", 80)]
        for step, expected in (("promote", [("fraud-detector-predictor-00002", 100)]),
                               ("rollback", [("fraud-detector-predictor-00002", 0),
                                             ("fraud-detector-predictor-00001", 100)])):
            wait = "wait_promoted" if step == "promote" else "wait_rolled_back"
            for which in (step, wait):
                done = run([a.replace("$NS", "default") for a in shlex.split(COMMANDS[which])], env, tmp_path)
                assert done.returncode == 0, f"{COMMANDS[which]}\n{done.stderr}"
            assert split() == expected

        again = run([*cli, "cluster", "up", "--dir", str(directory)], base, tmp_path)  # running: returns it
        assert again.returncode == 0 and "cluster ready" in again.stdout
    finally:
        down = run([*cli, "cluster", "down", "--dir", str(directory)], base, tmp_path)
    assert down.stdout.strip() == "stopped etcd, kube-apiserver, minio, kserve-controller-manager, knative-standin"
    assert run([*cli, "cluster", "down", "--dir", str(directory)], base, tmp_path).stdout.strip() == (
        f"no cluster running in {directory}")
