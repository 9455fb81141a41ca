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

from tests.docs import docs_text
from tests.integration.test_kubectl_canary_commands import COMMANDS

pytestmark = pytest.mark.integration


def run(argv: list[str], env: dict, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def sourced(env_file: Path) -> dict[str, str]:
    """What `set -a; . env; set +a` exports."""
    out = subprocess.run(["bash", "-c", f"set -a; . {shlex.quote(str(env_file))}; set +a; env -0"],
                         capture_output=True, check=True).stdout.decode()
    return dict(line.split("=", 1) for line in out.split("\0") if "=" in line)


README = Path(__file__).resolve().parents[2] / "README.md"


def running(pid: int) -> bool:
    """A live process (not a zombie, which has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def readme_block() -> list[str]:
    """The shell lines of the README's "Try the kserve target on this machine" block."""
    section = docs_text().split("## Try the kserve target on this machine", 1)[1]
    return section.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()


def test_cluster_up_deploy_promote_rollback_down(tiny_run, tmp_path):
    lines = readme_block()
    assert lines[0].startswith("make cluster ") and "make cluster-down" not in lines  # down after the kubectl steps
    assert "When you are done, `make cluster-down` stops every server of the cluster." in docs_text()
    # a working dir as after `make demo`: the venv, and a pipeline report naming two exported models
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parents[1])
    report = tmp_path / ".fraud-rollout" / "demo" / "pipeline" / "report.json"
    report.parent.mkdir(parents=True)
    report.write_text(json.dumps({"models": {"v1": {"artifact": str(tiny_run.v1)}, "v2": {"artifact": str(tiny_run.v2)}}}))
    directory = tmp_path / ".fraud-rollout" / "cluster"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KUBECONFIG", "S3_", "AWS_"))}
    cli = [sys.executable, "-m", "fraud_rollout"]
    up = run([*cli, "cluster", "up"], base, tmp_path, timeout=900)  # what `make cluster` runs
    try:
        assert up.returncode == 0, up.stderr
        assert f"use it from this shell:  set -a; . {directory.resolve() / 'env'}; set +a" in up.stdout
        # the README's lines after `make cluster`, verbatim, in one shell
        shown = run(["bash", "-ec", "\n".join(lines[1:])], {**base, "HOME": str(tmp_path)}, tmp_path)
        assert shown.returncode == 0, shown.stderr
        out = shown.stdout.splitlines()
        assert out[0].split() == ["NAME", "CREATED", "AT"] and out[1].split()[0] == "inferenceservices.serving.kserve.io"
        assert "default/fraud-detector: created with v1; canary v2 at 20 %" in out
        assert [(t["revisionName"], t["percent"]) for t in json.loads(out[-1])] == [
            ("fraud-detector-predictor-00002", 20), ("fraud-detector-predictor-00001", 80)]
        env = {**base, **sourced(directory / "env"), "NS": "default", "HOME": str(tmp_path)}

        def split() -> list[tuple[str, int]]:
            shown = run(["kubectl", "get", "isvc", "fraud-detector", "-n", "default", "-o",
                         "jsonpath={.status.components.predictor.traffic}"], env, tmp_path)
            return [(t["revisionName"], t["percent"]) for t in json.loads(shown.stdout)]

        for step, expected in (("promote", [("fraud-detector-predictor-00002", 100)]),
                               ("rollback", [("fraud-detector-predictor-00002", 0),
                                             ("fraud-detector-predictor-00001", 100)])):
            commands = ("promote", "wait_promoted") if step == "promote" else ("to_previous", "rollback",
                                                                               "wait_rolled_back")
            for which in commands:
                argv = [a.replace("$NS", "default").replace("$TO", env.get("TO", "")) for a in shlex.split(COMMANDS[which])]
                done = run(argv, env, tmp_path)
                assert done.returncode == 0, f"{COMMANDS[which]}\n{done.stderr}"
                if which == "to_previous":
                    env["TO"] = done.stdout
            assert split() == expected

        again = run([*cli, "cluster", "up"], base, tmp_path)  # running: returns it
        assert again.returncode == 0 and "cluster ready" in again.stdout
    finally:
        down = run([*cli, "cluster", "down"], base, tmp_path)  # what `make cluster-down` runs
    assert down.stdout.strip() == "stopped etcd, kube-apiserver, minio, kserve-controller-manager, knative-standin"
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
    clean = run(["make", "-f", str(README.parent / "Makefile"), "clean"], base, tmp_path)
    assert clean.returncode == 0, clean.stderr
    assert "stopped etcd, kube-apiserver, minio, kserve-controller-manager, knative-standin" in clean.stdout
    assert [pid for pid in pids.values() if running(pid)] == []
    assert not (tmp_path / ".fraud-rollout").exists() and Path(sys.executable).exists()
