"""The deploy step's cluster side and the canary operations, through the real `kubernetes`
client against the FAKE API server (tests/fake_kube), which plays KServe's controller."""
from __future__ import annotations

import time

import pytest
from fraud_control import canary, isvc, kserve_canary
from fraud_control.deploy import deploy_from_artifacts, spec_for_artifact
from fraud_control.isvc import IsvcSpec
from fraud_control.kube_store import KubeStore, MissingPermission
from fraud_control.store import RolloutError, RolloutRefused, RolloutTimeout
from kubernetes.client.exceptions import ApiException

from tests.fake_kube import FakeKServeController, FakeKubeApiServer

pytestmark = pytest.mark.integration

NS = "kubeflow-user-example-com"
CONTRACT = "3f6c2a1b9d0e4f57"
V1 = IsvcSpec(storage_uri="s3://fraud-models/fraud-detector/v1-0a1b2c3d4e5f", model_version="v1",
              contract_id=CONTRACT, namespace=NS)
V2 = IsvcSpec(storage_uri="s3://fraud-models/fraud-detector/v2-5f4e3d2c1b0a", model_version="v2",
              contract_id=CONTRACT, namespace=NS)
V3 = IsvcSpec(storage_uri="s3://fraud-models/fraud-detector/v3-99aa88bb77cc", model_version="v3",
              contract_id=CONTRACT, namespace=NS)
REV = [f"fraud-detector-predictor-{n:05d}" for n in range(4)]  # REV[1] is the first revision
FAST = {"timeout_s": 10.0, "poll_s": 0.02}


@pytest.fixture
def fake():
    with FakeKubeApiServer(FakeKServeController(observe_delay=0.05, ready_delay=0.15)) as server:
        yield server


@pytest.fixture
def api(fake):
    with fake.custom_objects_api() as api:
        yield api


def deploy(api, candidate=V2, champion=V1, **kwargs):
    return canary.deploy_canary(KubeStore(api, NS), candidate, champion, **{**FAST, **kwargs})


def test_first_deploy_creates_champion_waits_then_opens_a_20_percent_canary(api, fake):
    started = time.monotonic()
    result = deploy(api)
    elapsed = time.monotonic() - started

    assert result.action == "created with v1; canary v2 at 20 %"
    assert [(verb, ctype) for verb, _, _, ctype in fake.writes()] == [
        ("create", "application/json"), ("patch", "application/merge-patch+json")]
    # Two real waits (create, then canary), each observe + ready delay, done by polling.
    assert elapsed >= 2 * (0.05 + 0.15)
    assert sum(1 for r in fake.requests if r[0] == "get") > 4
    s = result.status
    assert s["ready"] and s["generation"] == s["observedGeneration"] == 2
    assert s["canaryTrafficPercent"] == 20 and s["modelVersion"] == "v2" and s["storageUri"] == V2.storage_uri
    assert s["traffic"] == [
        {"latestRevision": True, "percent": 20, "revisionName": REV[2], "tag": "latest"},
        {"latestRevision": False, "percent": 80, "revisionName": REV[1], "tag": "prev"}]
    assert s["latestRolledoutRevision"] == REV[1] and s["latestReadyRevision"] == REV[2]
    assert "| `fraud-detector-predictor-00002` | latest | 20 % | v2 (spec) |" in result.markdown
    assert "| `fraud-detector-predictor-00001` | prev | 80 % | rolled-out revision |" in result.markdown

    # What the cluster holds is the builder's manifest, moved to v2 by the canary patch.
    stored = api.get_namespaced_custom_object(isvc.GROUP, isvc.VERSION, NS, isvc.PLURAL, isvc.NAME)
    expected = isvc.inference_service(V1)
    assert stored["spec"]["transformer"] == expected["spec"]["transformer"]
    assert stored["spec"]["predictor"] == isvc.predictor_spec(IsvcSpec(**{**V2.__dict__, "canary_percent": 20}))
    assert stored["metadata"]["annotations"] == {**expected["metadata"]["annotations"], isvc.ROLLED_OUT_ANNOTATION: (
        f'{{"modelVersion": "v1", "revision": "{REV[1]}", "storageUri": "{V1.storage_uri}"}}')}
    assert canary.status(KubeStore(api, NS)) == s


