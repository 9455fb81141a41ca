"""A real MLflow registry on a SQLite file in a test's directory, as `log_training` leaves it."""
from __future__ import annotations

from pathlib import Path

from fraud import registry


def registry_with_v1_and_v2(directory: Path) -> str:
    """Versions 1 and 2 of the registered model, tagged `model_version` v1 and v2; the tracking URI."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{directory / 'mlflow.db'}"
    client = MlflowClient(uri)
    client.create_registered_model(registry.REGISTERED_MODEL)
    (directory / "model").mkdir(exist_ok=True)
    for version in ("v1", "v2"):
        client.create_model_version(registry.REGISTERED_MODEL, source=(directory / "model").as_uri(),
                                    tags={"model_version": version})
    return uri
