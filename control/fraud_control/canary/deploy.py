"""The pipeline's deploy step: v2 out as a canary next to the rolled-out v1, on either target,
through the one `canary.deploy_canary`:

- `kserve`: both artifacts to S3 (MinIO), then the InferenceService through the cluster's API
  server (`kube_store.KubeStore`);
- `local`: the local state dir that `fraud-rollout serve` reads (`local_store.LocalStore`), with
  file paths as storage URIs.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fraud.artifact_store import S3Settings
from fraud.canary_percent import DEFAULT_CANARY_PERCENT
from fraud.settings import Settings

from fraud_control.canary.operations import (
    DEFAULT_POLL_S,
    DEFAULT_TIMEOUT_S,
    Rollout,
    deploy_canary,
)
from fraud_control.inferenceservice import isvc
from fraud_control.inferenceservice.isvc import IsvcSpec
from fraud_control.inferenceservice.local_state import DEFAULT_STATE_DIR
from fraud_control.inferenceservice.local_store import LocalStore

if TYPE_CHECKING:
    from kubernetes import client

TARGETS = ("kserve", "local")


def spec_for_artifact(artifact_root: str | Path, storage_uri: str, **fields: Any) -> IsvcSpec:
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
                          s3_settings: S3Settings, in_cluster: bool = False, kubeconfig: str | None = None,
                          context: str | None = None, prediction_log_url: str = "") -> Rollout:
    """The deploy step's whole cluster side: upload both exported models to S3 (content-addressed prefixes, so a rerun uploads to the same URIs),
    then `deploy_canary` in `namespace`. The client is `api`, else built from `kubeconfig` /
    `context`, else the pod's service account; it is built before uploading, so a missing
    kubeconfig fails before anything is written. `prediction_log_url`: the sink of KServe's payload
    logger on the transformer ("" none)."""
    from fraud.artifact_store import upload_artifact

    from fraud_control.inferenceservice.kube_store import KubeStore, custom_objects_api

    api = api or custom_objects_api(kubeconfig, context, in_cluster=in_cluster)
    champion = spec_for_artifact(champion_root, upload_artifact(champion_root, bucket, settings=s3_settings),
                                 namespace=namespace, image=image, prediction_log_url=prediction_log_url)
    candidate = spec_for_artifact(candidate_root, upload_artifact(candidate_root, bucket, settings=s3_settings),
                                  namespace=namespace, image=image, prediction_log_url=prediction_log_url)
    store = KubeStore(api, namespace, candidate.name)
    return deploy_canary(store, candidate, champion, canary_percent=canary_percent, supersede=supersede,
                         timeout_s=timeout_s, poll_s=poll_s)


def deploy(target: str, champion_root: str | Path, candidate_root: str | Path, *, namespace: str = "default",
           canary_percent: int = DEFAULT_CANARY_PERCENT, supersede: bool = False,
           state_dir: str | Path = DEFAULT_STATE_DIR, bucket: str = "fraud-models", image: str = isvc.DEFAULT_IMAGE,
           timeout_s: float = DEFAULT_TIMEOUT_S, settings: Settings,
           kubeconfig: str | None = None, context: str | None = None, prediction_log_url: str = "") -> Rollout:
    """Create the InferenceService with the champion if absent, then canary the candidate.
    `kubeconfig` / `context` (target kserve) default to `$KUBECONFIG`, else the pod's account.
    `prediction_log_url`: the prediction-log sink KServe's logger posts to ("" none)."""
    if target == "kserve":
        from fraud_control.inferenceservice.kube_store import custom_objects_api

        # the client first: a missing kubeconfig fails before the S3 settings are even read
        api = custom_objects_api(kubeconfig or settings.KUBECONFIG or None, context, in_cluster=settings.in_cluster)
        return deploy_from_artifacts(champion_root, candidate_root, namespace=namespace, bucket=bucket, image=image,
                                     canary_percent=canary_percent, supersede=supersede, timeout_s=timeout_s, api=api,
                                     s3_settings=S3Settings.from_env(settings.model_dump()),
                                     prediction_log_url=prediction_log_url)
    if target == "local":
        champion = spec_for_artifact(champion_root, str(Path(champion_root).resolve()), namespace=namespace,
                                     image=image, prediction_log_url=prediction_log_url)
        candidate = spec_for_artifact(candidate_root, str(Path(candidate_root).resolve()), namespace=namespace,
                                      image=image, prediction_log_url=prediction_log_url)
        return deploy_canary(LocalStore(state_dir, candidate.name), candidate, champion,
                             canary_percent=canary_percent, supersede=supersede, timeout_s=timeout_s)
    raise ValueError(f"deploy target must be one of {TARGETS}, got {target!r}")
