"""The deploy step's cluster side and the canary operations against the REAL control plane
(tests/cluster_fixtures: kube-apiserver, KServe's controller and webhooks, MinIO, Knative played in
status). The deploy step authenticates as the ServiceAccount manifests/base/pipeline-rbac.yaml
binds, with a real token; writes are counted from the API server's audit log."""
from __future__ import annotations

import json
import shlex
import subprocess
import time

import pytest
from fraud_control.canary import operations as canary
from fraud_control.canary.deploy import deploy_from_artifacts, spec_for_artifact
from fraud_control.inferenceservice import isvc
from fraud_control.inferenceservice.isvc import IsvcSpec
from fraud_control.inferenceservice.kube_store import KubeStore, MissingPermission
from fraud_control.inferenceservice.store import RolloutError, RolloutRefused, RolloutTimeout
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from tests.cluster_fixtures import model_spec
from tests.docs import docs_text
from tests.integration.serving_fixtures import REPO

pytestmark = pytest.mark.integration

CONTRACT = "3f6c2a1b9d0e4f57"
REV = [f"fraud-detector-predictor-{n:05d}" for n in range(5)]  # REV[1] is the first revision
FAST = {"timeout_s": 60.0, "poll_s": 0.05}


class Target:
    """One test's namespace: the pipeline's token API, the admin API and models stored in MinIO."""

    def __init__(self, namespace, admin_api, s3_settings):
        namespace.apply_pipeline_rbac()
        self.ns, self.name, self.admin = namespace, namespace.name, admin_api
        self.api = namespace.token_api()
        self.s3 = s3_settings

    def spec(self, version: str, stored: bool = True, **fields) -> IsvcSpec:
        return model_spec(self.name, version, self.s3, **{"contract_id": CONTRACT, "stored": stored, **fields})

    @property
    def store(self) -> KubeStore:
        return KubeStore(self.api, self.name)

    def stored(self) -> dict:
        return self.admin.get_namespaced_custom_object(isvc.GROUP, isvc.VERSION, self.name, isvc.PLURAL, isvc.NAME)

    def verbs(self) -> list[str]:
        return [w["verb"] for w in self.ns.writes()]


@pytest.fixture
def target(namespace, admin_api, s3_settings):
    return Target(namespace, admin_api, s3_settings)


def deploy(target, candidate="v2", champion="v1", **kwargs):
    as_spec = lambda m: target.spec(m) if isinstance(m, str) else m  # noqa: E731
    return canary.deploy_canary(target.store, as_spec(candidate), as_spec(champion), **{**FAST, **kwargs})


