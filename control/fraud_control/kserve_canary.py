"""The fraud-detector canary on a KServe cluster: deploy, status, promote, roll back.

Everything goes through `kubernetes.client.CustomObjectsApi` with the plain dict manifest and
patches of `fraud_control.isvc` (DESIGN decision 9), with KServe's Knative-mode semantics
(decision 6):

- deploy: if the InferenceService is absent, create it with the champion (v1) and wait until
  Ready (the first revision always gets 100 %); then merge-patch the predictor to the candidate
  (v2) with `canaryTrafficPercent` and wait until `status.observedGeneration` reaches the new
  `metadata.generation` *and* Ready is True. (KServeClient.wait_isvc_ready reports the previous
  generation's Ready, hence our own wait.)
- promote: JSON patch removing `canaryTrafficPercent`; roll back: merge patch setting it to 0.
- refusals, each with the reason: Standard/RawDeployment mode (KServe ignores
  `canaryTrafficPercent` there), a feature contract different from the deployed transformer's,
  another candidate's canary still running (unless `supersede`).
- a 403 names the RBAC permission that is missing (verb, resource, namespace).

The functions take a `CustomObjectsApi`, so the KFP component, the CLI and the tests each build
their own (`custom_objects_api()` for a kubeconfig or in-cluster service account).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from fraud_control import isvc
from fraud_control.isvc import CANARY_MODES, CONTRACT_ANNOTATION, GROUP, NAME, PLURAL, VERSION, IsvcSpec

if TYPE_CHECKING:  # importing the kubernetes client takes seconds: only where a call needs it
    from kubernetes import client

log = logging.getLogger(__name__)

DEFAULT_CANARY_PERCENT = 20
#: Knative pulls the image and the storage initializer the model: minutes on a cold node.
DEFAULT_TIMEOUT_S = 600.0
DEFAULT_POLL_S = 2.0
REQUEST_TIMEOUT_S = 30.0
RESOURCE = f"{PLURAL}.{GROUP}"
JSON_PATCH = "application/json-patch+json"


class RolloutError(RuntimeError):
    """The canary operation did not happen; the message says why and what to do."""


class RolloutRefused(RolloutError):
    """Refused before changing anything: the cluster's state does not allow this operation."""


class RolloutTimeout(RolloutError):
    """The InferenceService did not become Ready at the expected generation in time."""

    def __init__(self, message: str, conditions: list[dict]) -> None:
        super().__init__(message)
        self.conditions = conditions


class MissingPermission(RolloutError):
    """The API server answered 403: the caller's service account lacks an RBAC verb."""

    def __init__(self, verb: str, namespace: str, server_message: str) -> None:
        self.verb, self.namespace = verb, namespace
        super().__init__(
            f"missing RBAC permission: verb {verb!r} on resource {PLURAL!r} (apiGroup {GROUP!r}) in namespace "
            f"{namespace!r}. Grant it with a Role and RoleBinding in that namespace for the service account "
            f"the step runs as (manifests/base/pipeline-rbac.yaml). API server said: {server_message}")


@dataclass(frozen=True)
class Rollout:
    """What an operation did (`action`) and the traffic status it left (`status`)."""

    action: str
    status: dict

    @property
    def markdown(self) -> str:
        return render_markdown(self.status, self.action)


# -- Kubernetes access -------------------------------------------------------------------------

def custom_objects_api(kubeconfig: str | None = None, context: str | None = None) -> client.CustomObjectsApi:
    """A client from the pod's service account when running in a cluster (and no kubeconfig is
    given), else from a kubeconfig (`$KUBECONFIG` or ~/.kube/config)."""
    from kubernetes import client, config

    if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)
        return client.CustomObjectsApi(client.ApiClient(configuration))
    return client.CustomObjectsApi(config.new_client_from_config(config_file=kubeconfig, context=context))


def _server_message(error) -> str:
    import json

    try:
        return json.loads(error.body).get("message") or error.reason
    except (TypeError, ValueError, AttributeError):
        return str(error.reason)


