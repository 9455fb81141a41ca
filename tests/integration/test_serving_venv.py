"""The serving image's package set is enough to serve: a venv built from serving/requirements.lock plus the
project installed with --no-deps from the Dockerfile's own build layout (fraud + fraud_serving only) runs
the predictor and the transformer, outside the repository, and answers v2 correctly.

The venv is cached under .fraud-rollout/cache/serving-venv/<hash of the lock>: uv's cache makes the first
build take about a minute, a rerun only reinstalls the project (seconds).
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from fraud.export import SignatureScorer
from fraud.schema import FEATURES
from fraud_control.processes import start_predictor, start_transformer, stop_all
from fraud_serving.scoring import TOLERANCE

from tests.integration.serving_fixtures import v2_json
from tests.serving_image import LOCK, REPO, stage_build_directory

pytestmark = pytest.mark.integration
UV = str(Path(sys.executable).with_name("uv"))
#: Packages the image must not hold (what the lock leaves out, and the layers above the data plane).
ABSENT = ("fraud_control", "fraud_kfp", "fraud_pipelines", "fraud_rollout", "fraud_canary", "kfp", "mlflow",
          "minio", "matplotlib", "pytest")


def run(*command: str, cwd: Path | None = None) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=cwd)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def serving_venv(tmp_path_factory) -> Path:
    """The venv's python: the lock synced (cached by its hash), the project installed as the image does."""
    venv = REPO / ".fraud-rollout" / "cache" / "serving-venv" / hashlib.sha256(LOCK.read_bytes()).hexdigest()[:16]
    python = venv / "bin" / "python"
    if not (venv / ".synced").exists():
        run(UV, "venv", "-q", "--clear", "--python", sys.executable, str(venv))
        run(UV, "pip", "sync", "-q", "--compile-bytecode", "--python", str(python), str(LOCK))
        (venv / ".synced").touch()
    build = stage_build_directory(tmp_path_factory.mktemp("serving-image") / "opt-fraud-rollout")
    # setuptools and wheel are in the lock, so the build needs nothing more from outside
    run(UV, "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--reinstall", "--compile-bytecode",
        "--python", str(python), str(build))
    return python


def test_the_image_package_set_holds_the_core_and_the_data_plane_only(serving_venv, tmp_path):
    probe = ("import importlib.util, json, sys; print(json.dumps({name: getattr(importlib.util.find_spec(name), "
             "'origin', None) for name in sys.argv[1:]}))")
    found = json.loads(run(str(serving_venv), "-c", probe, "fraud", "fraud_serving", *ABSENT, cwd=tmp_path))
    venv = serving_venv.parents[1]
    assert Path(found.pop("fraud")).is_relative_to(venv)
    assert Path(found.pop("fraud_serving")).is_relative_to(venv)
    assert found == dict.fromkeys(ABSENT)


def test_predictor_and_transformer_from_the_image_package_set_answer_v2(serving_venv, tiny_run, tmp_path):
    raw = tiny_run.windows["holdout"].loc[:, list(FEATURES)].to_numpy(dtype=np.float64)[:50]
    expected = SignatureScorer(tiny_run.v1)(tiny_run.contract.transform(raw))
    logs = tmp_path / "logs"
    predictor = start_predictor(tiny_run.v1, logs, python=str(serving_venv), cwd=tmp_path)
    transformer = start_transformer(tiny_run.v1, logs, predictor_url=predictor.url, python=str(serving_venv),
                                    cwd=tmp_path)
    try:
        predictor.wait_ready()
        transformer.wait_ready()
        response = httpx.post(transformer.infer_url, content=v2_json(raw),
                              headers={"content-type": "application/json"}, timeout=60)
    finally:
        stop_all([transformer, predictor])
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model_name"], body["model_version"]) == ("fraud-detector", "v1")
    outputs = {output["name"]: output["data"] for output in body["outputs"]}
    np.testing.assert_allclose(outputs["fraud_probability"], expected["fraud_probability"], atol=TOLERANCE, rtol=0)
    np.testing.assert_array_equal(outputs["is_fraud"], expected["is_fraud"])
    assert str(serving_venv) in predictor.args[0] and str(serving_venv) in transformer.args[0]
