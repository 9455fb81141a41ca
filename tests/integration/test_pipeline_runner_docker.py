"""`pipeline run --local --runner docker` off the happy path: an image podman does not have is
refused before any step, with one line that names it and the way on (`make images`); a step that
fails inside its container fails the run, naming the step, its error and its log."""
import subprocess
import sys
from pathlib import Path

import pytest
from fraud.container import STEP_LINE

from tests.integration.conftest import SMALL_DEMO

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


def test_a_step_that_fails_in_its_container_fails_the_run_naming_it_and_its_log(tmp_path):
    """kfp's DockerRunner reports a container podman already removed as SUCCESS: the run itself must
    see that the step wrote no outputs. Here the run targets a cluster this machine has none of (no
    kubeconfig in the container): the baseline step, which looks up the champion deployed there,
    fails inside its container with TargetUnavailable, after simulate-drift ran in the image."""
    from dataclasses import replace

    from fraud.pipeline_config import DEFAULTS
    from fraud_devcluster import images
    from fraud_pipelines.containers import ComponentsImage
    from fraud_pipelines.local import LocalRunOptions, PipelineFailed, run_local

    config = replace(DEFAULTS, n_transactions=int(SMALL_DEMO[1]), fraud_rate=float(SMALL_DEMO[3]))
    options = LocalRunOptions(out_dir=tmp_path / "out", config=config, serving_state_dir=tmp_path / "serving",
                              mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                              components_image=ComponentsImage(images.built_image("components"), images.podman_env()))
    with pytest.raises(PipelineFailed) as failed:
        run_local(options, deploy_target="kserve")
    message = str(failed.value)
    assert "\n" not in message and message.startswith(
        "task baseline-model failed in its container: TargetUnavailable: --target kserve: no usable kubeconfig"), message
    assert "outputs missing: executor_output.json" in message, message
    log = Path(message.split("its log: ")[1].split(";")[0].split(" ")[0])
    assert log.name == "baseline-model.log"
    assert (step := STEP_LINE.search(log.read_text())) and step["container"] != "none", log.read_text()[-2000:]
    assert log.read_text().rstrip().splitlines()[-1].startswith("fraud_control.inferenceservice.store.TargetUnavailable: ")
    ran = (log.parent / "simulate-drift.log").read_text()
    assert (step := STEP_LINE.search(ran)) and step["container"] != "none", ran[-2000:]


def test_the_progressive_step_runs_in_the_image_and_fails_on_one_line_without_a_canary(tmp_path):
    from fraud_devcluster import images
    from fraud_pipelines.containers import ComponentsImage
    from fraud_pipelines.local import PipelineFailed
    from fraud_pipelines.progressive import run_local

    state_dir = tmp_path / "serving"
    with pytest.raises(PipelineFailed) as failed:
        run_local(tmp_path / "run", state_dir, ComponentsImage(images.built_image("components"), images.podman_env()))
    message = str(failed.value)
    assert "\n" not in message
    assert message.startswith("task progressive-rollout failed in its container: NotDeployed: InferenceService "
                              f"fraud-detector in {state_dir.resolve()} does not exist"), message
    log = tmp_path / "run" / "logs" / "progressive-rollout.log"
    assert f"its log: {log}" in message
    assert (step := STEP_LINE.search(log.read_text())) and step["container"] != "none", log.read_text()[-2000:]