def test_canary_on_an_existing_rolled_out_service_patches_only(api, fake):
    fake_create = isvc.inference_service(V1)
    api.create_namespaced_custom_object(isvc.GROUP, isvc.VERSION, NS, isvc.PLURAL, fake_create)
    result = deploy(api)
    assert result.action == "canary v2 at 20 %"
    assert [r[0] for r in fake.writes()] == ["create", "patch"]
    assert [t["percent"] for t in result.status["traffic"]] == [20, 80]


def test_rerunning_the_same_candidate_changes_nothing(api, fake):
    first = deploy(api)
    writes = len(fake.writes())
    again = deploy(api)
    assert len(fake.writes()) == writes
    assert again.action == "unchanged: v2 is already deployed (at 20 %)"
    assert again.status == first.status


def test_another_candidate_is_refused_while_a_canary_runs_unless_superseded(api, fake):
    deploy(api)
    writes = len(fake.writes())
    with pytest.raises(RolloutRefused, match=r"a canary of v2 .* is already running at 20 %.*supersede"):
        deploy(api, candidate=V3)
    assert len(fake.writes()) == writes

    result = deploy(api, candidate=V3, supersede=True)
    assert result.action == "superseded canary v2; canary v3 at 20 %"
    # v1 stays the rolled-out revision: v2 never had 100 %.
    assert result.status["traffic"] == [
        {"latestRevision": True, "percent": 20, "revisionName": REV[3], "tag": "latest"},
        {"latestRevision": False, "percent": 80, "revisionName": REV[1], "tag": "prev"}]
    assert result.status["modelVersion"] == "v3"


def test_promote_removes_the_field_with_a_json_patch_and_v2_becomes_rolled_out(api, fake):
    deploy(api)
    result = canary.promote(KubeStore(api, NS), **FAST)
    assert fake.writes()[-1][0] == "patch" and fake.writes()[-1][3] == "application/json-patch+json"
    s = result.status
    assert result.action == "promoted v2 to 100 %"
    assert s["canaryTrafficPercent"] is None
    assert s["traffic"] == [{"latestRevision": True, "percent": 100, "revisionName": REV[2], "tag": "latest"}]
    assert (s["latestRolledoutRevision"], s["previousRolledoutRevision"]) == (REV[2], REV[1])
    assert s["ready"] and s["observedGeneration"] == 3

    writes = len(fake.writes())
    assert canary.promote(KubeStore(api, NS), **FAST).action == "unchanged: v2 already takes 100 %"
    assert len(fake.writes()) == writes


def test_rollback_pins_the_canary_to_zero_and_v1_takes_all_traffic(api, fake):
    deploy(api)
    result = canary.rollback(KubeStore(api, NS), **FAST)
    s = result.status
    assert result.action == "rolled back: canary v2 at 0 %"
    assert fake.writes()[-1][3] == "application/merge-patch+json"
    assert s["canaryTrafficPercent"] == 0
    assert s["traffic"] == [
        {"latestRevision": True, "percent": 0, "revisionName": REV[2], "tag": "latest"},
        {"latestRevision": False, "percent": 100, "revisionName": REV[1], "tag": "prev"}]
    assert s["latestRolledoutRevision"] == REV[1]
    # The v2 spec stays in place (KServe's pin); re-running the pipeline's deploy does not reopen it.
    assert s["modelVersion"] == "v2"
    assert deploy(api).action == "unchanged: v2 is already deployed (at 0 %)"


def test_rollback_after_promote_returns_to_the_previous_rolled_out_revision(api):
    deploy(api)
    canary.promote(KubeStore(api, NS), **FAST)
    s = canary.rollback(KubeStore(api, NS), **FAST).status
    assert s["latestRolledoutRevision"] == REV[1]
    assert s["traffic"] == [
        {"latestRevision": True, "percent": 0, "revisionName": REV[2], "tag": "latest"},
        {"latestRevision": False, "percent": 100, "revisionName": REV[1], "tag": "prev"}]


def test_a_canary_that_never_becomes_ready_times_out_with_the_conditions(api, fake):
    canary.deploy_canary(KubeStore(api, NS), V1, V1, **FAST)
    fake.controller.never_ready = True
    with pytest.raises(RolloutTimeout) as raised:
        deploy(api, timeout_s=0.8)
    message = str(raised.value)
    assert "not Ready at generation 2 after 0.8 s (observedGeneration 2)" in message
    assert f'PredictorReady=False (RevisionFailed: Revision "{REV[2]}" failed' in message
    assert "Ready=False" in message and "TransformerReady=True" in message
    assert any(c["type"] == "PredictorReady" and c["status"] == "False" for c in raised.value.conditions)
    # latestRevision means latest *ready*: the failed canary gets nothing, v1 keeps all traffic.
    s = canary.status(KubeStore(api, NS))
    assert s["latestCreatedRevision"] == REV[2] and s["latestReadyRevision"] == REV[1]
    assert {t["revisionName"] for t in s["traffic"]} == {REV[1]}


