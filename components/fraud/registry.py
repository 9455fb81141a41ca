"""MLflow tracking and the `fraud-detector` model registry.

Local default: SQLite plus an artifact directory under a state dir; `MLFLOW_TRACKING_URI` (or an
explicit URI) points at a server instead. Alias `champion` is the rolled-out version, `challenger`
the canary.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

REGISTERED_MODEL = "fraud-detector"
EXPERIMENT = "fraud-rollout"
CHAMPION, CHALLENGER = "champion", "challenger"


def resolve_tracking_uri(explicit: str = "", state_dir: str | Path = ".fraud-rollout") -> str:
    """An explicit URI, else `MLFLOW_TRACKING_URI`, else SQLite under `state_dir`."""
    if explicit:
        return explicit
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    path = Path(state_dir).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / 'mlflow.db'}"


def _client(tracking_uri: str):
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    return mlflow, MlflowClient(tracking_uri)


def _experiment_id(mlflow, client, tracking_uri: str) -> str:
    found = client.get_experiment_by_name(EXPERIMENT)
    if found:
        return found.experiment_id
    location = None
    if tracking_uri.startswith("sqlite:///"):  # keep local artifacts beside the database
        location = Path(tracking_uri.removeprefix("sqlite:///")).parent.joinpath("mlartifacts").as_uri()
    try:
        return client.create_experiment(EXPERIMENT, artifact_location=location)
    except Exception:  # created concurrently by the other training task
        return client.get_experiment_by_name(EXPERIMENT).experiment_id


def log_training(tracking_uri: str, *, run_name: str, params: dict, history: dict[str, list[float]],
                 metrics: dict[str, float], artifact_root: str | Path, tags: dict[str, str]) -> dict:
    """Log one training run (params, per-epoch metrics, final metrics, the exported artifact) and
    register it as a new version of `fraud-detector`. Returns run id and registered version."""
    mlflow, client = _client(tracking_uri)
    experiment_id = _experiment_id(mlflow, client, tracking_uri)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        mlflow.log_params(params)
        for epoch in range(max((len(v) for v in history.values()), default=0)):
            mlflow.log_metrics({f"epoch_{k}": v[epoch] for k, v in history.items() if epoch < len(v)}, step=epoch)
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        mlflow.set_tags(tags)
        mlflow.log_artifacts(str(artifact_root), artifact_path="model")
        source = f"{run.info.artifact_uri}/model"
    try:
        client.create_registered_model(REGISTERED_MODEL)
    except Exception:  # already registered (or concurrently): fine
        pass
    version = client.create_model_version(REGISTERED_MODEL, source=source, run_id=run.info.run_id, tags=tags)
    log.info("MLflow: run %s, registered %s version %s", run.info.run_id, REGISTERED_MODEL, version.version)
    return {"run_id": run.info.run_id, "registered_version": int(version.version), "source": source}


def set_alias(tracking_uri: str, alias: str, version: int) -> None:
    _, client = _client(tracking_uri)
    client.set_registered_model_alias(REGISTERED_MODEL, alias, str(version))
    log.info("MLflow: %s@%s = version %s", REGISTERED_MODEL, alias, version)


def delete_alias(tracking_uri: str, alias: str) -> None:
    _, client = _client(tracking_uri)
    try:
        client.delete_registered_model_alias(REGISTERED_MODEL, alias)
    except Exception as error:  # alias not set: nothing to clear
        log.info("MLflow: alias %s not cleared (%s)", alias, error)


def aliases(tracking_uri: str) -> dict[str, int]:
    """alias → registered version."""
    _, client = _client(tracking_uri)
    model = client.get_registered_model(REGISTERED_MODEL)
    return {alias: int(version) for alias, version in (model.aliases or {}).items()}
