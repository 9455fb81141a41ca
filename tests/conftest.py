import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """Two real exported models (v1 on the reference window, v2 on recent) and their windows."""
    from tests.artifacts import build_tiny_run

    return build_tiny_run(tmp_path_factory.mktemp("tiny_run"))
