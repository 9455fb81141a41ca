"""The full-size run, shared: the story's tests and the same pipeline run in containers compare with it."""
import os

import pytest


@pytest.fixture(scope="session")
def full_run(tmp_path_factory):
    """The pipeline at its defaults (1,000,000 transactions, seed 7), in-process (SubprocessRunner)."""
    from fraud_pipelines.local import LocalRunOptions, run_local

    out = tmp_path_factory.mktemp("full")
    before = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        return run_local(LocalRunOptions(out_dir=out, serving_state_dir=out / "serving",
                                         mlflow_tracking_uri=f"sqlite:///{out / 'mlflow.db'}"))
    finally:  # mlflow.set_tracking_uri exports its URI: later tests' subprocesses must not inherit this run's
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before
