"""Every canary operation against both InferenceService stores — the Kubernetes API (the real
control plane with KServe's controller, through the real client) and the local state dir — with the
same results and messages."""
from __future__ import annotations

from dataclasses import replace

import pytest
from fraud import registry
from fraud.settings import Settings
from fraud_control.canary import operations as canary
from fraud_control.canary.deploy import spec_for_artifact
from fraud_control.inferenceservice import isvc
from fraud_control.inferenceservice.kube_store import KubeStore
from fraud_control.inferenceservice.local_store import LocalStore
from fraud_control.inferenceservice.store import NotDeployed, RolloutRefused
from fraud_control.inferenceservice.subject import mismatch, read_subject

pytestmark = pytest.mark.integration

FAST = {"timeout_s": 60.0, "poll_s": 0.05}


@pytest.fixture(params=["kube", "local"])
def store(request, tmp_path):
    if request.param == "kube":
        ns = request.getfixturevalue("namespace")
        return KubeStore(request.getfixturevalue("admin_api"), ns.name)
    return LocalStore(tmp_path / "serving")


@pytest.fixture
def specs(store, tiny_run, request):
    """v1 and v2 from real exported models: uploaded to the cluster's MinIO for the kube store."""
    if isinstance(store, KubeStore):
        from fraud.artifact_store import upload_artifact

        settings = request.getfixturevalue("s3_settings")
        return tuple(spec_for_artifact(root, upload_artifact(root, "fraud-models", settings=settings),
                                       namespace=store.namespace) for root in (tiny_run.v1, tiny_run.v2))
    return tuple(spec_for_artifact(root, str(root.resolve())) for root in (tiny_run.v1, tiny_run.v2))


def said(error: pytest.ExceptionInfo, store) -> str:
    return str(error.value).replace(store.where, "<isvc>")


def test_create_then_canary_rerun_and_promote(store, specs):
    v1, v2 = specs
    assert canary.deploy_canary(store, v2, v1, **FAST).action == "created with v1; canary v2 at 20 %"
    assert canary.deploy_canary(store, v2, v1, **FAST).action == "unchanged: v2 is already deployed (at 20 %)"
    promoted = canary.promote(store, **FAST)
    assert promoted.action == "promoted v2 to 100 %"
    assert [(t["percent"], t["revisionName"][-5:]) for t in promoted.status["traffic"]] == [(100, "00002")]
    assert canary.promote(store, **FAST).action == "unchanged: v2 already takes 100 %"
    rolled = canary.rollback(store, **FAST)
    assert rolled.action == "rolled back: canary v2 at 0 %"
    assert rolled.status["latestRolledoutRevision"].endswith("00001")


def test_promote_without_a_canary_is_unchanged_and_rollback_has_nothing_to_roll_back_to(store, specs):
    v1, _ = specs
    assert canary.deploy_canary(store, v1, v1, **FAST).action == "created with v1; unchanged: v1 is already deployed (fully rolled out)"
    assert canary.promote(store, **FAST).action == "unchanged: v1 already takes 100 %"
    with pytest.raises(RolloutRefused) as refused:
        canary.rollback(store, **FAST)
    assert said(refused, store) == ("<isvc> has a single rolled-out revision (fraud-detector-predictor-00001): "
                                    "there is nothing to roll back to")


def test_second_canary_refused_then_superseded(store, specs):
    v1, v2 = specs
    canary.deploy_canary(store, v2, v1, **FAST)
    v3 = replace(v2, model_version="v3")
    with pytest.raises(RolloutRefused) as refused:
        canary.deploy_canary(store, v3, v1, **FAST)
    assert said(refused, store) == (
        f"a canary of v2 ({v2.storage_uri}) is already running at 20 % on <isvc>; promote it or roll it back "
        "first, or supersede it with v3 (supersede=True, CLI --supersede)")
    assert canary.deploy_canary(store, v3, v1, supersede=True, **FAST).action == "superseded canary v2; canary v3 at 20 %"


def test_contract_mismatch_refused(store, specs):
    v1, v2 = specs
    canary.deploy_canary(store, v1, v1, **FAST)
    with pytest.raises(RolloutRefused) as refused:
        canary.deploy_canary(store, replace(v2, contract_id="other"), v1, **FAST)
    assert said(refused, store).startswith("candidate v2 was trained with feature contract 'other', but the "
                                           f"deployed transformer of <isvc> uses {v1.contract_id}.")


def test_standard_mode_refused(store, specs):
    v1, v2 = specs
    manifest = isvc.inference_service(v1)
    manifest["metadata"]["annotations"][isvc.DEPLOYMENT_MODE_ANNOTATION] = "Standard"  # the mode is set at creation
    store.create(manifest)
    with pytest.raises(RolloutRefused) as refused:
        canary.deploy_canary(store, v2, v1, **FAST)
    assert said(refused, store).startswith("InferenceService <isvc> runs in Standard mode: KServe ignores "
                                           "canaryTrafficPercent there")


