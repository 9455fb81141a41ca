"""MLflow's aliases follow the InferenceService (DESIGN decision 8): `champion` = the registered
version of the rolled-out model, `challenger` = the canary's. Moved here, once, after promote and
rollback on either target; and read here for a rerun's baseline (DESIGN decision 11)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from fraud import registry
from fraud.export import read_metadata

from fraud_control.inferenceservice.local_state import local_artifact_path
from fraud_control.inferenceservice.store import InferenceServiceStore, RolloutRefused
from fraud_control.inferenceservice.subject import subject_of

log = logging.getLogger(__name__)


def registered_version(tracking_uri: str, model: dict) -> int | None:
    """The registered version of `model` (modelVersion, storageUri): a local artifact's metadata
    names its MLflow run; a remote one is found by its model version tag in the registry."""
    path = local_artifact_path(model.get("storageUri", ""))
    run_id = ""
    if path is not None:
        try:
            run_id = read_metadata(path).get("mlflow", {}).get("run_id", "")
        except (FileNotFoundError, ValueError, KeyError):  # not an exported artifact: use the tag
            run_id = ""
    if not run_id and not model.get("modelVersion"):
        return None
    return registry.find_version(tracking_uri, model.get("modelVersion", ""), run_id)


def after_promote(tracking_uri: str, canary: dict) -> str:
    """champion = the promoted canary's registered version (else the challenger's), challenger cleared."""
    current = registry.aliases(tracking_uri)
    version = registered_version(tracking_uri, canary) or current.get(registry.CHALLENGER)
    if version is None:
        return (f"MLflow: no registered version of {canary.get('modelVersion') or '?'} and no "
                f"{registry.CHALLENGER} alias; aliases unchanged ({current})")
    registry.set_alias(tracking_uri, registry.CHAMPION, version)
    registry.delete_alias(tracking_uri, registry.CHALLENGER)
    return f"MLflow: {registry.CHAMPION} = version {version}, {registry.CHALLENGER} cleared"


def after_rollback(tracking_uri: str, rolled_out: dict) -> str:
    """challenger cleared; champion = the registered version of the model rolled out now."""
    current = registry.aliases(tracking_uri)
    registry.delete_alias(tracking_uri, registry.CHALLENGER)
    version = registered_version(tracking_uri, rolled_out)
    if version is None or version == current.get(registry.CHAMPION):
        return (f"MLflow: {registry.CHALLENGER} cleared, {registry.CHAMPION} stays "
                f"{current.get(registry.CHAMPION, '(unset)')}")
    registry.set_alias(tracking_uri, registry.CHAMPION, version)
    return (f"MLflow: {registry.CHALLENGER} cleared, {registry.CHAMPION} = version {version} "
            f"(the rolled-out {rolled_out.get('modelVersion')})")


@dataclass(frozen=True)
class Champion:
    """The registered version a rerun gates against, and how it was found."""

    registry_version: int
    found_by: str  # "rolled-out model of <where>" or "alias champion"
    alias_version: int | None  # the `champion` alias, for the cross-check


def choose_champion(rolled_out: int | None, alias: int | None, where: str) -> Champion | None:
    """The deployed rolled-out model's version wins: it is what serves, and the canary will run next
    to it. The `champion` alias counts only when nothing is deployed. None: bootstrap (train v1)."""
    if rolled_out is not None:
        if alias is not None and alias != rolled_out:
            log.warning("MLflow %s@%s is version %s, but %s rolls out version %s: gating against the "
                        "rolled-out one", registry.REGISTERED_MODEL, registry.CHAMPION, alias, where, rolled_out)
        return Champion(rolled_out, f"rolled-out model of {where}", alias)
    if alias is not None:
        return Champion(alias, f"alias {registry.CHAMPION}", alias)
    return None


def deployed_champion(store: InferenceServiceStore, tracking_uri: str) -> Champion | None:
    """The champion of the InferenceService in `store` (its rolled-out model, recorded in the
    rolled-out annotation during a canary), else MLflow's `champion` alias, else None. RolloutRefused
    when the registry does not know the rolled-out model."""
    obj = store.get()
    rolled_out = None
    if obj is not None:
        model = subject_of(obj, store.where).rolled_out_model
        rolled_out = registered_version(tracking_uri, model) if model.get("storageUri") else None
        if rolled_out is None:  # fail closed: any other baseline is not what the canary runs next to
            raise RolloutRefused(
                f"{store.where} rolls out {model.get('modelVersion') or '?'} ({model.get('storageUri') or '?'}), "
                f"which the MLflow registry at {tracking_uri} does not know, so a rerun cannot gate against it; "
                "use the registry it was registered in (--mlflow-tracking-uri) or another serving state dir")
    return choose_champion(rolled_out, registry.champion(tracking_uri), store.where)


def champion_store(target: str, namespace: str, state_dir: str | Path, in_cluster: bool) -> InferenceServiceStore:
    """Where the deploy step of `target` ("kserve" | "local") keeps the InferenceService."""
    if target == "local":
        from fraud_control.inferenceservice.local_store import LocalStore

        return LocalStore(state_dir)
    if target == "kserve":
        from fraud_control.inferenceservice.kube_store import KubeStore, custom_objects_api

        return KubeStore(custom_objects_api(in_cluster=in_cluster), namespace)
    raise ValueError(f"deploy target must be 'kserve' or 'local', got {target!r}")


def champion_for(baseline_from: str, target: str, namespace: str, state_dir: str | Path, tracking_uri: str,
                 in_cluster: bool) -> Champion | None:
    """The baseline step's choice: `deployed_champion` of the target's InferenceService when
    `baseline_from` is "champion", None (train v1) when it is "train"."""
    if baseline_from == "train":
        return None
    if baseline_from != "champion":
        raise ValueError(f"baseline_from must be 'champion' or 'train', got {baseline_from!r}")
    return deployed_champion(champion_store(target, namespace, state_dir, in_cluster), tracking_uri)
