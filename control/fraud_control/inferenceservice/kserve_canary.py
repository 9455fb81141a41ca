"""The reference InferenceService manifest (manifests/inferenceservice/inferenceservice.yaml).

The canary operations live in `fraud_control.canary.operations` (over `kube_store` or `local_store`); this
module keeps only the reference manifest, whose generated header names it.
"""
from __future__ import annotations

from fraud_control.inferenceservice import isvc
from fraud_control.inferenceservice.isvc import IsvcSpec

#: The inputs of manifests/inferenceservice/inferenceservice.yaml: tests keep that file equal to
#: `manifest_yaml(BASE_MANIFEST_SPEC)` and to what `kubectl kustomize` renders. A real deploy
#: takes the storage URI and contract id from the uploaded artifact (`spec_for_artifact`).
BASE_MANIFEST_SPEC = IsvcSpec(storage_uri="s3://fraud-models/fraud-detector/v1", model_version="v1",
                              contract_id="REPLACE-WITH-FEATURE-CONTRACT-ID", namespace="fraud-rollout",
                              prediction_log_url=isvc.prediction_log_url("fraud-rollout"))
MANIFEST_HEADER = """\
# Generated: the InferenceService the deploy step creates for v1, from
# fraud_control.inferenceservice.isvc.inference_service(kserve_canary.BASE_MANIFEST_SPEC). Do not edit; regenerate with
#   python -c 'from fraud_control.inferenceservice.kserve_canary import manifest_yaml; print(manifest_yaml(), end="")' \\
#     > manifests/inferenceservice/inferenceservice.yaml
"""


def manifest_yaml(spec: IsvcSpec = BASE_MANIFEST_SPEC) -> str:
    """The InferenceService the deploy step creates for `spec`, as YAML for kustomize's base."""
    import json

    import yaml

    plain = json.loads(json.dumps(isvc.inference_service(spec)))  # no shared dicts, so no YAML anchors
    return MANIFEST_HEADER + yaml.safe_dump(plain, sort_keys=False, width=120)
