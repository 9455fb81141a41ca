"""The README's kubectl commands for the canary, verbatim, run with the real kubectl against the
real control plane (KServe's controller computes the traffic): status, promote, roll back, wait."""
from __future__ import annotations

import json
import os
import shlex
import subprocess

import pytest
from fraud_control.inferenceservice.traffic import traffic_status

from tests.docs import docs_text

pytestmark = pytest.mark.integration

#: Exactly as in the README ("Promote or roll back the canary with kubectl"), with NS set.
COMMANDS = {
    "get": "kubectl get isvc fraud-detector -n $NS",
    "traffic": """kubectl get isvc fraud-detector -n $NS -o jsonpath='{range .status.components.predictor.traffic[*]}{.revisionName}{"\\t"}{.tag}{"\\t"}{.percent}{"\\n"}{end}'""",
    "rolled_out": "kubectl get isvc fraud-detector -n $NS -o jsonpath='{.status.components.predictor.latestRolledoutRevision}'",
    "promote": """kubectl patch isvc fraud-detector -n $NS --type=json -p '[{"op": "remove", "path": "/spec/predictor/canaryTrafficPercent"}]'""",
    "rollback": """kubectl patch isvc fraud-detector -n $NS --type=merge -p '{"spec": {"predictor": {"canaryTrafficPercent": 0}}}'""",
    "wait_promoted": """kubectl wait isvc/fraud-detector -n $NS --for=jsonpath='{.status.components.predictor.traffic[?(@.latestRevision==true)].percent}'=100 --timeout=600s""",
    "to_rolled_out": "kubectl get isvc fraud-detector -n $NS -o jsonpath='{.status.components.predictor.latestRolledoutRevision}'",
    "to_previous": "kubectl get isvc fraud-detector -n $NS -o jsonpath='{.status.components.predictor.previousRolledoutRevision}'",
    "wait_rolled_back": r"""kubectl wait isvc/fraud-detector -n $NS --for=jsonpath="{.status.components.predictor.traffic[?(@.revisionName==\"$TO\")].percent}"=100 --timeout=600s""",
}


@pytest.fixture
def cluster(canary_cluster, tmp_path):
    env = {**os.environ, "KUBECONFIG": str(canary_cluster.kubeconfig), "NS": canary_cluster.ns, "HOME": str(tmp_path)}
    return canary_cluster, env


def kubectl(which: str, env: dict) -> str:
    argv = [a.replace("$NS", env["NS"]).replace("$TO", env.get("TO", "")) for a in shlex.split(COMMANDS[which])]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, f"{COMMANDS[which]}\n{result.stderr}"
    return result.stdout


def traffic(env: dict) -> list[tuple[str, str, int]]:
    rows = [line.split("\t") for line in kubectl("traffic", env).splitlines() if line]
    return [(revision, tag, int(percent)) for revision, tag, percent in rows]


def test_status_commands_show_the_canary_split(cluster):
    _, env = cluster
    assert "fraud-detector" in kubectl("get", env)
    assert traffic(env) == [("fraud-detector-predictor-00002", "latest", 20),
                            ("fraud-detector-predictor-00001", "prev", 80)]
    assert kubectl("rolled_out", env) == "fraud-detector-predictor-00001"


def test_promote_then_wait_waits_for_the_controller(cluster):
    deployed, env = cluster
    assert "patched" in kubectl("promote", env)
    kubectl("wait_promoted", env)
    status = traffic_status(json.loads(subprocess.run(
        ["kubectl", "get", "isvc", "fraud-detector", "-n", env["NS"], "-o", "json"], env=env, capture_output=True,
        text=True, timeout=60, check=True).stdout))
    assert status["ready"] and status["generation"] == 3
    assert traffic(env) == [("fraud-detector-predictor-00002", "latest", 100)]
    assert kubectl("rolled_out", env) == "fraud-detector-predictor-00002"
    assert [w["verb"] for w in deployed.namespace.writes()] == ["create", "patch", "patch"]


def test_wait_for_condition_ready_would_hang_after_a_promote(cluster):
    """Why the README waits on the traffic: kubectl wait --for=condition=Ready compares
    status.observedGeneration, which KServe copies from the transformer's Knative Service (kserve #6081)."""
    _, env = cluster
    kubectl("promote", env)
    kubectl("wait_promoted", env)
    argv = ["kubectl", "wait", "isvc/fraud-detector", "-n", env["NS"], "--for=condition=Ready", "--timeout=3s"]
    waited = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    assert waited.returncode == 1
    assert "timed out waiting for the condition on inferenceservices/fraud-detector" in waited.stderr


def readme_blocks() -> dict[str, str]:
    """The section's shell blocks, as a user pastes them, by what they do."""

    section = docs_text().split(
        "## Promote or roll back the canary", 1)[1].split("\n## ", 1)[0]
    blocks = [part.split("```", 1)[0] for part in section.split("```sh\n")[1:]]
    assert len(blocks) == 5, blocks
    return dict(zip(("status", "rollback_canary", "promote", "rollback_promoted", "cli"), blocks))


def paste(block: str, env: dict) -> str:
    """The block in one shell, as pasted (set -e: a failing line stops it); never the 600 s wait's timeout."""
    done = subprocess.run(["bash", "-ec", block], capture_output=True, text=True, env=env, timeout=180)
    assert done.returncode == 0, f"{block}\n{done.stderr}"
    return done.stdout


def test_the_rollback_block_pasted_during_a_first_canary_gives_v1_all_traffic(cluster):
    _, env = cluster
    assert "previousRolledoutRevision" not in readme_blocks()["rollback_canary"]  # a first canary has none
    paste(readme_blocks()["rollback_canary"], env)
    assert traffic(env) == [("fraud-detector-predictor-00002", "latest", 0),
                            ("fraud-detector-predictor-00001", "prev", 100)]


def test_the_rollback_block_pasted_after_a_promote_waits_for_the_previous_revision(cluster):
    _, env = cluster
    paste(readme_blocks()["promote"], env)
    assert traffic(env) == [("fraud-detector-predictor-00002", "latest", 100)]
    paste(readme_blocks()["rollback_promoted"], env)
    assert traffic(env) == [("fraud-detector-predictor-00002", "latest", 0),
                            ("fraud-detector-predictor-00001", "prev", 100)]
    assert kubectl("rolled_out", env) == "fraud-detector-predictor-00001"


def test_the_cli_reads_what_kubectl_wrote(cluster, capsys):
    from fraud_rollout.cli import main

    _, env = cluster
    kubectl("promote", env)
    kubectl("wait_promoted", env)
    assert main(["canary", "status", "--target", "kserve", "--namespace", env["NS"], "--kubeconfig", env["KUBECONFIG"],
                 "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)["status"]
    assert printed["canaryTrafficPercent"] is None
    assert printed["latestRolledoutRevision"] == "fraud-detector-predictor-00002"


def test_every_command_here_is_in_the_readme_verbatim():

    readme = docs_text()
    assert [name for name, command in COMMANDS.items() if command not in readme] == []
