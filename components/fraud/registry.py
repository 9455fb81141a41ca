"""MLflow tracking and the `fraud-detector` model registry.

Local default: SQLite plus an artifact directory under a state dir; `MLFLOW_TRACKING_URI` (or an
explicit URI) points at a server instead. Alias `champion` is the rolled-out version, `challenger`
the canary.
"""
from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

REGISTERED_MODEL = "fraud-detector"
EXPERIMENT = "fraud-rollout"
CHAMPION, CHALLENGER = "champion", "challenger"


class NoTrackingServer(ValueError):
    """A step in a pod without an MLflow tracking URI: each pod would keep a registry of its own."""


def resolve_tracking_uri(explicit: str = "", state_dir: str | Path = ".fraud-rollout", *, in_pod: bool = False) -> str:
    """An explicit URI (the caller's `Settings().MLFLOW_TRACKING_URI` when no option gave one), else
    SQLite under `state_dir`; `in_pod` (a pipeline step on a cluster), NoTrackingServer: a SQLite file
    there dies with the pod, so a rerun would never find the champion."""
    if explicit:
        return explicit
    if in_pod:
        raise NoTrackingServer(
            "mlflow_tracking_uri is empty and this step runs in a pod, where a SQLite registry would die with "
            "it: set the pipeline parameter mlflow_tracking_uri to your MLflow server (docs/cluster.md, "
            "\"Requirements\")")
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
    from mlflow.exceptions import MlflowException

    try:
        return client.create_experiment(EXPERIMENT, artifact_location=location)
    except MlflowException:  # created concurrently by the other training task
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
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(REGISTERED_MODEL)
    except MlflowException:  # already registered (or concurrently): fine
        pass
    version = client.create_model_version(REGISTERED_MODEL, source=source, run_id=run.info.run_id, tags=tags)
    log.info("MLflow: run %s, registered %s version %s", run.info.run_id, REGISTERED_MODEL, version.version)
    return {"run_id": run.info.run_id, "registered_version": int(version.version), "source": source}


def set_alias(tracking_uri: str, alias: str, version: int) -> None:
    _, client = _client(tracking_uri)
    client.set_registered_model_alias(REGISTERED_MODEL, alias, str(version))
    log.info("MLflow: %s@%s = version %s", REGISTERED_MODEL, alias, version)


def delete_alias(tracking_uri: str, alias: str) -> None:
    from mlflow.exceptions import MlflowException

    _, client = _client(tracking_uri)
    try:
        client.delete_registered_model_alias(REGISTERED_MODEL, alias)
    except MlflowException as error:  # alias not set: nothing to clear
        log.info("MLflow: alias %s not cleared (%s)", alias, error)


def aliases(tracking_uri: str) -> dict[str, int]:
    """alias → registered version."""
    _, client = _client(tracking_uri)
    model = client.get_registered_model(REGISTERED_MODEL)
    return {alias: int(version) for alias, version in (model.aliases or {}).items()}


def find_version(tracking_uri: str, model_version: str, run_id: str = "") -> int | None:
    """The registered version of a model: the one logged by `run_id` if given, else the newest
    registered with the tag `model_version` (log_training's tags; "v1"/"v2" recur in every run, so
    a run id, where known, is the exact answer). None if the registry has none."""
    _, client = _client(tracking_uri)
    query = f"run_id = '{run_id}'" if run_id else f"tags.model_version = '{model_version}'"
    found = client.search_model_versions(f"name = '{REGISTERED_MODEL}' and {query}")
    return max((int(v.version) for v in found), default=None)


def champion(tracking_uri: str) -> int | None:
    """The registered version under alias `champion`, or None (no alias, or nothing registered yet)."""
    from mlflow.exceptions import MlflowException

    try:
        return aliases(tracking_uri).get(CHAMPION)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":  # a registry we cannot read is not "no champion"
            raise
        return None


def download_version(tracking_uri: str, version: int, destination: str | Path) -> dict:
    """Copy registered version `version`'s artifact (the exported model `log_training` logged)
    into `destination`; return its run id and source."""
    import shutil
    import tempfile

    from mlflow.artifacts import download_artifacts

    _, client = _client(tracking_uri)
    found = client.get_model_version(REGISTERED_MODEL, str(version))
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="champion-") as scratch:
        # download_artifacts puts a directory URI's files under <dst>/<its last path part>
        downloaded = Path(download_artifacts(artifact_uri=found.source, dst_path=scratch,
                                             tracking_uri=tracking_uri))
        shutil.copytree(downloaded, destination, dirs_exist_ok=True)
    log.info("MLflow: %s version %s (run %s) copied to %s", REGISTERED_MODEL, version, found.run_id, destination)
    return {"run_id": found.run_id, "registered_version": int(version), "source": found.source}


def set_version_tags(tracking_uri: str, version: int, tags: dict[str, str]) -> None:
    """Tags on one registered version (e.g. the rollout's decisions, `rollout.step.20 = advance`)."""
    _, client = _client(tracking_uri)
    for key, value in tags.items():
        client.set_model_version_tag(REGISTERED_MODEL, str(version), key, value)
