"""The local InferenceService store follows KServe's Knative canary semantics (DESIGN)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from fraud.contract import FeatureContract
from fraud.schema import FEATURES
from fraud_control.inferenceservice import isvc
from fraud_control.inferenceservice.local_state import (
    LocalInferenceService,
    NotFound,
    StateError,
    json_patch,
    merge_patch,
    revision_status,
)


def artifact_root(tmp_path: Path, version: int) -> Path:
    """The exported layout (readiness only looks for it; no model is loaded here)."""
    root = tmp_path / f"v{version}"
    version_dir = root / "fraud-detector" / str(version)
    (version_dir / "model.savedmodel").mkdir(parents=True)
    (version_dir / "metadata.json").write_text(json.dumps({"model_version": f"v{version}"}))
    FeatureContract(FEATURES, {}, (0.0,) * len(FEATURES), (1.0,) * len(FEATURES)).save(
        root / "feature_contract.json")
    return root


def spec(root: Path, version: int, percent: int | None = None) -> isvc.IsvcSpec:
    return isvc.IsvcSpec(storage_uri=str(root), model_version=f"v{version}", contract_id="c0",
                         canary_percent=percent)


def predictor_status(manifest: dict) -> dict:
    return manifest["status"]["components"]["predictor"]


def split(manifest: dict) -> dict[str, int]:
    return {entry["revisionName"]: entry["percent"] for entry in predictor_status(manifest)["traffic"]}


REV1, REV2, REV3 = (f"fraud-detector-predictor-0000{n}" for n in (1, 2, 3))


@pytest.fixture
def service(tmp_path) -> LocalInferenceService:
    return LocalInferenceService(tmp_path / "state")


def test_first_revision_gets_all_traffic_even_with_a_canary_percent(service, tmp_path):
    created = service.create(isvc.inference_service(spec(artifact_root(tmp_path, 1), 1, percent=20)))
    assert split(created) == {REV1: 100}
    assert predictor_status(created)["latestRolledoutRevision"] == REV1
    assert "previousRolledoutRevision" not in predictor_status(created)
    assert created["metadata"]["generation"] == created["status"]["observedGeneration"] == 1
    assert {c["type"]: c["status"] for c in created["status"]["conditions"]} == {
        "Ready": "True", "PredictorReady": "True", "TransformerReady": "True"}


def test_canary_promote_rollback_cycle(service, tmp_path):
    v1, v2 = artifact_root(tmp_path, 1), artifact_root(tmp_path, 2)
    service.create(isvc.inference_service(spec(v1, 1)))
    canary = service.patch_merge(isvc.canary_patch(spec(v2, 2), 20))
    status = predictor_status(canary)
    assert status["traffic"] == [
        {"latestRevision": True, "revisionName": REV2, "tag": "latest", "percent": 20},
        {"latestRevision": False, "revisionName": REV1, "percent": 80, "tag": "prev"}]
    assert (status["latestCreatedRevision"], status["latestReadyRevision"], status["latestRolledoutRevision"]) == (
        REV2, REV2, REV1)
    assert canary["metadata"]["generation"] == canary["status"]["observedGeneration"] == 2

    promoted = service.patch_json(isvc.promote_patch())
    assert split(promoted) == {REV2: 100}
    assert predictor_status(promoted)["latestRolledoutRevision"] == REV2
    assert predictor_status(promoted)["previousRolledoutRevision"] == REV1
    assert "canaryTrafficPercent" not in promoted["spec"]["predictor"]

    rolled_back = service.patch_merge(isvc.rollback_patch())
    assert split(rolled_back) == {REV2: 0, REV1: 100}
    assert predictor_status(rolled_back)["latestRolledoutRevision"] == REV1
    # the traffic change alone makes no new revision
    assert predictor_status(rolled_back)["latestCreatedRevision"] == REV2
    assert list(service.revisions()) == [REV1, REV2]
    assert service.revisions()[REV2]["modelVersion"] == "v2"


def test_rollback_of_a_canary_pins_it_to_zero(service, tmp_path):
    service.create(isvc.inference_service(spec(artifact_root(tmp_path, 1), 1)))
    service.patch_merge(isvc.canary_patch(spec(artifact_root(tmp_path, 2), 2), 20))
    pinned = service.patch_merge(isvc.rollback_patch())
    assert split(pinned) == {REV2: 0, REV1: 100}
    assert predictor_status(pinned)["latestRolledoutRevision"] == REV1
    # re-applying v1's storageUri undoes the spec too: a new revision serving v1
    # (an operator's kubectl patch: canary_patch itself only writes canary percents, 1..99)
    patch = isvc.canary_patch(spec(tmp_path / "v1", 1), 20)
    patch["spec"]["predictor"]["canaryTrafficPercent"] = 100
    rebuilt = service.patch_merge(patch)
    assert predictor_status(rebuilt)["latestCreatedRevision"] == REV3
    assert split(rebuilt) == {REV3: 100}
    assert service.revisions()[REV3]["modelVersion"] == "v1"


def test_unservable_canary_never_takes_traffic(service, tmp_path):
    service.create(isvc.inference_service(spec(artifact_root(tmp_path, 1), 1)))
    broken = service.patch_merge(isvc.canary_patch(spec(tmp_path / "missing", 2), 20))
    status = predictor_status(broken)
    assert status["latestCreatedRevision"] == REV2 and status["latestReadyRevision"] == REV1
    assert split(broken) == {REV1: 100}
    conditions = {c["type"]: c["status"] for c in broken["status"]["conditions"]}
    assert conditions["Ready"] == conditions["PredictorReady"] == "False"


@pytest.mark.parametrize("annotation, mode", [("RawDeployment", "RawDeployment"), ("Standard", "Standard"),
                                              (None, "Standard")])  # no annotation: KServe 0.21's default
def test_standard_mode_ignores_canary_percent(service, tmp_path, annotation, mode):
    manifest = isvc.inference_service(spec(artifact_root(tmp_path, 1), 1))
    annotations = manifest["metadata"]["annotations"]
    if annotation is None:
        del annotations[isvc.DEPLOYMENT_MODE_ANNOTATION]
    else:
        annotations[isvc.DEPLOYMENT_MODE_ANNOTATION] = annotation
    service.create(manifest)
    patched = service.patch_merge(isvc.canary_patch(spec(artifact_root(tmp_path, 2), 2), 20))
    assert split(patched) == {REV2: 100}
    assert patched["status"]["deploymentMode"] == mode


def test_status_and_server_fields_are_not_patchable(service, tmp_path):
    service.create(isvc.inference_service(spec(artifact_root(tmp_path, 1), 1)))
    patched = service.patch_merge({"status": {"observedGeneration": 99}, "metadata": {"generation": 42}})
    assert patched["metadata"]["generation"] == 1 and patched["status"]["observedGeneration"] == 1


def test_api_errors(service, tmp_path):
    with pytest.raises(NotFound):
        service.get()
    service.create(isvc.inference_service(spec(artifact_root(tmp_path, 1), 1)))
    with pytest.raises(StateError, match="already exists"):
        service.create(isvc.inference_service(spec(tmp_path / "v1", 1)))
    with pytest.raises(StateError, match="canaryTrafficPercent"):
        service.patch_merge({"spec": {"predictor": {"canaryTrafficPercent": 120}}})
    with pytest.raises(StateError, match="does not exist"):
        service.patch_json(isvc.promote_patch())  # nothing to remove: kubectl fails the same way
    assert service.get()["metadata"]["generation"] == 1


def test_revision_status_names_model_versions(service, tmp_path):
    service.create(isvc.inference_service(spec(artifact_root(tmp_path, 1), 1)))
    service.patch_merge(isvc.canary_patch(spec(artifact_root(tmp_path, 2), 2), 20))
    status = revision_status(service)
    assert status["canaryTrafficPercent"] == 20
    assert {name: r["modelVersion"] for name, r in status["revisions"].items()} == {REV1: "v1", REV2: "v2"}


def test_patch_helpers_follow_the_rfcs():
    assert merge_patch({"a": {"b": 1, "c": 2}}, {"a": {"b": None, "d": 3}}) == {"a": {"c": 2, "d": 3}}
    document = {"a": [1, 2], "b": {"c": 1}}
    assert json_patch(document, [{"op": "add", "path": "/a/-", "value": 3},
                                 {"op": "replace", "path": "/b/c", "value": 5},
                                 {"op": "remove", "path": "/a/0"}]) == {"a": [2, 3], "b": {"c": 5}}
    assert document == {"a": [1, 2], "b": {"c": 1}}
    with pytest.raises(StateError):
        json_patch(document, [{"op": "test", "path": "/b/c", "value": 2}])


def test_local_promote_and_rollback_apply_kubectls_patches(service, tmp_path, capsys):
    """`canary promote|rollback` on the local target: the shared operations, the cluster's answers."""
    import argparse

    from fraud.settings import Settings

    from fraud_rollout.canary_cli import run_operation

    args = argparse.Namespace(target="local", state_dir=service.state_dir, json=False, tracking_uri="", timeout=1.0)
    settings = Settings(MLFLOW_TRACKING_URI="", KUBECONFIG="", KUBERNETES_SERVICE_HOST="")
    where = f"fraud-detector in {service.state_dir}"
    service.create(isvc.inference_service(spec(artifact_root(tmp_path, 1), 1)))
    service.patch_merge(isvc.canary_patch(spec(tmp_path / "missing", 2), 20))
    # promoting would move 100 % to nothing new: refused, exit 1, nothing changed
    assert run_operation("promote", args, settings) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"fraud-rollout canary promote: the canary v2 of {where} is not Ready at generation 2")
    assert len(err.splitlines()) == 1
    assert service.get()["spec"]["predictor"]["canaryTrafficPercent"] == 20
    service.patch_merge(isvc.canary_patch(spec(artifact_root(tmp_path, 2), 2), 20))
    assert run_operation("promote", args, settings) == 0
    out = capsys.readouterr().out
    assert out.startswith("promoted v2 to 100 %\n")
    assert "100%  fraud-detector-predictor-00003 (v2)" in out
    assert out.rstrip().endswith("MLflow aliases not moved: no --tracking-uri and no MLFLOW_TRACKING_URI")
    assert run_operation("rollback", args, settings) == 0
    out = capsys.readouterr().out
    assert out.startswith("rolled back: canary v2 at 0 %\n")
    assert "latestRolledoutRevision:   fraud-detector-predictor-00001 (v1)" in out and "canaryTrafficPercent: 0" in out
    service.patch_json(isvc.promote_patch())
    # promote without a canary: the cluster's answer, not an error
    assert run_operation("promote", args, settings) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "unchanged: v2 already takes 100 %"
    assert "MLflow aliases not moved" not in out


