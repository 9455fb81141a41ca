"""Where a step keeps its MLflow registry."""
import pytest


def test_a_step_in_a_pod_without_a_tracking_uri_fails_naming_the_parameter(tmp_path):
    """On a cluster each step's SQLite fallback would die with its pod (a rerun never finds the
    champion): a step there refuses at once, naming the parameter."""
    from fraud.registry import NoTrackingServer, resolve_tracking_uri

    with pytest.raises(NoTrackingServer) as refused:
        resolve_tracking_uri("", tmp_path, in_pod=True)
    assert str(refused.value) == (
        "mlflow_tracking_uri is empty and this step runs in a pod, where a SQLite registry would die with it: set "
        "the pipeline parameter mlflow_tracking_uri to your MLflow server (docs/cluster.md, \"Requirements\")")
    assert list(tmp_path.iterdir()) == []
    assert resolve_tracking_uri("", tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert resolve_tracking_uri("http://mlflow:5000", tmp_path, in_pod=True) == "http://mlflow:5000"