@pytest.mark.parametrize("annotation, cluster_default, shown", [
    ("RawDeployment", "Knative", "RawDeployment"),
    ("Standard", "Knative", "Standard"),
    (None, "Standard", "Standard"),
])
def test_standard_mode_is_refused_because_kserve_ignores_the_split(api, fake, annotation, cluster_default, shown):
    fake.controller.default_deployment_mode = cluster_default
    manifest = isvc.inference_service(V1)
    if annotation is None:
        del manifest["metadata"]["annotations"][isvc.DEPLOYMENT_MODE_ANNOTATION]
    else:
        manifest["metadata"]["annotations"][isvc.DEPLOYMENT_MODE_ANNOTATION] = annotation
    api.create_namespaced_custom_object(isvc.GROUP, isvc.VERSION, NS, isvc.PLURAL, manifest)
    canary.wait_ready(KubeStore(api, NS), 1, **FAST)
    assert canary.status(KubeStore(api, NS))["deploymentMode"] == shown

    with pytest.raises(RolloutRefused, match=f"runs in {shown} mode: KServe ignores canaryTrafficPercent"):
        deploy(api)
    with pytest.raises(RolloutRefused, match="ignores canaryTrafficPercent"):
        canary.promote(KubeStore(api, NS), **FAST)
    assert [r[0] for r in fake.writes()] == ["create"]


def test_a_candidate_with_another_feature_contract_is_refused(api, fake):
    deploy(api)
    other = IsvcSpec(**{**V3.__dict__, "contract_id": "0000ffff0000ffff"})
    writes = len(fake.writes())
    with pytest.raises(RolloutRefused, match=rf"contract '0000ffff0000ffff', but the deployed transformer .* uses {CONTRACT}"):
        deploy(api, candidate=other, supersede=True)
    assert len(fake.writes()) == writes
    # Creating: champion and candidate must share the contract, or nothing is created.
    fresh = {"namespace": "fraud-staging"}
    with pytest.raises(RolloutRefused, match="different feature contracts"):
        canary.deploy_canary(KubeStore(api, "fraud-staging"), IsvcSpec(**{**other.__dict__, **fresh}), IsvcSpec(**{**V1.__dict__, **fresh}), **FAST)
    assert len(fake.writes()) == writes


@pytest.mark.parametrize("verb", ["create", "patch", "get"])
def test_missing_rbac_is_reported_with_verb_resource_and_namespace(api, fake, verb):
    if verb == "patch":
        canary.deploy_canary(KubeStore(api, NS), V1, V1, **FAST)
    fake.forbidden_verbs = {verb}
    with pytest.raises(MissingPermission) as raised:
        deploy(api)
    message = str(raised.value)
    assert raised.value.verb == verb and raised.value.namespace == NS
    assert (f"missing RBAC permission: verb '{verb}' on resource 'inferenceservices' (apiGroup "
            f"'serving.kserve.io') in namespace '{NS}'") in message
    assert f'cannot {verb} resource "inferenceservices"' in message  # the API server's own words


def test_promote_json_patch_through_patch_namespaced_custom_object_fails_as_on_a_cluster(api):
    """Why kserve_canary.json_patch exists: kubernetes 30.1 sends a list body as a merge patch,
    which the API server rejects (kubernetes-client/python #2039)."""
    deploy(api)
    with pytest.raises(ApiException) as raised:
        api.patch_namespaced_custom_object(isvc.GROUP, isvc.VERSION, NS, isvc.PLURAL, isvc.NAME,
                                           isvc.promote_patch())
    assert raised.value.status == 422
    assert "cannot unmarshal array" in raised.value.body


def test_status_and_operations_on_a_missing_service_say_so(api):
    with pytest.raises(RolloutError, match=f"{NS}/fraud-detector does not exist"):
        canary.status(KubeStore(api, NS))
    with pytest.raises(RolloutError, match="does not exist"):
        canary.promote(KubeStore(api, NS), **FAST)


def test_rollback_with_a_single_revision_is_refused(api):
    canary.deploy_canary(KubeStore(api, NS), V1, V1, **FAST)
    with pytest.raises(RolloutRefused, match="nothing to roll back to"):
        canary.rollback(KubeStore(api, NS), **FAST)


