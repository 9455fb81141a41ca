"""Local pipeline runs: a directory per run, none deleted while a manifest references it, and a
console that shows one line per task while kfp.local's output goes to a log file. (A rerun no longer
removes an earlier run's rollout: it canaries next to it, tests/integration/test_reruns.py.)"""
from __future__ import annotations

import io
import logging

from fraud_control.inferenceservice import isvc
from fraud_control.inferenceservice.local_state import LocalInferenceService
from fraud_pipelines.console import PipelineConsole
from fraud_pipelines.local import new_run_dir, prune_runs

from tests.unit.test_serving_local_state import artifact_root, spec


def make_runs(runs_dir, names):
    for name in names:
        (runs_dir / name / "kfp").mkdir(parents=True)
    return [runs_dir / name for name in names]


def serve_from(state_dir, root):
    LocalInferenceService(state_dir).create(isvc.inference_service(spec(root, 1)))


def test_each_run_gets_a_directory_of_its_own(tmp_path):
    first, second = new_run_dir(tmp_path / "runs"), new_run_dir(tmp_path / "runs")
    assert first != second and first.is_dir() and second.is_dir()
    assert second.name.startswith(first.name[:15])  # same second: a suffix, not the same directory


def test_pruning_keeps_recent_runs_and_every_run_a_manifest_references(tmp_path):
    runs = tmp_path / "runs"
    oldest, old, middle, newer, current = make_runs(runs, ["20260101T000000Z", "20260102T000000Z",
                                                           "20260103T000000Z", "20260104T000000Z", "20260105T000000Z"])
    serve_from(tmp_path / "serving", artifact_root(oldest / "kfp", 1))
    removed = prune_runs(runs, current, [tmp_path / "serving", tmp_path / "absent"], keep=2)
    assert removed == [old, middle]
    assert sorted(p.name for p in runs.iterdir()) == [oldest.name, newer.name, current.name]


def test_console_shows_task_lines_and_the_log_keeps_the_rest_without_colours(tmp_path):
    console = io.StringIO()
    with PipelineConsole(tmp_path / "logs" / "pipeline.log", console) as shown:
        logging.info("Executing task \x1b[96m'train-model'\x1b[0m")
        print('    {"executorInput": {"inputs": {}}}')
        print("    [KFP Executor INFO]: v1 epoch 1/20: loss=0.3")
        print("    fraud.schema.DataError: the validation split of this window has no fraud; use more transactions")
        logging.info("Task \x1b[96m'train-model'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m")
        logging.info("Skipping task condition-1: upstream task(s) ['gate-candidate'] failed.")
    lines = console.getvalue().splitlines()
    assert [line.split()[:2] for line in lines] == [["train-model", "started"], ["train-model", "failure"],
                                                    ["condition-1", "skipped:"]]
    log_text = (tmp_path / "logs" / "pipeline.log").read_text()
    assert "\x1b" not in log_text and '"executorInput"' in log_text and "v1 epoch 1/20" in log_text
    assert "Executing task 'train-model'" in log_text
    assert shown.failure() == ("task train-model failed: DataError: the validation split of this window has no "
                               "fraud; use more transactions")
    assert logging.getLogger().filters == []  # the root logger is as it was
