"""The fraud-detector InferenceService as a plain dict, and the patches that move its canary.

One builder serves every target: the deploy step creates it in a cluster, kustomize's base holds
the same object, and the local runtime reads it from its state dir. Patches are the ones kubectl
users apply (README "Promote or roll back").
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from fraud.canary_percent import canary_percent
from fraud.export import MODEL_DIR
from fraud.export import MODEL_NAME as NAME

GROUP, VERSION, PLURAL, KIND = "serving.kserve.io", "v1beta1", "inferenceservices", "InferenceService"
API_VERSION = f"{GROUP}/{VERSION}"
DEFAULT_IMAGE = "ghcr.io/fraud-rollout/serving:0.1.0"
DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
#: canaryTrafficPercent only works in Knative mode ("Serverless" is its older name); Standard
#: ("RawDeployment") ignores it silently, and 0.21's default is Standard.
CANARY_MODES = frozenset({"Knative", "Serverless"})
MODEL_VERSION_LABEL = "fraud-rollout/model-version"
CONTRACT_ANNOTATION = "fraud-rollout/feature-contract-id"
#: What the rolled-out revision served when the canary was opened (JSON: revision, modelVersion,
#: storageUri): once the canary's patch replaced the predictor spec, the InferenceService itself no
#: longer says what its rolled-out revision serves (Knative's Revision objects would). It is a
#: predictor annotation: KServe copies the InferenceService's own annotations into every component's
#: template, so one there would give the transformer a new revision on every canary (seen on
#: KServe's controller).
ROLLED_OUT_ANNOTATION = "fraud-rollout/rolled-out-model"
#: The traffic tags KServe gives the predictor's Knative route with tag routing on
#: (kserve@v0.20.0 pkg/controller/v1beta1/inferenceservice/reconcilers/knative/ksvc_reconciler.go:140
#: `latestTarget.Tag = "latest"`, :150 `Tag: "prev"`; `prev` exists only while the canary is below 100 %).
TRAFFIC_TAGS = ("latest", "prev")
#: The prediction-log sink's Service (`fraud_control.prediction_log.sink`), which KServe's payload logger posts to.
PREDICTION_LOG_SERVICE = "fraud-prediction-log"


@dataclass(frozen=True)
class IsvcSpec:
    """What varies between deployments of the fraud-detector InferenceService."""

    storage_uri: str  # the predictor's model artifact root (s3://… in a cluster, a path locally)
    model_version: str  # "v1", "v2": label on the predictor, echoed in every response
    contract_id: str
    transformer_storage_uri: str = ""  # where the transformer reads feature_contract.json; default storage_uri
    namespace: str = "default"
    name: str = NAME
    image: str = DEFAULT_IMAGE
    service_account: str = "fraud-detector-serving"
    canary_percent: int | None = None
    #: the prediction-log sink KServe's payload logger posts every request and response to ("" none)
    prediction_log_url: str = ""
    resources: dict = field(default_factory=lambda: {
        "requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}})


SECURITY_CONTEXT = {"runAsNonRoot": True, "runAsUser": 1000, "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]}}
#: The pod's: it covers the containers KServe and Knative add (storage initializer, agent,
#: queue-proxy) for the two fields Pod Security "restricted" accepts at pod level. The storage
#: initializer's container-level fields come from KServe's ClusterStorageContainer
#: (manifests/kserve/storage-initializer-restricted.yaml).
POD_SECURITY_CONTEXT = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}


def predictor_spec(spec: IsvcSpec) -> dict:
    """The predictor component: our container named kserve-container; KServe's storage initializer
    pulls STORAGE_URI into /mnt/models."""
    predictor: dict = {
        "serviceAccountName": spec.service_account,
        "securityContext": POD_SECURITY_CONTEXT,
        "labels": {MODEL_VERSION_LABEL: spec.model_version},
        "containers": [{
            "name": "kserve-container",
            "image": spec.image,
            "args": ["predictor", "--model_name", spec.name, "--model_dir", MODEL_DIR, "--http_port", "8080"],
            "env": [{"name": "STORAGE_URI", "value": spec.storage_uri}],
            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
            "resources": spec.resources,
            "securityContext": SECURITY_CONTEXT,
        }],
    }
    if spec.canary_percent is not None:
        predictor["canaryTrafficPercent"] = int(spec.canary_percent)
    return predictor


def tag_host(name: str, namespace: str, tag: str) -> str:
    """The cluster-local host of one traffic tag of the InferenceService `name`'s predictor.

    Knative names a tag's host with the tag template, `{{.Tag}}-{{.Name}}` by default
    (knative.dev/networking pkg/config/config.go:60, applied to the route's name by
    serving@v0.48.1 pkg/reconciler/route/domains/domains.go:138 `HostnameFromTemplate`), and
    creates a Kubernetes Service of that name in the route's namespace
    (pkg/reconciler/route/resources/service.go:45 `MakeK8sPlaceholderService`); the route is the
    predictor's Knative Service, `<isvc>-predictor` (kserve@v0.20.0 pkg/constants/constants.go:803).
    The host takes the `<service>.<namespace>` form KServe's own `--predictor_host` has
    (pkg/apis/serving/v1beta1/transformer_custom.go:77), which Knative's cluster-local ingress
    accepts besides `.svc` and `.svc.<cluster domain>` (knative.dev/networking pkg/ingress/ingress.go:93
    `ExpandedHosts`), so it holds whatever the cluster domain is.
    """
    return f"{tag}-{name}-predictor.{namespace}"


def shadow_hosts_arg(spec: IsvcSpec) -> str:
    """`--shadow_hosts` for the transformer: each traffic tag's cluster-local URL."""
    return ",".join(f"{tag}=http://{tag_host(spec.name, spec.namespace, tag)}" for tag in TRAFFIC_TAGS)