def test_importable_without_kserve_or_tensorflow():
    """The deploy step's local target imports this module; it must stay light."""
    import subprocess
    import sys

    code = ("import sys, fraud_control.inferenceservice.local_state, fraud_control.local_runtime.runtime; "
            "print(sorted(m for m in ('kserve', 'tensorflow', 'fastapi') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_sinks_feedback_models_are_the_served_artifacts_rolled_out_first(service, tmp_path, caplog):
    from fraud_control.local_runtime.runtime import feedback_models, needed_revisions

    roots = [artifact_root(tmp_path, n) for n in (1, 2)]
    service.create(isvc.inference_service(spec(roots[0], 1)))
    manifest = service.patch_merge(isvc.canary_patch(spec(roots[1], 2), 20))
    assert needed_revisions(manifest) == [REV2, REV1]
    # These artifacts carry no score profile (exported before the feedback signals): the sink runs
    # without them, and the log says why, naming v1's: the rolled-out one is read first.
    with caplog.at_level("WARNING", logger="fraud_control.local_runtime.runtime"):
        assert feedback_models(manifest, service.revisions()) == ()
    version_dir = roots[0] / "fraud-detector" / "1"
    assert caplog.messages == [f"the prediction-log sink reports no feedback signals: {roots[0]}: no "
                               f"monitoring.json in {version_dir}"]