def _call(verb: str, namespace: str, name: str, request, missing_ok: bool = False):
    """Run one API request; a 403 becomes MissingPermission, other failures a RolloutError that
    names the request; a 404 gives None when `missing_ok`."""
    from kubernetes.client.exceptions import ApiException

    try:
        return request()
    except ApiException as error:
        if error.status == 403:
            raise MissingPermission(verb, namespace, _server_message(error)) from None
        if error.status == 404 and missing_ok:
            return None
        raise RolloutError(f"{verb} {RESOURCE} {namespace}/{name} failed: HTTP {error.status} "
                           f"{error.reason}: {_server_message(error)}") from None


def get_isvc(api: client.CustomObjectsApi, namespace: str, name: str = NAME) -> dict | None:
    """The InferenceService, or None if it does not exist."""
    return _call("get", namespace, name, lambda: api.get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name, _request_timeout=REQUEST_TIMEOUT_S), missing_ok=True)


def _create(api: client.CustomObjectsApi, manifest: dict) -> dict:
    namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    return _call("create", namespace, name, lambda: api.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, manifest, _request_timeout=REQUEST_TIMEOUT_S))


def merge_patch(api: client.CustomObjectsApi, namespace: str, name: str, patch: dict) -> dict:
    """`application/merge-patch+json`: what `patch_namespaced_custom_object` sends for a dict."""
    if not isinstance(patch, dict):
        raise TypeError("a merge patch is a dict; use json_patch for a list of operations")
    return _call("patch", namespace, name, lambda: api.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name, patch, _request_timeout=REQUEST_TIMEOUT_S))


def json_patch(api: client.CustomObjectsApi, namespace: str, name: str, operations: list[dict]) -> dict:
    """`application/json-patch+json` on the custom object.

    kubernetes 30.1's `patch_namespaced_custom_object` always sends merge-patch+json, also for a
    list body, which the API server rejects with 422 ("cannot unmarshal array",
    kubernetes-client/python #2039), so this sends the same request with the right Content-Type.
    """
    path = "/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}"
    params = {"group": GROUP, "version": VERSION, "namespace": namespace, "plural": PLURAL, "name": name}
    return _call("patch", namespace, name, lambda: api.api_client.call_api(
        path, "PATCH", path_params=params, query_params=[],
        header_params={"Accept": "application/json", "Content-Type": JSON_PATCH},
        body=operations, post_params=[], files={}, response_type="object", auth_settings=["BearerToken"],
        _return_http_data_only=True, collection_formats={}, _request_timeout=REQUEST_TIMEOUT_S))


# -- waiting -----------------------------------------------------------------------------------

def _conditions(obj: dict) -> list[dict]:
    return obj.get("status", {}).get("conditions", [])


def _is_true(obj: dict, kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in _conditions(obj))


def describe_conditions(conditions: list[dict]) -> str:
    if not conditions:
        return "no conditions reported yet"
    parts = []
    for c in conditions:
        detail = ": ".join(x for x in (c.get("reason", ""), c.get("message", "")) if x)
        parts.append(f"{c.get('type')}={c.get('status')}" + (f" ({detail})" if detail else ""))
    return "; ".join(parts)


def wait_ready(api: client.CustomObjectsApi, namespace: str, name: str, generation: int,
               timeout_s: float = DEFAULT_TIMEOUT_S, poll_s: float = DEFAULT_POLL_S) -> dict:
    """Poll until `status.observedGeneration >= generation` and Ready is True; returns the object.

    Raises RolloutTimeout with the InferenceService's conditions when `timeout_s` passes.
    """
    return _wait(api, namespace, name, generation, lambda obj: _is_true(obj, "Ready"), "Ready", timeout_s, poll_s)


def _rolled_out_takes_all(obj: dict) -> bool:
    predictor = obj.get("status", {}).get("components", {}).get("predictor", {})
    rolled_out = predictor.get("latestRolledoutRevision")
    return bool(rolled_out) and sum(t.get("percent", 0) for t in predictor.get("traffic", [])
                                    if t.get("revisionName") == rolled_out) == 100


