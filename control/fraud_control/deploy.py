"""The pipeline's deploy step: v2 out as a canary next to the rolled-out v1, on either target.

- `kserve`: both artifacts to S3 (MinIO), then `kserve_canary.deploy_canary` through the cluster's
  API server.
- `local`: the same `deploy_canary` against the local state dir that `fraud-rollout serve` reads,
  with file paths as storage URIs. `LocalCustomObjects` answers the three CustomObjectsApi calls
  deploy_canary makes from `LocalInferenceService`, so create-then-canary, idempotency and every
  refusal are one implementation for both targets.
"""
from __future__ import annotations

from pathlib import Path

from fraud_control import isvc, kserve_canary
from fraud_control.local_state import DEFAULT_STATE_DIR, LocalInferenceService

TARGETS = ("kserve", "local")


class LocalCustomObjects:
    """The subset of `kubernetes.client.CustomObjectsApi` that deploy_canary uses, on the local
    state dir (one InferenceService; a missing one is a 404 like the API server's)."""

    def __init__(self, state_dir: str | Path = DEFAULT_STATE_DIR) -> None:
        self.service = LocalInferenceService(state_dir)

    def get_namespaced_custom_object(self, group, version, namespace, plural, name, **_):
        if not self.service.exists() or self.service.get()["metadata"]["name"] != name:
            from kubernetes.client.exceptions import ApiException

            raise ApiException(status=404, reason="Not Found")
        return self.service.get()

    def create_namespaced_custom_object(self, group, version, namespace, plural, body, **_):
        return self.service.create(body)

    def patch_namespaced_custom_object(self, group, version, namespace, plural, name, body, **_):
        return self.service.patch_merge(body)


def deploy(target: str, champion_root: str | Path, candidate_root: str | Path, *, namespace: str = "default",
           canary_percent: int = kserve_canary.DEFAULT_CANARY_PERCENT, supersede: bool = False,
           state_dir: str | Path = DEFAULT_STATE_DIR, bucket: str = "fraud-models", image: str = isvc.DEFAULT_IMAGE,
           timeout_s: float = kserve_canary.DEFAULT_TIMEOUT_S) -> kserve_canary.Rollout:
    """Create the InferenceService with the champion if absent, then canary the candidate."""
    if target == "kserve":
        return kserve_canary.deploy_from_artifacts(champion_root, candidate_root, namespace=namespace, bucket=bucket,
                                                   image=image, canary_percent=canary_percent, supersede=supersede,
                                                   timeout_s=timeout_s)
    if target == "local":
        champion = kserve_canary.spec_for_artifact(champion_root, str(Path(champion_root).resolve()),
                                                   namespace=namespace, image=image)
        candidate = kserve_canary.spec_for_artifact(candidate_root, str(Path(candidate_root).resolve()),
                                                    namespace=namespace, image=image)
        return kserve_canary.deploy_canary(LocalCustomObjects(state_dir), candidate, champion,
                                           canary_percent=canary_percent, supersede=supersede, timeout_s=timeout_s,
                                           poll_s=0.2)
    raise ValueError(f"deploy target must be one of {TARGETS}, got {target!r}")
