"""`fraud-rollout-progressive`: one step that rolls the deployed canary through the plan
(`canaryTrafficPercent` 5 → 20 → 50 → 100, or back to 0) on live evidence. A user schedules it as
a recurring run after the main pipeline has deployed a canary; a run with no canary fails at once
with a one-line reason. The committed YAML (`fraud_rollout_progressive.yaml`) is compiled with the
default image, and a test recompiles and compares it."""
import json
from pathlib import Path

from fraud_canary.progressive import RolloutPolicy
from fraud_control.rollout.controller import RolloutConfig
from fraud_kfp import DEFAULT_IMAGE, build
from kfp import dsl

from fraud_pipelines.containers import ComponentsImage

PIPELINE_NAME = "fraud-rollout-progressive"
POLICY = RolloutPolicy()
COMPILED = Path(__file__).resolve().parent.parent / "fraud_rollout_progressive.yaml"


def build_pipeline(image: str = DEFAULT_IMAGE):
    c = build(image)

    @dsl.pipeline(name=PIPELINE_NAME,
                  description="Step the fraud-detector's KServe canary through canaryTrafficPercent steps on live "
                              "evidence (errors, latency, score distribution, shadow pairs): advance, hold, promote "
                              "at 100 % or roll back to 0. Schedule it after the fraud-rollout pipeline deploys a canary.")
    def fraud_rollout_progressive(
        target: str = "kserve",
        namespace: str = "kubeflow-user-example-com",
        local_state_dir: str = ".fraud-rollout/serving",
        plan: str = ",".join(map(str, POLICY.plan)),
        window_seconds: float = 60.0,
        min_requests: int = 0,
        metrics_url: str = "",
        prometheus_url: str = "",
        max_holds: int = POLICY.max_holds,
        tracking_uri: str = "",
        timeout_seconds: float = RolloutConfig.timeout_s,
    ) -> str:
        # Never cached (DESIGN decision 11): each run acts on the cluster as it is now.
        rollout = c.progressive_rollout(
            target=target, namespace=namespace, local_state_dir=local_state_dir, plan=plan,
            window_seconds=window_seconds, min_requests=min_requests, metrics_url=metrics_url,
            prometheus_url=prometheus_url, max_holds=max_holds, tracking_uri=tracking_uri,
            timeout_seconds=timeout_seconds).set_display_name("progressive rollout").set_caching_options(False)
        return rollout.outputs["Output"]

    return fraud_rollout_progressive


def compile_pipeline(out: str | Path = COMPILED, image: str = DEFAULT_IMAGE) -> Path:
    from fraud_pipelines.pipeline import unpublished_note, write_compiled

    return write_compiled(build_pipeline(image), out, unpublished_note([image] if image == DEFAULT_IMAGE else []))


def run_local(run_dir: str | Path, local_state_dir: str | Path, components_image: ComponentsImage | None = None,
              **arguments) -> dict:
    """Execute the compiled YAML (not the Python function) with kfp.local on the local target, the
    step in-process or in `components_image`: the rollout report the step wrote. PipelineFailed names
    the failed task and its error."""
    from fraud_pipelines.console import PipelineConsole
    from fraud_pipelines.containers import steps_in_containers
    from fraud_pipelines.local import PIPELINE_YAML, execute_compiled

    run_dir = Path(run_dir).resolve()
    pipeline_yaml = compile_pipeline(run_dir / PIPELINE_YAML, components_image.image if components_image else DEFAULT_IMAGE)
    arguments = {"target": "local", "local_state_dir": str(Path(local_state_dir).resolve()), **arguments}
    with PipelineConsole(run_dir / "pipeline.log") as shown, \
            steps_in_containers(components_image, pipeline_yaml, run_dir / "kfp", run_dir, run_dir / "logs",
                                arguments) as steps:
        task = execute_compiled(shown, pipeline_yaml, run_dir, steps=steps, **arguments)
    reports = sorted((run_dir / "kfp").rglob("report"))
    return {"status": task.output, **json.loads(reports[-1].read_text())}