def transformer_spec(spec: IsvcSpec) -> dict:
    """The transformer: KServe injects --model_name, --predictor_host and --http_port; we add the
    v2 protocol, the contract location and the tag hosts (shadow scores and the retry reach each
    revision there, `fraud_serving.routing`). With a prediction-log URL, KServe's payload logger
    (`logger`, mode all) on the transformer: its agent sends each client request and answer, the
    raw transactions with their ids and the `model_version` that answered, as CloudEvents; the
    transformer itself posts only its shadow pairs there (`--logger_events pairs`), which KServe
    has no event for."""
    transformer: dict = {
        "serviceAccountName": spec.service_account,
        "securityContext": POD_SECURITY_CONTEXT,
        "containers": [{
            "name": "kserve-container",
            "image": spec.image,
            "args": ["transformer", "--predictor_protocol", "v2", "--contract_dir", MODEL_DIR,
                     "--shadow_hosts", shadow_hosts_arg(spec)],
            "env": [{"name": "STORAGE_URI", "value": spec.transformer_storage_uri or spec.storage_uri}],
            "resources": spec.resources,
            "securityContext": SECURITY_CONTEXT,
        }],
    }
    if spec.prediction_log_url:
        transformer["logger"] = logger_spec(spec.prediction_log_url)
        transformer["containers"][0]["args"] += ["--logger_url", spec.prediction_log_url, "--logger_events", "pairs"]
    return transformer


def prediction_log_url(namespace: str) -> str:
    """The in-cluster URL of the prediction-log sink's Service in `namespace`."""
    return f"http://{PREDICTION_LOG_SERVICE}.{namespace}.svc.cluster.local"


def logger_spec(url: str) -> dict:
    """KServe's LoggerSpec: every request and response (mode all) to `url`."""
    return {"mode": "all", "url": url}