def test_first_deploy_creates_champion_waits_then_opens_a_20_percent_canary(target):
    result = deploy(target)

    assert result.action == "created with v1; canary v2 at 20 %"
    assert target.verbs() == ["create", "patch"]
    assert {w["user"] for w in target.ns.writes()} == {f"system:serviceaccount:{target.name}:fraud-rollout-pipeline"}
    s = result.status
    # KServe copies observedGeneration from the transformer's Knative Service, which the canary left
    # alone (kserve #6081): 1, though the controller acted on generation 2
    assert s["ready"] and (s["generation"], s["observedGeneration"]) == (2, 1)
    assert s["canaryTrafficPercent"] == 20 and s["modelVersion"] == "v2"
    assert s["storageUri"] == f"s3://fraud-models/{target.name}/v2"
    # KServe's controller computed the split from the Knative route's status
    assert s["traffic"] == [
        {"latestRevision": True, "percent": 20, "revisionName": REV[2], "tag": "latest",
         "url": f"http://latest-fraud-detector-predictor-{target.name}.example.com"},
        {"latestRevision": False, "percent": 80, "revisionName": REV[1], "tag": "prev",
         "url": f"http://prev-fraud-detector-predictor-{target.name}.example.com"}]
    assert s["latestRolledoutRevision"] == REV[1] and s["latestReadyRevision"] == REV[2]
    assert "| `fraud-detector-predictor-00002` | latest | 20 % | v2 (spec) |" in result.markdown
    assert "| `fraud-detector-predictor-00001` | prev | 80 % | rolled-out revision |" in result.markdown

    # What the cluster holds: our predictor, moved to v2 by the canary patch, after KServe's
    # defaulting webhook; the transformer as built.
    stored = target.stored()
    posted = isvc.inference_service(target.spec("v1"))
    assert stored["spec"]["predictor"]["canaryTrafficPercent"] == 20
    container = stored["spec"]["predictor"]["containers"][0]
    assert container["env"] == [{"name": "STORAGE_URI", "value": f"s3://fraud-models/{target.name}/v2"}]
    assert container["args"] == posted["spec"]["predictor"]["containers"][0]["args"]
    assert stored["spec"]["transformer"]["containers"][0]["args"] == posted["spec"]["transformer"]["containers"][0]["args"]
    # through KServe's webhooks unchanged: the tag hosts of this namespace's predictor routes, whose
    # external form the controller reports in status.traffic above
    args = stored["spec"]["transformer"]["containers"][0]["args"]
    assert args[args.index("--shadow_hosts") + 1] == (f"latest=http://latest-fraud-detector-predictor.{target.name},"
                                                      f"prev=http://prev-fraud-detector-predictor.{target.name}")
    # the transformer kept its one revision: the record of the rolled-out model is a predictor annotation
    assert stored["status"]["components"]["transformer"]["latestCreatedRevision"] == "fraud-detector-transformer-00001"
    assert stored["spec"]["predictor"]["annotations"][isvc.ROLLED_OUT_ANNOTATION] == (
        f'{{"modelVersion": "v1", "revision": "{REV[1]}", "storageUri": "s3://fraud-models/{target.name}/v1"}}')
    assert canary.status(target.store) == s


def test_canary_on_an_existing_rolled_out_service_patches_only(target):
    target.admin.create_namespaced_custom_object(isvc.GROUP, isvc.VERSION, target.name, isvc.PLURAL,
                                                 isvc.inference_service(target.spec("v1")))
    canary.wait_ready(KubeStore(target.admin, target.name), 1, **FAST)
    result = deploy(target)
    assert result.action == "canary v2 at 20 %"
    assert target.verbs() == ["create", "patch"]
    assert [t["percent"] for t in result.status["traffic"]] == [20, 80]


def test_rerunning_the_same_candidate_changes_nothing(target):
    first = deploy(target)
    again = deploy(target)
    assert target.verbs() == ["create", "patch"]
    assert again.action == "unchanged: v2 is already deployed (at 20 %)"
    assert again.status == first.status


def test_another_candidate_is_refused_while_a_canary_runs_unless_superseded(target):
    deploy(target)
    with pytest.raises(RolloutRefused, match=r"a canary of v2 .* is already running at 20 %.*supersede"):
        deploy(target, candidate="v3")
    assert target.verbs() == ["create", "patch"]

    result = deploy(target, candidate="v3", supersede=True)
    assert result.action == "superseded canary v2; canary v3 at 20 %"
    # v1 stays the rolled-out revision: v2 never had 100 %.
    assert [(t["revisionName"], t["percent"], t["tag"]) for t in result.status["traffic"]] == [
        (REV[3], 20, "latest"), (REV[1], 80, "prev")]
    assert result.status["modelVersion"] == "v3"


def test_promote_removes_the_field_and_v2_becomes_rolled_out(target):
    deploy(target)
    result = canary.promote(target.store, **FAST)
    assert target.verbs() == ["create", "patch", "patch"]
    s = result.status
    assert result.action == "promoted v2 to 100 %"
    assert s["canaryTrafficPercent"] is None
    assert [(t["revisionName"], t["percent"], t.get("tag")) for t in s["traffic"]] == [(REV[2], 100, "latest")]
    assert (s["latestRolledoutRevision"], s["previousRolledoutRevision"]) == (REV[2], REV[1])
    assert s["ready"] and (s["generation"], s["observedGeneration"]) == (3, 1)  # kserve #6081, as above

    assert canary.promote(target.store, **FAST).action == "unchanged: v2 already takes 100 %"
    assert len(target.verbs()) == 3


