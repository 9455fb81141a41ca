"""Run the pipeline on this machine with `kfp.local` and write `report.json`: by default with the
SubprocessRunner (no virtualenv: the components import this package from the current environment),
or each step in the components image (`LocalRunOptions.components_image`, `fraud_pipelines.containers`).

A rerun is a cluster's rerun: its baseline is the champion the serving state dir rolls out (else
MLflow's `champion`), and its deploy step canaries the new candidate next to it; a canary still
running there is refused unless superseded, as KServe's would be.

Each run writes its artifacts into `<out>/runs/<UTC time>/` and never deletes one that a manifest
in a known serving state dir references (a running `serve` keeps its models); `<out>/report.json`
is the latest run's report."""
from __future__ import annotations

import json
import logging
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from fraud import registry
from fraud.files import read_json, write_json
from fraud.pipeline_config import DEFAULTS, PipelineConfig
from fraud_control.inferenceservice.local_state import DEFAULT_STATE_DIR as SERVING_STATE_DIR

from fraud_pipelines.console import PipelineConsole
from fraud_pipelines.containers import ComponentsImage, StepContainers, StepUnproven, steps_in_containers

log = logging.getLogger(__name__)
STATE_DIR = Path(".fraud-rollout")
#: The demo's own serving state, so a demo never meets a `pipeline run`'s canary.
DEMO_SERVING_STATE_DIR = STATE_DIR / "demo" / "serving"
#: Earlier runs kept besides any a manifest in a known state dir references.
KEEP_RUNS = 3
#: The compiled pipeline a run executes, in its run dir.
PIPELINE_YAML = "pipeline.yaml"


@dataclass(frozen=True)
class LocalRunOptions:
    """A local run: where it writes, and the pipeline parameters (defaults from `PipelineConfig`)."""

    out_dir: Path = STATE_DIR / "run"
    config: PipelineConfig = DEFAULTS
    source_csv: str = ""
    mlflow_tracking_uri: str = ""
    #: Where the deploy step (target local) writes the InferenceService that `fraud-rollout serve` reads.
    serving_state_dir: Path = SERVING_STATE_DIR
    #: Replace a canary of an earlier run that a running `serve` still splits traffic to (KServe: supersede).
    supersede_canary: bool = False
    #: Run each step in this image (kfp.local's DockerRunner on podman); None: in-process subprocesses.
    components_image: ComponentsImage | None = None


class PipelineFailed(RuntimeError):
    """A pipeline task failed; the message names it, its error and the log file."""


class RunRefused(RuntimeError):
    """The run cannot deploy its canary, known before any step runs; nothing was touched."""


def preflight_deploy(options: LocalRunOptions) -> None:
    """Refuse a run whose deploy step would be refused: an earlier run's canary still splits traffic
    in the state dir (the deploy step checks again; this saves the training and keeps the report of
    the run whose canary that is)."""
    from fraud_control.canary.operations import running_canary
    from fraud_control.inferenceservice.local_state import LocalInferenceService

    service = LocalInferenceService(options.serving_state_dir)
    running = None if options.supersede_canary or not service.exists() else running_canary(service.get())
    if running is not None:
        model, percent = running
        raise RunRefused(
            f"a canary of {model} is already running at {percent} % in {options.serving_state_dir}; promote it or "
            f"roll it back first (fraud-rollout canary promote|rollback --state-dir {options.serving_state_dir}), "
            "or replace it with this run's candidate: --supersede")


def known_state_dirs(options: LocalRunOptions) -> list[Path]:
    """Serving state dirs whose manifests keep a run's artifacts: this run's and the two defaults
    (`pipeline run` / `serve`, and the demo's)."""
    return [Path(d).resolve() for d in {options.serving_state_dir, SERVING_STATE_DIR, DEMO_SERVING_STATE_DIR}]


def _serves_from(state_dir: Path, directory: Path) -> bool:
    """Does the InferenceService in `state_dir` serve an artifact under `directory`?"""
    from fraud_control.inferenceservice.local_state import LocalInferenceService

    service = LocalInferenceService(state_dir)
    return service.exists() and f"{directory.resolve()}/" in json.dumps([service.get(), service.revisions()])