def test_nothing_deployed(store):
    with pytest.raises(NotDeployed) as missing:
        canary.status(store)
    assert said(missing, store).startswith("InferenceService <isvc> does not exist")


@pytest.fixture
def tracking_uri(tmp_path):
    """Versions 1 and 2 registered with log_training's model_version tags; champion 1, challenger 2."""
    from tests.mlflow_registry import registry_with_v1_and_v2

    uri = registry_with_v1_and_v2(tmp_path)
    registry.set_alias(uri, registry.CHAMPION, 1)
    registry.set_alias(uri, registry.CHALLENGER, 2)
    return uri


def test_aliases_follow_promote_then_rollback(store, specs, tracking_uri):
    v1, v2 = specs
    canary.deploy_canary(store, v2, v1, **FAST)
    assert canary.promote(store, tracking_uri=tracking_uri, **FAST).registry == "MLflow: champion = version 2, challenger cleared"
    assert registry.aliases(tracking_uri) == {"champion": 2}
    assert canary.rollback(store, tracking_uri=tracking_uri, **FAST).registry == (
        "MLflow: challenger cleared, champion = version 1 (the rolled-out v1)")
    assert registry.aliases(tracking_uri) == {"champion": 1}


def test_aliases_after_rolling_back_a_canary(store, specs, tracking_uri):
    v1, v2 = specs
    canary.deploy_canary(store, v2, v1, **FAST)
    assert canary.rollback(store, tracking_uri=tracking_uri, **FAST).registry == "MLflow: challenger cleared, champion stays 1"
    assert registry.aliases(tracking_uri) == {"champion": 1}


def test_evidence_is_bound_to_its_subject(store, specs):
    v1, v2 = specs
    canary.deploy_canary(store, v2, v1, **FAST)
    seen = read_subject(store)
    assert seen is not None and seen.canary_model == {"modelVersion": "v2", "storageUri": v2.storage_uri}
    assert seen.rolled_out_model == {"modelVersion": "v1", "storageUri": v1.storage_uri}
    assert mismatch(seen.to_dict(), read_subject(store)) is None
    canary.deploy_canary(store, replace(v2, model_version="v3"), v1, supersede=True, **FAST)
    stale = mismatch(seen.to_dict(), read_subject(store))
    assert stale is not None and stale.endswith("replay again against the current canary")
    assert "differs in generation, latest_ready_revision, latest_created_revision, canary_model" in stale
    assert mismatch(None, read_subject(store)).endswith("replay again against the current canary")


def test_cli_apply_refuses_stale_local_evidence_and_applies_a_matching_replay(tiny_run, tmp_path, capsys):
    """`canary analyze --replay-report R --apply` on the local target: R was recorded against one
    canary, then another run's v2 (same version name, another storage URI) superseded it."""
    import argparse
    import shutil

    from fraud_rollout.cli import main
    from fraud_rollout.targets import current_subject
    from tests.integration.test_analyze_kserve import write_reports

    v1, v2 = (spec_for_artifact(root, str(root.resolve())) for root in (tiny_run.v1, tiny_run.v2))
    state = tmp_path / "serving"
    store = LocalStore(state)
    canary.deploy_canary(store, v2, v1, **FAST)
    target = argparse.Namespace(target="local", state_dir=state, name="fraud-detector", settings=Settings())
    seen = current_subject(target)
    other = shutil.copytree(tiny_run.v2, tmp_path / "other-run" / "v2")
    canary.deploy_canary(store, replace(v2, storage_uri=str(other.resolve())), v1, supersede=True, **FAST)

    def apply(subject: dict | None) -> int:
        replay, report = write_reports(tmp_path / "evidence", "", subject=subject)
        capsys.readouterr()
        return main(["canary", "analyze", "--state-dir", str(state), "--replay-report", replay, "--report", report,
                     "--detectable-recall-difference", "auto", "--apply"])

    (tmp_path / "evidence").mkdir()
    assert apply(seen) == 1
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1, captured.err
    assert err[0].startswith(f"fraud-rollout canary analyze --apply: refused: the evidence was gathered against "
                             f"fraud-detector in {state}: generation 2, ")
    assert f"v2 {v2.storage_uri}) at 20 %, but fraud-detector in {state} now has generation 3, " in err[0]
    assert f"v2 {other.resolve()}) at 20 %" in err[0]
    assert err[0].endswith("replay again against the current canary")
    assert "RECOMMENDATION: PROMOTE" in captured.out and "applied: promote refused: " in captured.out
    assert canary.canary_percent_of(store.get()) == 20  # nothing was applied

    assert apply(current_subject(target)) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert f"applied: promote applied to {state}" in captured.out
    assert canary.canary_percent_of(store.get()) is None
    assert isvc.predictor_storage_uri(store.get()) == str(other.resolve())