def _wait(api: client.CustomObjectsApi, namespace: str, name: str, generation: int, done, what: str,
          timeout_s: float, poll_s: float) -> dict:
    """Poll (a readiness check, every `poll_s`) until the controller has observed `generation` and
    `done(obj)`; RolloutTimeout with the conditions after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        obj = get_isvc(api, namespace, name)
        if obj is None:
            raise RolloutError(f"InferenceService {namespace}/{name} disappeared while waiting for it to be {what}")
        observed = obj.get("status", {}).get("observedGeneration", 0)
        if observed >= generation and done(obj):
            return obj
        if time.monotonic() >= deadline:
            raise RolloutTimeout(
                f"InferenceService {namespace}/{name} was not {what} at generation {generation} after "
                f"{timeout_s:g} s (observedGeneration {observed}). Conditions: "
                f"{describe_conditions(_conditions(obj))}", _conditions(obj))
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))


# -- checks ------------------------------------------------------------------------------------

def check_canary_mode(obj: dict) -> None:
    """Refuse unless KServe runs this InferenceService in Knative mode."""
    mode = isvc.deployment_mode(obj)
    if mode in CANARY_MODES:
        return
    namespace, name = obj["metadata"].get("namespace", ""), obj["metadata"]["name"]
    shown = f"in {mode} mode" if mode else "with no deployment mode reported (KServe 0.21 defaults to Standard)"
    raise RolloutRefused(
        f"InferenceService {namespace}/{name} runs {shown}: KServe ignores canaryTrafficPercent there "
        f"(kserve #5335), so a canary would silently take 100 % of traffic. Recreate it with the "
        f"annotation {isvc.DEPLOYMENT_MODE_ANNOTATION}: Knative on a cluster with Knative Serving.")


def check_contract(obj: dict, candidate: IsvcSpec) -> None:
    """Refuse a candidate trained on another feature contract than the deployed transformer's:
    KServe splits transformer and predictor independently (kserve #1669), so the transformer
    must not change during a canary."""
    deployed = obj["metadata"].get("annotations", {}).get(CONTRACT_ANNOTATION, "")
    if deployed != candidate.contract_id:
        raise RolloutRefused(
            f"candidate {candidate.model_version} was trained with feature contract {candidate.contract_id!r}, "
            f"but the deployed transformer of {obj['metadata'].get('namespace')}/{obj['metadata']['name']} uses "
            f"{deployed or 'none (no ' + CONTRACT_ANNOTATION + ' annotation)'!s}. A canary cannot change the "
            f"transformer: retrain the candidate with the deployed contract, or roll out a new "
            f"InferenceService for the new contract.")


def canary_percent_of(obj: dict) -> int | None:
    return obj.get("spec", {}).get("predictor", {}).get("canaryTrafficPercent")


# -- operations --------------------------------------------------------------------------------

def deploy_canary(api: client.CustomObjectsApi, candidate: IsvcSpec, champion: IsvcSpec, *,
                  canary_percent: int = DEFAULT_CANARY_PERCENT, supersede: bool = False,
                  timeout_s: float = DEFAULT_TIMEOUT_S, poll_s: float = DEFAULT_POLL_S) -> Rollout:
    """Roll `candidate` out as a canary of `canary_percent` % on the InferenceService
    `candidate.namespace/candidate.name`, creating it with `champion` first if it is absent.

    Idempotent: the same candidate (storage URI and model version) again changes nothing, whatever
    traffic an operator has set since. Another candidate's canary still running (0 < percent < 100)
    is refused unless `supersede`.
    Raises RolloutRefused, RolloutTimeout, MissingPermission (all RolloutError).
    """
    if not 0 < canary_percent < 100:
        raise ValueError(f"canary percent must be between 1 and 99, got {canary_percent}")
    if (candidate.namespace, candidate.name) != (champion.namespace, champion.name):
        raise ValueError("candidate and champion must name the same InferenceService")
    namespace, name = candidate.namespace, candidate.name
    actions = []
    current = get_isvc(api, namespace, name)
    if current is None:
        if champion.contract_id != candidate.contract_id:
            raise RolloutRefused(
                f"champion {champion.model_version} (feature contract {champion.contract_id!r}) and candidate "
                f"{candidate.model_version} ({candidate.contract_id!r}) use different feature contracts; one "
                f"transformer cannot serve both during a canary")
        manifest = isvc.inference_service(replace(champion, canary_percent=None))
        created = _create(api, manifest)
        log.info("created InferenceService %s/%s with %s; waiting for Ready", namespace, name, champion.model_version)
        current = wait_ready(api, namespace, name, created["metadata"]["generation"], timeout_s, poll_s)
        actions.append(f"created with {champion.model_version}")
    check_canary_mode(current)
    check_contract(current, candidate)

    deployed = (isvc.predictor_storage_uri(current), isvc.predictor_model_version(current))
    if deployed == (candidate.storage_uri, candidate.model_version):
        current = wait_ready(api, namespace, name, current["metadata"]["generation"], timeout_s, poll_s)
        percent = canary_percent_of(current)
        where = "fully rolled out" if percent is None else f"at {percent} %"
        actions.append(f"unchanged: {candidate.model_version} is already deployed ({where})")
        return Rollout("; ".join(actions), traffic_status(current))

    running = canary_percent_of(current)
    if running is not None and 0 < running < 100:
        if not supersede:
            raise RolloutRefused(
                f"a canary of {deployed[1] or '?'} ({deployed[0]}) is already running at {running} % on "
                f"{namespace}/{name}; promote it or roll it back first, or supersede it with "
                f"{candidate.model_version} (supersede=True, CLI --supersede)")
        actions.append(f"superseded canary {deployed[1] or deployed[0]}")

    patched = merge_patch(api, namespace, name, isvc.canary_patch(candidate, canary_percent))
    log.info("patched %s/%s: canary %s at %d %% (generation %s); waiting for Ready", namespace, name,
             candidate.model_version, canary_percent, patched["metadata"]["generation"])
    current = wait_ready(api, namespace, name, patched["metadata"]["generation"], timeout_s, poll_s)
    actions.append(f"canary {candidate.model_version} at {canary_percent} %")
    return Rollout("; ".join(actions), traffic_status(current))


def status(api: client.CustomObjectsApi, namespace: str, name: str = NAME) -> dict:
    """The traffic status (see `traffic_status`); RolloutError if the InferenceService is absent."""
    return traffic_status(_require(api, namespace, name))


def promote(api: client.CustomObjectsApi, namespace: str, name: str = NAME, *,
            timeout_s: float = DEFAULT_TIMEOUT_S, poll_s: float = DEFAULT_POLL_S) -> Rollout:
    """Give the canary 100 %: JSON patch removing `canaryTrafficPercent` (as the README's kubectl
    command does); KServe then records it as `latestRolledoutRevision`."""
    current = _require(api, namespace, name)
    check_canary_mode(current)
    if canary_percent_of(current) is None:
        current = wait_ready(api, namespace, name, current["metadata"]["generation"], timeout_s, poll_s)
        return Rollout(f"unchanged: {isvc.predictor_model_version(current)} already takes 100 %",
                       traffic_status(current))
    if not traffic_status(current)["ready"]:
        raise RolloutRefused(
            f"the canary {isvc.predictor_model_version(current)} of {namespace}/{name} is not Ready at generation "
            f"{current['metadata'].get('generation')}, so promoting would give 100 % to an older ready revision; "
            f"roll it back instead. Conditions: {describe_conditions(_conditions(current))}")
    patched = json_patch(api, namespace, name, isvc.promote_patch())
    current = wait_ready(api, namespace, name, patched["metadata"]["generation"], timeout_s, poll_s)
    return Rollout(f"promoted {isvc.predictor_model_version(current)} to 100 %", traffic_status(current))


def rollback(api: client.CustomObjectsApi, namespace: str, name: str = NAME, *,
             timeout_s: float = DEFAULT_TIMEOUT_S, poll_s: float = DEFAULT_POLL_S) -> Rollout:
    """Pin the canary to 0 % (merge patch): the rolled-out revision takes 100 % again; the
    candidate's spec stays in place (re-deploy the champion's storage URI to replace it).

    Done when the controller reports the rolled-out revision at 100 %, not when Ready: a canary
    that failed keeps Ready False (its revision is the latest created) after its traffic is gone.
    """
    current = _require(api, namespace, name)
    check_canary_mode(current)
    if canary_percent_of(current) == 0:
        current = wait_ready(api, namespace, name, current["metadata"]["generation"], timeout_s, poll_s)
        return Rollout("unchanged: the canary is already at 0 %", traffic_status(current))
    predictor = current.get("status", {}).get("components", {}).get("predictor", {})
    rolled_out, latest = predictor.get("latestRolledoutRevision"), predictor.get("latestReadyRevision")
    if canary_percent_of(current) is None and rolled_out == latest and not predictor.get("previousRolledoutRevision"):
        raise RolloutRefused(f"{namespace}/{name} has a single rolled-out revision ({rolled_out}): "
                             "there is nothing to roll back to")
    patched = merge_patch(api, namespace, name, isvc.rollback_patch())
    current = _wait(api, namespace, name, patched["metadata"]["generation"], _rolled_out_takes_all,
                    "back on its rolled-out revision", timeout_s, poll_s)
    action = f"rolled back: canary {isvc.predictor_model_version(current)} at 0 %"
    if not _is_true(current, "Ready"):
        action += f" (still not Ready: {describe_conditions(_conditions(current))})"
    return Rollout(action, traffic_status(current))


def _require(api: client.CustomObjectsApi, namespace: str, name: str) -> dict:
    obj = get_isvc(api, namespace, name)
    if obj is None:
        raise RolloutError(f"InferenceService {namespace}/{name} does not exist (kubectl get isvc -n {namespace})")
    return obj


# -- CLI: fraud-rollout canary status|promote|rollback --target kserve ---------------------------

def move_registry_aliases(action: str, tracking_uri: str) -> str:
    """Keep MLflow's aliases true after a cluster operation: promote → `champion` takes the
    `challenger`'s version and `challenger` is cleared (no canary is left); rollback → `challenger`
    cleared. Returns a one-line account."""
    from fraud import registry

    current = registry.aliases(tracking_uri)
    if action == "promote":
        if registry.CHALLENGER not in current:
            return f"MLflow: no {registry.CHALLENGER} alias to promote; aliases unchanged ({current})"
        registry.set_alias(tracking_uri, registry.CHAMPION, current[registry.CHALLENGER])
        registry.delete_alias(tracking_uri, registry.CHALLENGER)
        return f"MLflow: {registry.CHAMPION} = version {current[registry.CHALLENGER]}, {registry.CHALLENGER} cleared"
    if action == "rollback":
        registry.delete_alias(tracking_uri, registry.CHALLENGER)
        return f"MLflow: {registry.CHALLENGER} cleared, {registry.CHAMPION} stays {current.get(registry.CHAMPION, '(unset)')}"
    return ""


def cli_action(action: str, args) -> int:
    """`canary ACTION --target kserve`: reads args.namespace, args.name, args.kubeconfig,
    args.context, args.timeout, args.tracking_uri, args.json. Exit 1 on a refused or failed
    operation (the message says why), 0 otherwise."""
    import json
    import sys

    if not getattr(args, "namespace", None):
        raise ValueError("--namespace is required with --target kserve")
    name = getattr(args, "name", None) or NAME
    api = custom_objects_api(getattr(args, "kubeconfig", None), getattr(args, "context", None))
    timeout_s = float(getattr(args, "timeout", None) or DEFAULT_TIMEOUT_S)
    try:
        if action == "status":
            result = Rollout("status", status(api, args.namespace, name))
        elif action == "promote":
            result = promote(api, args.namespace, name, timeout_s=timeout_s)
        elif action == "rollback":
            result = rollback(api, args.namespace, name, timeout_s=timeout_s)
        else:
            raise ValueError(f"unknown canary action {action!r}")
    except RolloutError as error:
        print(f"fraud-rollout canary {action}: {error}", file=sys.stderr)
        return 1
    note = ""
    tracking_uri = getattr(args, "tracking_uri", "") or os.environ.get("MLFLOW_TRACKING_URI", "")
    if action != "status" and not result.action.startswith("unchanged"):
        note = (move_registry_aliases(action, tracking_uri) if tracking_uri else
                "MLflow aliases not moved: no --tracking-uri and no MLFLOW_TRACKING_URI")
    if getattr(args, "json", False):
        print(json.dumps({"action": result.action, "status": result.status, "registry": note}, indent=2))
    else:
        print(result.markdown + (f"\n{note}" if note else ""))
    return 0


# -- inputs from artifacts ---------------------------------------------------------------------

def spec_for_artifact(artifact_root: str | Path, storage_uri: str, **fields) -> IsvcSpec:
    """The IsvcSpec of an exported model: model version and contract id from its metadata.json;
    `storage_uri` is where KServe pulls it from (the s3:// URI `upload_artifact` returned);
    `fields` are the other IsvcSpec fields (namespace, image, ...)."""
    from fraud.export import read_metadata

    metadata = read_metadata(artifact_root)
    return IsvcSpec(storage_uri=storage_uri, model_version=metadata["model_version"],
                    contract_id=metadata["contract_id"], **fields)


def deploy_from_artifacts(champion_root: str | Path, candidate_root: str | Path, *, namespace: str, bucket: str,
                          image: str = isvc.DEFAULT_IMAGE, canary_percent: int = DEFAULT_CANARY_PERCENT,
                          supersede: bool = False, timeout_s: float = DEFAULT_TIMEOUT_S,
                          poll_s: float = DEFAULT_POLL_S, api: client.CustomObjectsApi | None = None,
                          s3_settings=None) -> Rollout:
    """The deploy step's whole cluster side: upload both exported models to S3 (settings from the
    environment unless given; content-addressed prefixes, so a rerun uploads to the same URIs),
    then `deploy_canary` in `namespace` (client from the pod's service account unless given)."""
    from fraud_control.artifact_store import upload_artifact

    champion = spec_for_artifact(champion_root, upload_artifact(champion_root, bucket, settings=s3_settings),
                                 namespace=namespace, image=image)
    candidate = spec_for_artifact(candidate_root, upload_artifact(candidate_root, bucket, settings=s3_settings),
                                  namespace=namespace, image=image)
    return deploy_canary(api or custom_objects_api(), candidate, champion, canary_percent=canary_percent,
                         supersede=supersede, timeout_s=timeout_s, poll_s=poll_s)


# -- manifests ---------------------------------------------------------------------------------

#: The inputs of manifests/base/inferenceservice.yaml: tests keep that file equal to
#: `manifest_yaml(BASE_MANIFEST_SPEC)` and to what `kubectl kustomize` renders. A real deploy
#: takes the storage URI and contract id from the uploaded artifact (`spec_for_artifact`).
BASE_MANIFEST_SPEC = IsvcSpec(storage_uri="s3://fraud-models/fraud-detector/v1", model_version="v1",
                              contract_id="REPLACE-WITH-FEATURE-CONTRACT-ID", namespace="fraud-rollout")
MANIFEST_HEADER = """\
# Generated: the InferenceService the deploy step creates for v1, from
# fraud_control.isvc.inference_service(kserve_canary.BASE_MANIFEST_SPEC). Do not edit; regenerate with
#   python -c 'from fraud_control.kserve_canary import manifest_yaml; print(manifest_yaml(), end="")' \\
#     > manifests/base/inferenceservice.yaml
"""


def manifest_yaml(spec: IsvcSpec = BASE_MANIFEST_SPEC) -> str:
    """The InferenceService the deploy step creates for `spec`, as YAML for kustomize's base."""
    import json

    import yaml

    plain = json.loads(json.dumps(isvc.inference_service(spec)))  # no shared dicts, so no YAML anchors
    return MANIFEST_HEADER + yaml.safe_dump(plain, sort_keys=False, width=120)


# -- reporting ---------------------------------------------------------------------------------

def traffic_status(obj: dict) -> dict:
    """The predictor's traffic state in KServe's own field names, plus what the spec asks for.

    `traffic` is `status.components.predictor.traffic` as KServe reports it. Works on any
    InferenceService dict (a cluster's, or the local runtime's state file).
    """
    metadata, spec, st = obj.get("metadata", {}), obj.get("spec", {}), obj.get("status", {})
    predictor = st.get("components", {}).get("predictor", {})
    generation, observed = metadata.get("generation", 0), st.get("observedGeneration", 0)
    return {
        "name": metadata.get("name", ""),
        "namespace": metadata.get("namespace", ""),
        "deploymentMode": isvc.deployment_mode(obj),
        "ready": _is_true(obj, "Ready") and observed >= generation,
        "generation": generation,
        "observedGeneration": observed,
        "modelVersion": isvc.predictor_model_version(obj),
        "storageUri": isvc.predictor_storage_uri(obj),
        "featureContractId": metadata.get("annotations", {}).get(CONTRACT_ANNOTATION, ""),
        "canaryTrafficPercent": spec.get("predictor", {}).get("canaryTrafficPercent"),
        "latestCreatedRevision": predictor.get("latestCreatedRevision", ""),
        "latestReadyRevision": predictor.get("latestReadyRevision", ""),
        "latestRolledoutRevision": predictor.get("latestRolledoutRevision", ""),
        "previousRolledoutRevision": predictor.get("previousRolledoutRevision", ""),
        "traffic": predictor.get("traffic", []),
        "conditions": [{k: c[k] for k in ("type", "status", "reason", "message") if k in c}
                       for c in st.get("conditions", [])],
        "url": st.get("url", ""),
    }


def render_markdown(traffic: dict, action: str | None = None) -> str:
    """A Markdown report of `traffic_status(...)` for the KFP UI and the CLI."""
    current_spec_served = (traffic["ready"] and traffic["latestReadyRevision"]
                           and traffic["latestReadyRevision"] == traffic["latestCreatedRevision"])
    lines = [f"### InferenceService `{traffic['namespace']}/{traffic['name']}`", ""]
    if action:
        lines += [f"**{action}**", ""]
    lines += ["| revision | tag | traffic | serves |", "|---|---|---:|---|"]
    for target in traffic["traffic"]:
        revision = target.get("revisionName", "")
        if target.get("latestRevision"):
            serves = f"{traffic['modelVersion']} (spec)" if current_spec_served else "latest ready revision"
        elif revision == traffic["latestRolledoutRevision"]:
            serves = "rolled-out revision"
        else:
            serves = ""
        lines.append(f"| `{revision}` | {target.get('tag', '')} | {target.get('percent', 0)} % | {serves} |")
    if not traffic["traffic"]:
        lines.append("| (no traffic reported) | | | |")
    percent = traffic["canaryTrafficPercent"]
    lines += [
        "",
        f"- Ready: **{traffic['ready']}** (generation {traffic['generation']}, observed "
        f"{traffic['observedGeneration']}), deployment mode {traffic['deploymentMode'] or 'unknown'}",
        f"- spec: model {traffic['modelVersion']} from `{traffic['storageUri']}`, canaryTrafficPercent "
        f"{'unset (100 % to the latest ready revision)' if percent is None else percent}",
        f"- latestRolledoutRevision `{traffic['latestRolledoutRevision']}`, previousRolledoutRevision "
        f"`{traffic['previousRolledoutRevision']}`",
        f"- feature contract `{traffic['featureContractId']}`",
        f"- conditions: {describe_conditions(traffic['conditions'])}",
    ]
    return "\n".join(lines) + "\n"