def test_rollback_pins_the_canary_to_zero_and_v1_takes_all_traffic(target):
    deploy(target)
    result = canary.rollback(target.store, **FAST)
    s = result.status
    assert result.action == "rolled back: canary v2 at 0 %"
    assert s["canaryTrafficPercent"] == 0
    assert [(t["revisionName"], t["percent"], t["tag"]) for t in s["traffic"]] == [
        (REV[2], 0, "latest"), (REV[1], 100, "prev")]
    assert s["latestRolledoutRevision"] == REV[1]
    # The v2 spec stays in place (KServe's pin); re-running the pipeline's deploy does not reopen it.
    assert s["modelVersion"] == "v2"
    assert deploy(target).action == "unchanged: v2 is already deployed (at 0 %)"


def test_rollback_after_promote_returns_to_the_previous_rolled_out_revision(target):
    deploy(target)
    canary.promote(target.store, **FAST)
    s = canary.rollback(target.store, **FAST).status
    assert s["latestRolledoutRevision"] == REV[1]
    assert [(t["revisionName"], t["percent"], t["tag"]) for t in s["traffic"]] == [
        (REV[2], 0, "latest"), (REV[1], 100, "prev")]


def test_a_canary_that_never_becomes_ready_times_out_with_the_conditions(target):
    deploy(target, candidate="v1")
    with pytest.raises(RolloutTimeout) as raised:
        deploy(target, candidate=target.spec("v2", stored=False), timeout_s=3)
    message = str(raised.value)
    assert "not Ready at generation 2 after 3 s" in message
    assert (f'PredictorReady=False (RevisionFailed: Revision "{REV[2]}" failed with message: storage URI '
            f"s3://fraud-models/{target.name}/v2: no objects under it.)") in message
    assert "TransformerReady=True" in message
    # latestRevision means latest *ready*: the failed canary gets nothing, v1 keeps all traffic.
    s = canary.status(target.store)
    assert s["latestCreatedRevision"] == REV[2] and s["latestReadyRevision"] == REV[1]
    assert {t["revisionName"] for t in s["traffic"]} == {REV[1]}


@pytest.mark.parametrize("annotation", ["RawDeployment", "Standard"])
def test_standard_mode_is_refused_because_kserve_ignores_the_split(target, annotation):
    """KServe reports the legacy name RawDeployment as Standard in status.deploymentMode."""
    manifest = isvc.inference_service(target.spec("v1"))
    manifest["metadata"]["annotations"][isvc.DEPLOYMENT_MODE_ANNOTATION] = annotation
    target.admin.create_namespaced_custom_object(isvc.GROUP, isvc.VERSION, target.name, isvc.PLURAL, manifest)
    deadline = time.monotonic() + 60  # Standard mode never gets Ready here (no pods): until it is observed
    while "deploymentMode" not in target.stored().get("status", {}) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert target.stored()["status"]["deploymentMode"] == "Standard"
    with pytest.raises(RolloutRefused, match="runs in Standard mode: KServe ignores canaryTrafficPercent"):
        deploy(target)
    with pytest.raises(RolloutRefused, match="ignores canaryTrafficPercent"):
        canary.promote(target.store, **FAST)
    assert target.verbs() == ["create"]


def test_a_candidate_with_another_feature_contract_is_refused(target):
    deploy(target)
    other = target.spec("v3", contract_id="0000ffff0000ffff")
    with pytest.raises(RolloutRefused, match=rf"contract '0000ffff0000ffff', but the deployed transformer .* uses {CONTRACT}"):
        deploy(target, candidate=other, supersede=True)
    assert target.verbs() == ["create", "patch"]


def test_champion_and_candidate_with_different_contracts_create_nothing(target):
    with pytest.raises(RolloutRefused, match="different feature contracts"):
        deploy(target, candidate=target.spec("v2", contract_id="0000ffff0000ffff"))
    assert target.verbs() == []


