"""The images `make images` built (podman, on the Debian base made here), read as a user's cluster
would run them: both run as uid 1000, the serving image holds the data plane and nothing above it,
no credential is inside, and a rebuild with unchanged inputs builds nothing."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from fraud_control.inferenceservice import isvc
from fraud_devcluster import images

pytestmark = pytest.mark.integration
#: Not in the serving image: the layers above the data plane, the pipeline, the tracking server, test and build tools.
NOT_SERVING = ("fraud-rollout", "kfp", "kfp-kubernetes", "mlflow", "minio", "matplotlib", "pytest", "ruff", "mypy",
               "import-linter", "pip", "uv")


@pytest.fixture(scope="module")
def built() -> dict:
    return json.loads(images.BUILT.read_text())["images"]


def run(tag: str, *args: str, entrypoint: str | None = None) -> subprocess.CompletedProcess:
    command = ["podman", "run", "--rm", "--network", "none", *(["--entrypoint", entrypoint] if entrypoint else []),
               tag, *args]
    return subprocess.run(command, capture_output=True, text=True, env=images.podman_env(), timeout=300, check=False)


def test_both_images_run_as_the_manifests_user_and_hold_no_credentials(built):
    assert set(built) == {"components", "serving"}
    recorded = json.loads(images.BUILT.read_text())
    for image in images.IMAGES:
        record = built[image.name]
        assert record["image"] == images.image_tag(image, recorded["base"], recorded["registry"])  # the tag names the inputs it was built from
        assert (record["user"], record["uid"]) == ("1000", isvc.SECURITY_CONTEXT["runAsUser"])
        assert record["secrets"] == [], record["secrets"]
        assert images.exists(record["image"])


def test_the_serving_image_holds_the_data_plane_and_nothing_above_it(built):
    packages = built["serving"]["packages"]
    assert {"kserve", "tensorflow-cpu", "fraud-rollout-serving"} <= set(packages)
    assert not set(NOT_SERVING) & set(packages), set(NOT_SERVING) & set(packages)
    tag = built["serving"]["image"]
    above = run(tag, "-c", "import fraud_control", entrypoint="python3")
    assert above.returncode == 1 and "No module named 'fraud_control'" in above.stderr
    for role in ("predictor", "transformer"):
        help_text = run(tag, role, "--help")
        assert help_text.returncode == 0, help_text.stderr
        assert help_text.stdout.startswith(f"usage: python -m fraud_serving {role}")


def test_the_components_image_runs_kfps_executor_and_the_cli(built):
    tag = built["components"]["image"]
    assert {"kfp", "fraud-rollout", "mlflow", "psycopg"} <= set(built["components"]["packages"])
    executor = run(tag, "-c", "import kfp.dsl.executor_main, fraud_kfp.components; print('ok')", entrypoint="python3")
    assert (executor.returncode, executor.stdout) == (0, "ok\n"), executor.stderr
    cli = run(tag, "--help", entrypoint="fraud-rollout")
    assert cli.returncode == 0 and cli.stdout.startswith("usage: fraud-rollout"), cli.stderr


def test_a_second_make_images_builds_nothing(built):
    registry = json.loads(images.BUILT.read_text())["registry"]
    again = subprocess.run([sys.executable, "-m", "fraud_devcluster.images", "--registry", registry, "--json"],
                           capture_output=True, text=True, timeout=900, check=False)
    assert again.returncode == 0, again.stderr
    rebuilt = json.loads(again.stdout)
    assert {name: (r["image"], r["built"]) for name, r in rebuilt.items()} == \
        {name: (r["image"], False) for name, r in built.items()}