def transformer_logger_url(manifest: dict) -> str | None:
    """The URL the transformer's payload logger posts to (`logger_spec`), None without a logger."""
    return (manifest["spec"].get("transformer", {}).get("logger") or {}).get("url") or None


def inference_service(spec: IsvcSpec) -> dict:
    """The whole InferenceService manifest."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "annotations": {
                DEPLOYMENT_MODE_ANNOTATION: "Knative",
                "serving.kserve.io/enable-tag-routing": "true",
                "serving.kserve.io/enable-prometheus-scraping": "true",
                CONTRACT_ANNOTATION: spec.contract_id,
            },
        },
        "spec": {"predictor": predictor_spec(spec), "transformer": transformer_spec(spec)},
    }


def canary_patch(spec: IsvcSpec, percent: int, rolled_out: dict | None = None) -> dict:
    """Merge patch: the predictor moves to `spec`'s model with `percent` % of traffic (a new revision);
    `rolled_out` (revision, modelVersion, storageUri) is recorded in ROLLED_OUT_ANNOTATION."""
    percent = canary_percent(percent, "canary percent")
    predictor = predictor_spec(IsvcSpec(**{**spec.__dict__, "canary_percent": percent}))
    if rolled_out:
        predictor["annotations"] = {ROLLED_OUT_ANNOTATION: json.dumps(rolled_out, sort_keys=True)}
    return {"spec": {"predictor": predictor}}


def promote_patch() -> list[dict]:
    """JSON patch: remove canaryTrafficPercent, so the latest ready revision takes 100 %."""
    return [{"op": "remove", "path": "/spec/predictor/canaryTrafficPercent"}]


def canary_percent_patch(percent: int) -> dict:
    """Merge patch: the canary (latest ready revision) gets `percent` %, the rolled-out one the rest."""
    return {"spec": {"predictor": {"canaryTrafficPercent": percent}}}


def rollback_patch() -> dict:
    """Merge patch: pin the canary to 0 %; the rolled-out revision takes 100 % again."""
    return canary_percent_patch(0)


def predictor_storage_uri(isvc: dict) -> str:
    """STORAGE_URI of the predictor's kserve-container ('' if absent)."""
    for container in isvc.get("spec", {}).get("predictor", {}).get("containers", []):
        if container.get("name") == "kserve-container":
            for env in container.get("env", []):
                if env.get("name") == "STORAGE_URI":
                    return env.get("value", "")
    return ""


def predictor_model_version(isvc: dict) -> str:
    return isvc.get("spec", {}).get("predictor", {}).get("labels", {}).get(MODEL_VERSION_LABEL, "")


def deployment_mode(isvc: dict) -> str:
    """The mode KServe runs it in: status.deploymentMode if reported, else the annotation."""
    return (isvc.get("status", {}).get("deploymentMode")
            or isvc.get("metadata", {}).get("annotations", {}).get(DEPLOYMENT_MODE_ANNOTATION, ""))


TRITON_RUNTIME = "kserve-tritonserver"


def triton_predictor_spec(spec: IsvcSpec) -> dict:
    """The predictor on KServe's stock Triton runtime, serving the same artifact: the export's
    `<root>/fraud-detector/config.pbtxt` + `<n>/model.savedmodel` is a Triton model repository, and
    Triton's model name equals the InferenceService name the transformer forwards to
    (manifests/overlays/triton)."""
    model = {
        "modelFormat": {"name": "tensorflow"},
        "protocolVersion": "v2",
        "runtime": TRITON_RUNTIME,
        "storageUri": spec.storage_uri,
        "resources": spec.resources,
        "securityContext": SECURITY_CONTEXT,
    }
    predictor: dict = {"serviceAccountName": spec.service_account, "securityContext": POD_SECURITY_CONTEXT,
                       "labels": {MODEL_VERSION_LABEL: spec.model_version}, "model": model}
    if spec.canary_percent is not None:
        predictor["canaryTrafficPercent"] = int(spec.canary_percent)
    return predictor
