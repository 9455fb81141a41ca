"""serving/Dockerfile cannot be built here; check what can be checked without a daemon (the package set
itself is proven by tests/integration/test_serving_venv.py)."""
from __future__ import annotations

import tomllib

from fraud_control import isvc
from fraud_serving.__main__ import build_parser

from tests.serving_image import LOCK, REPO, copies, instructions

#: Not in the serving image: the pipeline, the tracking server, the test tools.
NOT_SERVING = ("kfp", "kfp-kubernetes", "mlflow", "minio", "matplotlib", "pytest", "ruff", "mypy",
               "import-linter", "nbclient", "ipykernel")


def test_image_runs_the_entry_point_as_the_manifests_user():
    steps = instructions()
    assert steps[0] == ("FROM", "python:3.11-slim")
    users = [rest for keyword, rest in steps if keyword == "USER"]
    assert users == [str(isvc.SECURITY_CONTEXT["runAsUser"])]
    entrypoint = [rest for keyword, rest in steps if keyword == "ENTRYPOINT"]
    assert entrypoint == ['["python", "-m", "fraud_serving"]']


def test_image_installs_the_serving_lock_then_only_the_core_and_the_data_plane():
    assert copies() == [("serving/requirements.lock", "./"), ("serving/pyproject.toml", "./pyproject.toml"),
                        ("components/fraud", "./components/fraud"),
                        ("serving/fraud_serving", "./serving/fraud_serving")]
    for source, _ in copies():
        assert (REPO / source).exists(), source
    runs = [rest for keyword, rest in instructions() if keyword == "RUN"]
    assert runs[0] == "pip install --no-deps -r requirements.lock"  # the lock is complete: pins every package
    assert runs[1].startswith("pip install --no-deps . && ")
    project = tomllib.loads((REPO / "serving" / "pyproject.toml").read_text())
    assert project["tool"]["setuptools"]["packages"] == ["fraud", "fraud_serving"]
    assert project["tool"]["setuptools"]["package-dir"] == {"fraud": "components/fraud",
                                                            "fraud_serving": "serving/fraud_serving"}
    assert "dependencies" not in project["project"]  # pinned by the lock, not restated


def test_serving_lock_holds_no_pipeline_tracking_or_test_tool():
    pinned = {line.split("==")[0].lower() for line in LOCK.read_text().splitlines() if "==" in line
              and not line.startswith((" ", "#"))}
    assert {"kserve", "tensorflow-cpu", "pydantic-settings", "aiohttp", "httpx"} <= pinned
    assert not pinned & set(NOT_SERVING), pinned & set(NOT_SERVING)


def test_container_args_in_the_manifest_select_a_role():
    manifest = isvc.inference_service(isvc.IsvcSpec(storage_uri="s3://m/v1", model_version="v1", contract_id="c"))
    for component in ("predictor", "transformer"):
        args = manifest["spec"][component]["containers"][0]["args"]
        assert build_parser().parse_args(args).role == component