@pytest.mark.parametrize("verb", ["create", "patch", "get"])
def test_a_verb_removed_from_the_pipeline_role_is_reported_by_name(namespace, admin_api, s3_settings, verb):
    target = Target(namespace, admin_api, s3_settings)
    if verb == "patch":
        deploy(target, candidate="v1")
    namespace.apply_pipeline_rbac(drop_verb=verb)
    with pytest.raises(MissingPermission) as raised:
        deploy(target)
    message = str(raised.value)
    assert raised.value.verb == verb and raised.value.namespace == target.name
    assert (f"missing RBAC permission: verb '{verb}' on resource 'inferenceservices' (apiGroup "
            f"'serving.kserve.io') in namespace '{target.name}'") in message
    # the API server's own words
    assert (f'User "system:serviceaccount:{target.name}:fraud-rollout-pipeline" cannot {verb} resource '
            f'"inferenceservices" in API group "serving.kserve.io" in the namespace "{target.name}"') in message


def test_merge_patch_with_a_list_body_is_rejected_as_kube_store_json_patch_says(target):
    """Why KubeStore.json_patch exists: kubernetes 30.1 sends a list body as a merge patch, which
    the API server rejects (kubernetes-client/python #2039)."""
    deploy(target)
    with pytest.raises(ApiException) as raised:
        target.api.patch_namespaced_custom_object(isvc.GROUP, isvc.VERSION, target.name, isvc.PLURAL, isvc.NAME,
                                                  isvc.promote_patch())
    assert (raised.value.status, raised.value.reason) == (400, "Bad Request")
    assert "error decoding patch: json: cannot unmarshal array into Go value of type map[string]interface {}" in \
        raised.value.body


def test_status_and_operations_on_a_missing_service_say_so(target):
    with pytest.raises(RolloutError, match=f"{target.name}/fraud-detector does not exist"):
        canary.status(target.store)
    with pytest.raises(RolloutError, match="does not exist"):
        canary.promote(target.store, **FAST)


def test_rollback_with_a_single_revision_is_refused(target):
    deploy(target, candidate="v1")
    with pytest.raises(RolloutRefused, match="nothing to roll back to"):
        canary.rollback(target.store, **FAST)


def test_spec_for_artifact_reads_version_and_contract(tiny_run):
    spec = spec_for_artifact(tiny_run.v2, "s3://b/p", namespace="ns")
    assert (spec.model_version, spec.contract_id, spec.namespace) == ("v2", tiny_run.contract.id, "ns")


def test_deploy_from_artifacts_uploads_both_models_to_minio_and_rolls_out_the_canary(target, tiny_run):
    """The deploy step's cluster side end to end: real exported models to MinIO, then the canary,
    which turns Ready only because its storage URI resolves there; a rerun uploads to the same URIs
    and changes nothing."""
    from fraud.artifact_store import artifact_prefix

    def run():
        return deploy_from_artifacts(tiny_run.v1, tiny_run.v2, namespace=target.name, bucket="fraud-models",
                                     api=target.api, s3_settings=target.s3, **FAST)

    result = run()
    assert result.action == "created with v1; canary v2 at 20 %"
    assert result.status["storageUri"] == f"s3://fraud-models/{artifact_prefix(tiny_run.v2)}"
    assert result.status["featureContractId"] == tiny_run.contract.id
    assert run().action == "unchanged: v2 is already deployed (at 20 %)"
    assert target.verbs() == ["create", "patch"]
    transformer_env = target.stored()["spec"]["transformer"]["containers"][0]["env"]
    assert transformer_env == [{"name": "STORAGE_URI", "value": f"s3://fraud-models/{artifact_prefix(tiny_run.v1)}"}]


