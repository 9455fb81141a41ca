"""The full-size run, shared: the story's tests and the same pipeline run in containers compare with it."""
import pytest


@pytest.fixture(scope="session")
def full_run(tmp_path_factory):
    """The pipeline at its defaults (1,000,000 transactions, seed 7), in-process (SubprocessRunner)."""
    from fraud_pipelines.local import LocalRunOptions, run_local

    out = tmp_path_factory.mktemp("full")
    return run_local(LocalRunOptions(out_dir=out, serving_state_dir=out / "serving",
                                     mlflow_tracking_uri=f"sqlite:///{out / 'mlflow.db'}"))
