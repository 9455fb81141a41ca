"""`pipeline run --local --runner docker` off the happy path: an image podman does not have is
refused before any step, with one line that names it and the way on (`make images`)."""
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_a_missing_image_exits_2_naming_it_and_make_images(tmp_path):
    done = subprocess.run([sys.executable, "-m", "fraud_rollout", "pipeline", "run", "--local", "--runner", "docker",
                           "--image", "localhost/does-not-exist:1", "--out", str(tmp_path / "out"),
                           "--serving-state-dir", str(tmp_path / "serving")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "localhost/does-not-exist:1" in lines[0] and "make images" in lines[0], lines[0]
    assert not (tmp_path / "out" / "runs").exists()  # refused before a run began
