import os

import pytest

# The real control plane's fixtures (one cluster per session) and the deployed canary on it;
# PostgreSQL for the prediction store.
pytest_plugins = ["tests.cluster_fixtures", "tests.integration.kube_fixtures", "tests.postgres_fixtures"]

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """Two real exported models (v1 on the reference window, v2 on recent) and their windows."""
    from tests.artifacts import build_tiny_run

    return build_tiny_run(tmp_path_factory.mktemp("tiny_run"))
