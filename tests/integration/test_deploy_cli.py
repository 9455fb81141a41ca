"""`fraud-rollout deploy --target local`: the deploy step's own code from the command line, on
two real exported models, then `fraud-rollout canary status` reading what it left."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def fraud_rollout(*args, cwd):
    return subprocess.run([sys.executable, "-m", "fraud_rollout", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_deploy_two_models_locally_then_status_shows_the_20_percent_canary(tiny_run, tmp_path):
    state = tmp_path / "serving"
    deploy = ["deploy", "--target", "local", "--state-dir", str(state), "--baseline", str(tiny_run.v1),
              "--candidate", str(tiny_run.v2)]
    first = fraud_rollout(*deploy, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0] == f"fraud-detector in {state}: created with v1; canary v2 at 20 %"
    assert lines[1].startswith("traffic: 20 % ") and " (latest), 80 % " in lines[1]
    assert lines[1].endswith(" (prev); generation 2, observedGeneration 2, Ready")

    status = fraud_rollout("canary", "status", "--target", "local", "--state-dir", str(state), "--json", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)["status"]
    assert (shown["canaryTrafficPercent"], shown["modelVersion"]) == (20, "v2")
    assert sorted(entry["percent"] for entry in shown["traffic"]) == [20, 80]
    text = fraud_rollout("canary", "status", "--target", "local", "--state-dir", str(state), cwd=tmp_path)
    assert "canaryTrafficPercent: 20" in text.stdout and " 20%  " in text.stdout and " 80%  " in text.stdout

    again = fraud_rollout(*deploy, cwd=tmp_path)  # the same candidate again changes nothing
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[0] == f"fraud-detector in {state}: unchanged: v2 is already deployed (at 20 %)"
    scripted = fraud_rollout(*deploy, "--json", cwd=tmp_path)  # for scripts: the same, as JSON
    assert scripted.returncode == 0, scripted.stderr
    shown = json.loads(scripted.stdout)
    assert shown["action"] == "unchanged: v2 is already deployed (at 20 %)" and shown["status"]["generation"] == 2

    other = fraud_rollout(*deploy[:-1], str(tiny_run.v1), "--canary-percent", "50", cwd=tmp_path)
    assert other.returncode == 1 and other.stdout == ""
    assert other.stderr.startswith("fraud-rollout deploy: a canary of v2 ") and len(other.stderr.splitlines()) == 1


def test_deploy_to_kserve_uploads_and_canaries_through_the_kubeconfig_given(tiny_run, namespace, tmp_path):
    """The kserve code path from the command line on the real control plane: real exported models to
    MinIO, the InferenceService through `--kubeconfig`/`--context` (not the current context) with the
    pipeline ServiceAccount's token, the split computed by KServe's controller."""
    import os

    import yaml
    from fraud.artifact_store import artifact_prefix
    from fraud_control.inferenceservice import isvc

    from tests.integration.kube_fixtures import kubeconfig_for

    namespace.apply_pipeline_rbac()
    kubeconfig = kubeconfig_for(namespace, tmp_path / "kubeconfig", namespace.token())
    config = yaml.safe_load(kubeconfig.read_text())
    config["contexts"][0]["name"] = "pipeline"
    config["contexts"].append({"name": "other", "context": {"cluster": "nowhere", "user": "admin"}})
    config["clusters"].append({"name": "nowhere", "cluster": {"server": "https://127.0.0.1:1"}})
    config["current-context"] = "other"
    kubeconfig.write_text(yaml.safe_dump(config))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "KUBECONFIG"))},
           **{k: v for k, v in namespace.kube.environment().items() if k != "KUBECONFIG"}}
    result = subprocess.run([sys.executable, "-m", "fraud_rollout", "deploy", "--target", "kserve",
                             "--namespace", namespace.name, "--kubeconfig", str(kubeconfig), "--context", "pipeline",
                             "--baseline", str(tiny_run.v1), "--candidate", str(tiny_run.v2),
                             "--serving-image", "registry.example/fraud-rollout/serving:test", "--timeout", "60"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{namespace.name}/fraud-detector: created with v1; canary v2 at 20 %"
    # observedGeneration as KServe reports it: the transformer's Knative Service's (kserve #6081)
    assert lines[1] == ("traffic: 20 % fraud-detector-predictor-00002 (latest), 80 % fraud-detector-predictor-00001 "
                        "(prev); generation 2, observedGeneration 1, Ready")
    stored = json.loads(namespace.kubectl("get", "isvc", "fraud-detector", "-o", "json").stdout)
    predictor = stored["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 20
    assert predictor["containers"][0]["image"] == "registry.example/fraud-rollout/serving:test"
    assert isvc.predictor_storage_uri(stored) == f"s3://fraud-models/{artifact_prefix(tiny_run.v2)}"
    assert stored["metadata"]["annotations"][isvc.CONTRACT_ANNOTATION] == tiny_run.contract.id
