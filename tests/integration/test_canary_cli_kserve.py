"""`fraud-rollout canary status|promote|rollback --target kserve` against the real control plane,
through a kubeconfig, with MLflow aliases following on a temporary SQLite registry."""
from __future__ import annotations

import json

import pytest
from fraud import registry

from fraud_rollout.cli import main
from tests.integration.kube_fixtures import kubeconfig_for

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(canary_cluster):
    """v2 at 20 % in a namespace of its own, and an admin kubeconfig for it."""
    return canary_cluster, str(canary_cluster.kubeconfig)


@pytest.fixture
def tracking_uri(tmp_path):
    """A registry where version 1 is champion and version 2 the challenger (the canary)."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow_client = MlflowClient(uri)
    mlflow_client.create_registered_model(registry.REGISTERED_MODEL)
    for _ in range(2):
        (tmp_path / "model").mkdir(exist_ok=True)
        mlflow_client.create_model_version(registry.REGISTERED_MODEL, source=(tmp_path / "model").as_uri())
    registry.set_alias(uri, registry.CHAMPION, 1)
    registry.set_alias(uri, registry.CHALLENGER, 2)
    return uri


def canary(action, kubeconfig, *extra):
    import yaml

    namespace = yaml.safe_load(open(kubeconfig))["contexts"][0]["context"]["namespace"]
    return main(["canary", action, "--target", "kserve", "--namespace", namespace, "--kubeconfig", kubeconfig, *extra])


def test_status_prints_the_split(cluster, capsys):
    _, kubeconfig = cluster
    assert canary("status", kubeconfig, "--json") == 0
    printed = json.loads(capsys.readouterr().out)
    assert [(t["revisionName"], t["percent"]) for t in printed["status"]["traffic"]] == [
        ("fraud-detector-predictor-00002", 20), ("fraud-detector-predictor-00001", 80)]


def test_status_text_is_the_local_targets_format(cluster, capsys):
    """One format for both targets (it was plain text locally and Markdown on a cluster)."""
    _, kubeconfig = cluster
    assert canary("status", kubeconfig) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("InferenceService fraud-detector in ") and ": generation " in lines[0]
    assert lines[1:4] == ["canaryTrafficPercent: 20", "traffic:",
                          "   20%  fraud-detector-predictor-00002 (v2)  tag=latest  latestRevision=true"]
    assert lines[4].startswith("   80%  fraud-detector-predictor-00001  tag=prev  latestRevision=false")
    assert "latestRolledoutRevision:   fraud-detector-predictor-00001" in lines


def test_promote_moves_champion_to_the_canary(cluster, tracking_uri, capsys):
    deployed, kubeconfig = cluster
    assert canary("promote", kubeconfig, "--tracking-uri", tracking_uri) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "promoted v2 to 100 %" and "MLflow: champion = version 2, challenger cleared" in out
    assert registry.aliases(tracking_uri) == {"champion": 2}
    assert [w["verb"] for w in deployed.namespace.writes()] == ["create", "patch", "patch"]


def test_rollback_clears_the_challenger(cluster, tracking_uri, capsys):
    _, kubeconfig = cluster
    assert canary("rollback", kubeconfig, "--tracking-uri", tracking_uri) == 0
    assert "  100%  fraud-detector-predictor-00001  tag=prev  latestRevision=false" in capsys.readouterr().out.splitlines()
    assert registry.aliases(tracking_uri) == {"champion": 1}


def test_a_refusal_exits_1_with_the_reason(cluster, tmp_path, capsys):
    deployed, _ = cluster
    deployed.namespace.apply_pipeline_rbac(drop_verb="patch")
    kubeconfig = kubeconfig_for(deployed.namespace, tmp_path / "pipeline-kubeconfig", deployed.namespace.token())
    assert canary("rollback", str(kubeconfig)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"missing RBAC permission: verb 'patch' on resource 'inferenceservices' (apiGroup " \
        f"'serving.kserve.io') in namespace '{deployed.ns}'" in err[0]


def test_namespace_is_required(cluster, capsys):
    _, kubeconfig = cluster
    assert main(["canary", "status", "--target", "kserve", "--kubeconfig", kubeconfig]) == 2
    assert "--namespace is required" in capsys.readouterr().err