def test_a_failed_canary_cannot_be_promoted_but_rolls_back_to_v1(target):
    deploy(target, candidate="v1")
    with pytest.raises(RolloutTimeout):
        deploy(target, candidate=target.spec("v2", stored=False), timeout_s=2)
    with pytest.raises(RolloutRefused, match=r"canary v2 .* is not Ready .* roll it back instead"):
        canary.promote(target.store, **FAST)
    assert target.verbs() == ["create", "patch"]

    result = canary.rollback(target.store, **FAST)  # done although Ready stays False
    assert result.action.startswith("rolled back: canary v2 at 0 % (still not Ready: ")
    assert [(t["revisionName"], t["percent"], t["tag"]) for t in result.status["traffic"]] == [
        (REV[1], 0, "latest"), (REV[1], 100, "prev")]


def test_a_field_the_schema_does_not_know_is_refused_not_pruned(target):
    """Writes go with fieldValidation=Strict: KServe's CRD would otherwise drop the typo silently."""
    manifest = isvc.inference_service(target.spec("v1"))
    manifest["spec"]["predictor"]["canaryTrafficPercnt"] = 20
    with pytest.raises(RolloutError) as raised:
        target.store.create(manifest)
    message = str(raised.value)
    assert message.startswith(f"create inferenceservices.serving.kserve.io {target.name}/fraud-detector failed: HTTP 400 Bad Request")
    assert 'strict decoding error: unknown field "spec.predictor.canaryTrafficPercnt"' in message
    assert [(w["verb"], w["code"]) for w in target.ns.writes()] == [("create", 400)]
    assert target.store.get() is None


def test_a_reruns_baseline_is_the_champion_the_cluster_rolls_out(target, tiny_run, tmp_path):
    """The baseline step on the kserve target: the InferenceService's rolled-out model (through the
    same store as the deploy step), before and after a promote, mapped to its registered version."""
    import shutil

    from fraud import registry
    from fraud_control.canary.registry_aliases import Champion, deployed_champion

    def register(root, label: str) -> int:  # as train_step does: log, then record the run in metadata.json
        info = registry.log_training(tracking_uri, run_name=f"train-{label}", params={}, history={}, metrics={},
                                     artifact_root=root, tags={"model_version": label})
        path = root / "fraud-detector" / label.removeprefix("v") / "metadata.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "mlflow": info}))
        return info["registered_version"]

    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    roots = [shutil.copytree(source, tmp_path / label) for source, label in ((tiny_run.v1, "v1"), (tiny_run.v2, "v2"))]
    first, second = (register(root, f"v{n}") for n, root in enumerate(roots, 1))
    registry.set_alias(tracking_uri, registry.CHAMPION, first)
    deploy_from_artifacts(*roots, namespace=target.name, bucket="fraud-models", api=target.api,
                          s3_settings=target.s3, **FAST)
    where = f"{target.name}/fraud-detector"
    assert deployed_champion(target.store, tracking_uri) == Champion(first, f"rolled-out model of {where}", first)
    canary.promote(target.store, tracking_uri=tracking_uri, **FAST)
    assert deployed_champion(target.store, tracking_uri) == Champion(second, f"rolled-out model of {where}", second)


def test_the_prediction_logger_passes_kserves_webhooks_and_lands_in_the_transformers_knative_template(target):
    """KServe's controller turns `spec.transformer.logger` into the internal annotations its pod
    webhook injects the agent from (kserve@v0.20.0 pkg/controller/v1beta1/inferenceservice/components/
    component.go `addLoggerAnnotations`; pkg/webhook/admission/pod/agent_injector.go reads them), on the
    transformer's Knative Service template only."""
    url = isvc.prediction_log_url(target.name)
    deploy(target, candidate=target.spec("v2", prediction_log_url=url),
           champion=target.spec("v1", prediction_log_url=url))

    assert target.stored()["spec"]["transformer"]["logger"] == {"mode": "all", "url": url}

    def template(component: str) -> dict:
        return target.admin.get_namespaced_custom_object("serving.knative.dev", "v1", target.name, "services",
                                                         f"{isvc.NAME}-{component}")["spec"]["template"]

    def template_annotations(component: str) -> dict:
        return template(component)["metadata"].get("annotations", {})

    transformer = template_annotations("transformer")
    assert {key: value for key, value in transformer.items() if "logger" in key} == {
        "internal.serving.kserve.io/logger": "true",
        "internal.serving.kserve.io/logger-sink-url": "http://fraud-prediction-log." + target.name + ".svc.cluster.local",
        "internal.serving.kserve.io/logger-mode": "all"}
    assert not [key for key in template_annotations("predictor") if "logger" in key]
    # the agent logs requests and responses; the transformer posts only its shadow pairs there
    args = template("transformer")["spec"]["containers"][0]["args"]
    assert args[args.index("--logger_url"):][:4] == ["--logger_url", url, "--logger_events", "pairs"]


