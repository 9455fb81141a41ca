"""Run the pipeline on this machine with `kfp.local` (SubprocessRunner, no virtualenv: the
components import this package from the current environment) and write `report.json`."""
from __future__ import annotations

import logging
import re
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from fraud import registry
from fraud.files import read_json, write_json

log = logging.getLogger(__name__)
STATE_DIR = Path(".fraud-rollout")


@dataclass(frozen=True)
class LocalRunOptions:
    out_dir: Path = STATE_DIR / "run"
    n_transactions: int = 1_000_000
    seed: int = 7
    epochs: int = 20
    fraud_rate: float = 0.0017
    source_csv: str = ""
    mlflow_tracking_uri: str = ""
    #: Where the deploy step (target local) writes the InferenceService that `fraud-rollout serve` reads.
    serving_state_dir: Path = STATE_DIR / "serving"


class TaskTimer(logging.Filter):
    """Wall time of each kfp.local task, from kfp.local's own start and finish log records.
    A filter on the root logger, because kfp.local swaps the root logger's handlers while it runs."""

    START = re.compile(r"Executing task '([^']+)'")
    END = re.compile(r"Task '([^']+)' finished with status")

    def __init__(self) -> None:
        super().__init__()
        self.started: dict[str, float] = {}
        self.seconds: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        message = re.sub(r"\x1b\[[0-9;]*m", "", record.getMessage())  # kfp colours task names
        if match := self.START.search(message):
            self.started[match.group(1)] = record.created
        elif (match := self.END.search(message)) and match.group(1) in self.started:
            self.seconds[match.group(1)] = round(record.created - self.started[match.group(1)], 2)
        return True


def _forget_local_rollout(state_dir: Path, artifacts_dir: Path) -> None:
    """A rerun replaces the artifacts the previous run's local InferenceService serves, so that
    rollout goes with them; a local rollout of other artifacts is left alone (and the deploy step
    then treats it as it would a cluster's)."""
    from fraud_control.local_state import LocalInferenceService

    service = LocalInferenceService(state_dir)
    served = [record["storageUri"] for record in service.revisions().values()]
    if any(Path(uri).resolve().is_relative_to(artifacts_dir.resolve()) for uri in served):
        log.info("removing the local rollout of the previous run in %s", state_dir)
        service.delete()


def _artifact_path(artifact) -> str:
    """Local path of an artifact kfp.local returned."""
    return artifact.path if hasattr(artifact, "path") else str(artifact.uri).removeprefix("file://")


def run_local(options: LocalRunOptions, **pipeline_arguments) -> dict:
    """Run the whole pipeline; return the report (also written to `out_dir/report.json`).

    A previous report in `out_dir` is removed first, so a failed run never leaves one that looks valid."""
    from kfp import local

    from fraud_pipelines.pipeline import build_pipeline

    out = options.out_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    report_path = out / "report.json"
    report_path.unlink(missing_ok=True)
    _forget_local_rollout(options.serving_state_dir, out / "kfp")
    shutil.rmtree(out / "kfp", ignore_errors=True)
    tracking_uri = registry.resolve_tracking_uri(options.mlflow_tracking_uri, STATE_DIR)

    warnings.filterwarnings("ignore", message=".*non-Python base image.*")  # our image has Python
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(out / "kfp"), raise_on_error=True)
    timer = TaskTimer()
    logging.getLogger().addFilter(timer)
    started = time.perf_counter()
    try:
        outputs = build_pipeline()(n_transactions=options.n_transactions, seed=options.seed, epochs=options.epochs,
                                   fraud_rate=options.fraud_rate, source_csv=options.source_csv,
                                   mlflow_tracking_uri=tracking_uri, deploy_target="local",
                                   local_state_dir=str(options.serving_state_dir.resolve()), **pipeline_arguments)
    finally:
        logging.getLogger().removeFilter(timer)
    wall = time.perf_counter() - started
    paths = {name: _artifact_path(outputs.outputs[name]) for name in
             ("evaluation", "gate_result", "baseline_model", "candidate_model", "holdout", "summary")}
    report = build_report(paths, tracking_uri, wall)
    report["timings"]["tasks_wall"] = timer.seconds
    write_json(report_path, report)
    log.info("report: %s", report_path)
    return report


def build_report(paths: dict[str, str], tracking_uri: str, wall_seconds: float) -> dict:
    evaluation = read_json(paths["evaluation"])
    gate = read_json(paths["gate_result"])
    models = evaluation["models"]
    models["v1"]["artifact"] = paths["baseline_model"]
    models["v2"]["artifact"] = paths["candidate_model"]
    timings = {"simulate": evaluation["data"].get("simulate_seconds"), "train_v1": models["v1"].get("train_seconds"), "train_v2": models["v2"].get("train_seconds"),
               "evaluate": evaluation.get("seconds"), "total_wall": round(wall_seconds, 2)}
    try:
        current_aliases = registry.aliases(tracking_uri)
    except Exception as error:  # registry unreachable: the report still says what ran
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