def new_run_dir(runs_dir: Path) -> Path:
    """`runs/<UTC time>`: every run writes its artifacts into a directory of its own."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    runs_dir.mkdir(parents=True, exist_ok=True)
    for suffix in ("", *(f"-{i}" for i in range(2, 100))):
        try:
            (runs_dir / f"{stamp}{suffix}").mkdir()
        except FileExistsError:
            continue
        return runs_dir / f"{stamp}{suffix}"
    raise PipelineFailed(f"more than 99 runs started in {runs_dir} within one second")


def prune_runs(runs_dir: Path, current: Path, state_dirs: list[Path], keep: int = KEEP_RUNS) -> list[Path]:
    """Delete runs older than the newest `keep` (the current one counted) that no manifest in
    `state_dirs` references; return them, oldest first."""
    earlier = sorted(d for d in runs_dir.iterdir() if d.is_dir() and d != current)
    older = earlier[:max(0, len(earlier) - (keep - 1))]
    removed = [d for d in older if not any(_serves_from(state_dir, d) for state_dir in state_dirs)]
    for run_dir in removed:
        shutil.rmtree(run_dir, ignore_errors=True)
    return removed


def _artifact_path(artifact) -> str:
    """Local path of an artifact kfp.local returned."""
    return artifact.path if hasattr(artifact, "path") else str(artifact.uri).removeprefix("file://")


def run_local(options: LocalRunOptions, console: TextIO | None = None, **pipeline_arguments) -> dict:
    """Run the whole pipeline into a new `out_dir/runs/<time>`; return the report (written there
    and to `out_dir/report.json`). kfp.local's output goes to `out_dir/logs/pipeline.log`.

    The previous `out_dir/report.json` is removed first, so a failed run never leaves one that looks valid;
    a run refused before it starts (RunRefused: an earlier run's canary still runs) removes nothing."""
    if pipeline_arguments.get("deploy_target", "local") == "local":
        preflight_deploy(options)
    out = options.out_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").unlink(missing_ok=True)
    run_dir = new_run_dir(out / "runs")
    tracking_uri = registry.resolve_tracking_uri(options.mlflow_tracking_uri, STATE_DIR)
    log_path = out / "logs" / "pipeline.log"
    where = f"each step in {options.components_image.image}" if options.components_image else "in-process"
    (console or sys.stdout).write(f"pipeline run {run_dir.name} (kfp.local, {where}); its log: {log_path}\n")
    started = time.perf_counter()
    with PipelineConsole(log_path, console) as shown:
        outputs, steps = _run_pipeline(shown, options, run_dir, tracking_uri, pipeline_arguments)
    wall = time.perf_counter() - started
    paths = {name: _artifact_path(outputs.outputs[name]) for name in
             ("evaluation", "gate_result", "baseline_model", "candidate_model", "holdout", "summary")}
    report = build_report(paths, tracking_uri, wall)
    report["timings"]["tasks_wall"] = shown.seconds
    report["run"] = {"id": run_dir.name, "dir": str(run_dir), "log": str(log_path),
                     "pipeline_yaml": str(run_dir / PIPELINE_YAML),
                     "runner": "docker" if options.components_image else "subprocess"}
    if steps is not None:  # per task: the container it ran in, its log, its checked outputs
        report["containers"] = {"image": options.components_image.image, "tasks": steps}
    write_json(run_dir / "report.json", report)
    write_json(out / "report.json", report)
    for removed in prune_runs(out / "runs", run_dir, known_state_dirs(options)):
        log.info("removed the unreferenced earlier run %s", removed)
    return report


def _run_pipeline(shown: PipelineConsole, options: LocalRunOptions, run_dir: Path, tracking_uri: str,
                  pipeline_arguments: dict):
    """Compile the pipeline into the run dir and execute that YAML (the committed YAML is the same
    bytes, a test compares them)."""
    from fraud_pipelines.pipeline import DEFAULT_IMAGE, compile_pipeline

    def next_step(failure: str) -> str:
        if "RolloutRefused: a canary of" in failure:  # an earlier run's canary still runs: the way on
            failure += (f"; next: fraud-rollout canary promote (or rollback) --target local --state-dir "
                        f"{options.serving_state_dir}, then run again")
        return failure

    warnings.filterwarnings("ignore", message=".*non-Python base image.*")  # our image has Python
    image = options.components_image
    pipeline_yaml = compile_pipeline(run_dir / PIPELINE_YAML, image.image if image else DEFAULT_IMAGE)
    # the caller's pipeline arguments win (a test's deploy_target="kserve", lower gate floors)
    arguments = {**asdict(options.config), "source_csv": options.source_csv, "mlflow_tracking_uri": tracking_uri,
                 "deploy_target": "local", "local_state_dir": str(options.serving_state_dir.resolve()),
                 "supersede_canary": options.supersede_canary, **pipeline_arguments}
    # the socket under the out dir: a Unix socket path has at most 107 bytes, the run dir is deeper
    with steps_in_containers(image, pipeline_yaml, run_dir / "kfp", options.out_dir.resolve(),
                             shown.log_path.parent / run_dir.name, arguments) as steps:
        outputs = execute_compiled(shown, pipeline_yaml, run_dir, next_step, steps=steps, **arguments)
    return outputs, steps.report() if steps else None


def execute_compiled(shown: PipelineConsole, pipeline_yaml: Path, run_dir: Path,
                     explain: Callable[[str], str] = str, steps: StepContainers | None = None, **arguments):
    """Execute a compiled pipeline YAML with kfp.local (what a cluster would run, not the Python
    function); PipelineFailed names the failed task and its error (`explain` may add the way on).
    With `steps`, each step runs in a container and the first task that did not prove it ran there
    with all its outputs fails the run (kfp's DockerRunner reports a vanished container as SUCCESS)."""
    from kfp import components, local

    compiled = components.load_component_from_file(str(pipeline_yaml))
    runner = steps.runner() if steps else local.SubprocessRunner(use_venv=False)
    local.init(runner=runner, pipeline_root=str(run_dir / "kfp"), raise_on_error=True)
    try:
        outputs = compiled(**arguments)
    except StepUnproven as error:  # raised at the task's end by `steps`: the next tasks never start
        raise PipelineFailed(explain(str(error))) from error
    except RuntimeError as error:  # kfp.local: "Pipeline … finished with status FAILURE. Inner task failed: …"
        unproven = steps.failure() if steps else None
        raise PipelineFailed(explain(unproven or shown.failure()) + f" (full log: {shown.log_path})") from error
    except (KeyError, ValueError) as error:  # kfp.local resolving an input a vanished step never wrote
        if steps is None or (unproven := steps.failure()) is None:
            raise
        raise PipelineFailed(explain(unproven)) from error
    if steps and (unproven := steps.failure()):
        raise PipelineFailed(explain(unproven))
    return outputs


def build_report(paths: dict[str, str], tracking_uri: str, wall_seconds: float) -> dict:
    evaluation = read_json(paths["evaluation"])
    gate = read_json(paths["gate_result"])
    models = evaluation["models"]
    models["v1"]["artifact"] = paths["baseline_model"]
    models["v2"]["artifact"] = paths["candidate_model"]
    timings = {"simulate": evaluation["data"].get("simulate_seconds"), "train_v1": models["v1"].get("train_seconds"), "train_v2": models["v2"].get("train_seconds"),
               "evaluate": evaluation.get("seconds"), "total_wall": round(wall_seconds, 2)}
    from mlflow.exceptions import MlflowException

    try:
        current_aliases = registry.aliases(tracking_uri)
    except MlflowException as error:  # registry unreachable: the report still says what ran
        log.warning("could not read MLflow aliases: %s", error)
        current_aliases = {}
    return {
        "data": evaluation["data"],
        "models": models,
        "mcnemar_p": evaluation["mcnemar_p"],
        "mcnemar": evaluation["mcnemar"],
        "gate": {"decision": gate["decision"], "reasons": gate["reasons"], "policy": gate["policy"]},
        "mlflow": {"tracking_uri": tracking_uri, "registered_model": registry.REGISTERED_MODEL,
                   "versions": {name: m.get("registered_version") for name, m in models.items()},
                   "aliases": current_aliases},
        "timings": timings,
        "artifacts": paths,
    }