def test_spec_for_artifact_reads_version_and_contract(tiny_run):
    spec = spec_for_artifact(tiny_run.v2, "s3://b/p", namespace=NS)
    assert (spec.model_version, spec.contract_id, spec.namespace) == ("v2", tiny_run.contract.id, NS)


def test_deploy_from_artifacts_uploads_both_models_and_rolls_out_the_canary(api, fake, tiny_run):
    """The deploy step's cluster side end to end: real exported models to a real S3 API (moto on
    loopback), then the canary on the fake API server; a rerun uploads to the same URIs and
    changes nothing."""
    import secrets

    from fraud_control.artifact_store import S3Settings, artifact_prefix

    from tests.s3_server import moto_s3_server

    with moto_s3_server() as endpoint:
        settings = S3Settings.from_env({"S3_ENDPOINT": f"http://{endpoint}", "AWS_ACCESS_KEY_ID": secrets.token_hex(8),
                                        "AWS_SECRET_ACCESS_KEY": secrets.token_hex(16)})
        run = lambda: deploy_from_artifacts(  # noqa: E731
            tiny_run.v1, tiny_run.v2, namespace=NS, bucket="fraud-models", api=api, s3_settings=settings, **FAST)
        result = run()
        assert result.action == "created with v1; canary v2 at 20 %"
        assert result.status["storageUri"] == f"s3://fraud-models/{artifact_prefix(tiny_run.v2)}"
        assert result.status["featureContractId"] == tiny_run.contract.id
        writes = len(fake.writes())
        assert run().action == "unchanged: v2 is already deployed (at 20 %)"
        assert len(fake.writes()) == writes
    stored = api.get_namespaced_custom_object(isvc.GROUP, isvc.VERSION, NS, isvc.PLURAL, isvc.NAME)
    transformer_env = stored["spec"]["transformer"]["containers"][0]["env"]
    assert transformer_env == [{"name": "STORAGE_URI", "value": f"s3://fraud-models/{artifact_prefix(tiny_run.v1)}"}]


def test_a_failed_canary_cannot_be_promoted_but_rolls_back_to_v1(api, fake):
    canary.deploy_canary(KubeStore(api, NS), V1, V1, **FAST)
    fake.controller.never_ready = True
    with pytest.raises(RolloutTimeout):
        deploy(api, timeout_s=0.5)
    writes = len(fake.writes())
    with pytest.raises(RolloutRefused, match=r"canary v2 .* is not Ready .* roll it back instead"):
        canary.promote(KubeStore(api, NS), **FAST)
    assert len(fake.writes()) == writes

    result = canary.rollback(KubeStore(api, NS), **FAST)  # done although Ready stays False
    assert result.action.startswith("rolled back: canary v2 at 0 % (still not Ready: ")
    assert result.status["traffic"] == [
        {"latestRevision": True, "percent": 0, "revisionName": REV[1], "tag": "latest"},
        {"latestRevision": False, "percent": 100, "revisionName": REV[1], "tag": "prev"}]


@pytest.mark.skipif(__import__("shutil").which("kubectl") is None, reason="kubectl is not installed")
def test_the_deploy_step_creates_exactly_what_kustomize_renders(api, fake):
    """Same inputs (the kubeflow overlay's namespace, BASE_MANIFEST_SPEC): the object the deploy
    step POSTs equals the InferenceService `kubectl kustomize manifests/overlays/kubeflow` renders."""
    import subprocess
    from dataclasses import replace
    from pathlib import Path

    import yaml

    overlay = Path(__file__).resolve().parents[2] / "manifests" / "overlays" / "kubeflow"
    rendered = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True,
                              timeout=60, check=True).stdout
    expected = next(d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "InferenceService")
    champion = replace(kserve_canary.BASE_MANIFEST_SPEC, namespace=expected["metadata"]["namespace"])
    canary.deploy_canary(KubeStore(api, NS), champion, champion, **FAST)  # first deploy: create only
    stored = api.get_namespaced_custom_object(isvc.GROUP, isvc.VERSION, champion.namespace, isvc.PLURAL, isvc.NAME)
    server_fields = ("uid", "generation", "creationTimestamp", "resourceVersion")
    stored["metadata"] = {k: v for k, v in stored["metadata"].items() if k not in server_fields}
    del stored["status"]
    assert stored == expected
