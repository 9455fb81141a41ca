"""MLflow's aliases follow the InferenceService (DESIGN decision 8): `champion` = the registered
version of the rolled-out model, `challenger` = the canary's. Moved here, once, after promote and
rollback on either target."""
from __future__ import annotations

from fraud import registry
from fraud.export import read_metadata

from fraud_control.local_state import local_artifact_path


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
