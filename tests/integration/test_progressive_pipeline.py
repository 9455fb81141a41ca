"""The `fraud-rollout-progressive` pipeline: its compiled DAG, and its compiled step run for real
under kfp.local on the local target (no InferenceService: one-line failure; a real local runtime
with live traffic and a candidate that flags everything: rolled back)."""
import subprocess
import sys

import pytest
import yaml
from fraud_pipelines.local import PipelineFailed
from fraud_pipelines.progressive import COMPILED, run_local

from tests.integration.test_rollout_local import bad_runtime, flags_everything, traffic  # noqa: F401

pytestmark = pytest.mark.integration


def test_pipeline_compile_writes_both_pipelines(tmp_path):
    result = subprocess.run([sys.executable, "-m", "fraud_rollout", "pipeline", "compile", "--out",
                             str(tmp_path / "fraud_rollout_pipeline.yaml")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"compiled {tmp_path / 'fraud_rollout_pipeline.yaml'}",
                                          f"compiled {tmp_path / 'fraud_rollout_progressive.yaml'}"]
    assert (tmp_path / "fraud_rollout_progressive.yaml").read_text() == COMPILED.read_text()


def test_one_uncached_step_on_our_image_with_the_ui_descriptions():
    """(Recompile-and-compare and the strict parse: test_pipeline.py, for both pipelines.)"""
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    documents = list(yaml.safe_load_all(COMPILED.read_text()))
    assert len(documents) == 1  # no platform spec: the step needs no Secret
    spec = json_format.ParseDict(documents[0], pipeline_spec_pb2.PipelineSpec())
    assert spec.pipeline_info.name == "fraud-rollout-progressive"
    assert set(spec.root.dag.tasks) == {"progressive-rollout"}
    task = spec.root.dag.tasks["progressive-rollout"]
    assert not task.caching_options.enable_cache  # DESIGN decision 11: a cached rollout would skip it
    executors = spec.deployment_spec["executors"]
    assert {e["container"]["image"] for e in executors.values()} == {"ghcr.io/fraud-rollout/components:0.1.0"}
    assert not any("pip install" in " ".join(e["container"]["command"]) for e in executors.values())
    parameters = spec.root.input_definitions.parameters
    assert parameters["target"].default_value.string_value == "kserve"
    assert parameters["plan"].default_value.string_value == "5,20,50,100"
    assert parameters["max_holds"].default_value.number_value == 3
    inputs = spec.components["comp-progressive-rollout"].input_definitions.parameters
    assert inputs["plan"].description == "canaryTrafficPercent steps, increasing, ending at 100 (the promotion)."
    outputs = spec.components["comp-progressive-rollout"].output_definitions
    assert set(outputs.artifacts) == {"report"} and set(outputs.parameters) == {"Output"}


def test_the_step_meets_no_inferenceservice_and_says_so_on_one_line(tmp_path):
    state_dir = tmp_path / "serving"
    with pytest.raises(PipelineFailed) as failed:
        run_local(tmp_path / "run", state_dir)
    message = str(failed.value)
    assert "\n" not in message
    assert message.startswith(
        f"task progressive-rollout failed: NotDeployed: InferenceService fraud-detector in {state_dir.resolve()} "
        "does not exist (deploy it first: the pipeline's deploy step or `fraud-rollout serve --baseline … "
        "--candidate …`)"), message


def test_a_bad_plan_fails_the_step_naming_the_parameter(tmp_path):
    with pytest.raises(PipelineFailed) as failed:
        run_local(tmp_path / "run", tmp_path / "serving", plan="5,20,50")
    assert str(failed.value).startswith("task progressive-rollout failed: RolloutStartError: plan '5,20,50': the "
                                        "last step must be 100 (the promotion)"), str(failed.value)


def test_the_compiled_step_rolls_back_a_candidate_that_flags_everything(bad_runtime, traffic, tmp_path):  # noqa: F811
    report = run_local(tmp_path / "run", bad_runtime.state_dir, window_seconds=1.0, min_requests=200, max_holds=1)
    state = report["rollout"]
    assert report["status"] == "rolled_back" == state["status"]
    assert [s["decision"] for s in state["steps"]][-1] == "rollback", state["steps"]
    assert all(s["percent"] == 5 for s in state["steps"]), state["steps"]
    v2 = state["steps"][-1]["evidence"]["versions"]["v2"]
    assert v2["flagged"] == v2["requests"] > 0  # every canary answer was "fraud"
    assert bad_runtime.service.get()["spec"]["predictor"]["canaryTrafficPercent"] == 0
