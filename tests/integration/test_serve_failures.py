"""`fraud-rollout serve` off the happy path with real servers: a predictor that cannot load its artifact ends
`serve` with one error line naming the cause and the log, and leaves no runtime report behind."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from fraud.export import MODEL_NAME, SAVEDMODEL_DIR
from fraud.processes import free_port
from fraud_control.local_runtime.runtime import LOCK_FILE, read_runtime

from tests.integration.serving_fixtures import FRAUD_ROLLOUT

pytestmark = pytest.mark.integration


def test_a_predictor_that_cannot_load_ends_serve_with_one_line(tiny_run, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_run.v1, broken)
    (broken / MODEL_NAME / "1" / SAVEDMODEL_DIR / "saved_model.pb").unlink()
    state_dir, port = tmp_path / "state", free_port()
    result = subprocess.run([*FRAUD_ROLLOUT, "serve", "--state-dir", str(state_dir), "--baseline", str(broken),
                             "--http-port", str(port)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower() and " INFO " not in line]
    saved_model = broken / MODEL_NAME / "1" / SAVEDMODEL_DIR
    assert len(errors) == 1 and re.fullmatch(
        rf"fraud-rollout serve: error: predictor on port \d+ exited with 1 \(OSError: SavedModel file does not exist "
        rf"at: {re.escape(str(saved_model))}/\{{saved_model.pbtxt\|saved_model.pb\}}\); full log: "
        rf"{re.escape(str(state_dir / 'logs'))}/fraud-detector-predictor-00001-\d+\.log", errors[0]), result.stderr
    assert "Traceback" not in result.stderr
    assert read_runtime(state_dir) == {}
    assert not (state_dir / "routes.json").exists() and not (state_dir / "runtime.json").exists()
    assert (state_dir / LOCK_FILE).exists()  # the lock file stays; its flock went with the process