def test_without_a_prediction_log_url_there_is_no_logger(target):
    deploy(target)
    assert "logger" not in target.stored()["spec"]["transformer"]



#: The README's command ("Pod Security \"restricted\""), run verbatim from the repository root.
RESTRICTED_STORAGE_INITIALIZER = ("kubectl patch clusterstoragecontainer default --type=merge "
                                  "--patch-file manifests/kserve/storage-initializer-restricted.yaml")


def test_the_pods_pass_pod_security_restricted_once_the_storage_initializer_is_patched(target):
    """Each component's pod as Knative would create it from the Knative Service KServe's controller
    wrote, through KServe's pod webhook (it injects the storage initializer) and the API server's
    Pod Security admission in a "restricted" namespace (dry run: no kubelet here)."""
    core = k8s.CoreV1Api(target.admin.api_client)
    deploy(target)
    # the README's setup: the S3 Secret (the webhook reads it for the initializer), then the account
    core.create_namespaced_secret(target.name, {"metadata": {"name": "fraud-detector-s3"}, "stringData": {
        "AWS_ACCESS_KEY_ID": target.s3.access_key, "AWS_SECRET_ACCESS_KEY": target.s3.secret_key}})
    target.ns.kubectl("apply", "-f", str(REPO / "manifests" / "base" / "serving-account.yaml"))
    core.patch_namespace(target.name, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})

    def admit(component: str) -> k8s.V1Pod:
        template = target.admin.get_namespaced_custom_object("serving.knative.dev", "v1", target.name, "services",
                                                             f"{isvc.NAME}-{component}")["spec"]["template"]
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {**template["metadata"], "name": f"{component}-0"},
               "spec": template["spec"]}
        return core.create_namespaced_pod(target.name, pod, dry_run="All")

    for component in ("predictor", "transformer"):
        with pytest.raises(ApiException) as refused:
            admit(component)
        assert refused.value.status == 403, refused.value.body
        # only what the storage initializer lacks: the pod-level context covers the rest
        assert json.loads(refused.value.body)["message"] == (
            f'pods "{component}-0" is forbidden: violates PodSecurity "restricted:latest": allowPrivilegeEscalation '
            '!= false (container "storage-initializer" must set securityContext.allowPrivilegeEscalation=false), '
            'unrestricted capabilities (container "storage-initializer" must set '
            'securityContext.capabilities.drop=["ALL"])')
    assert RESTRICTED_STORAGE_INITIALIZER in docs_text()
    patched = subprocess.run(shlex.split(RESTRICTED_STORAGE_INITIALIZER) + ["--kubeconfig", str(target.ns.kube.kubeconfig)],
                             cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    try:
        assert patched.returncode == 0, patched.stderr
        assert patched.stdout == "clusterstoragecontainer.serving.kserve.io/default patched\n"
        for component in ("predictor", "transformer"):
            pod = admit(component)
            (initializer,) = pod.spec.init_containers
            assert initializer.name == "storage-initializer"
            assert (initializer.security_context.allow_privilege_escalation,
                    initializer.security_context.capabilities.drop) == (False, ["ALL"])
            assert pod.spec.security_context.seccomp_profile.type == "RuntimeDefault"
    finally:  # KServe's default again, for the other tests of this session's cluster
        target.admin.patch_cluster_custom_object(isvc.GROUP, "v1alpha1", "clusterstoragecontainers", "default",
                                                 {"spec": {"container": {"securityContext": None}}})
