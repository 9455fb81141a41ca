"""A newcomer's first session, in the order the README leads them and in one working directory with
every default: a small pipeline run, the demo, a second `serve` on the demo's state, a stale
`canary analyze --apply`, and `predict` against a dead URL. Each step off the happy path is refused
with one line and the right exit code, and nothing a step leaves behind breaks the next one."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from fraud.processes import free_port
from fraud_control.local_runtime.runtime import read_runtime

from tests.integration.conftest import SMALL_DEMO

pytestmark = pytest.mark.integration

#: What a user types: the CLI, from the working directory, with the defaults of a fresh machine.
CLI = [sys.executable, "-m", "fraud_rollout"]
SMALL_RUN = SMALL_DEMO  # the demo test's size: it passes the gate with the default floors
READY_TIMEOUT_S = 180.0


def no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stderr, result.stderr


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """A working directory and an environment with no MLflow server set (the SQLite default)."""
    cwd = tmp_path_factory.mktemp("newcomer")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "KUBECONFIG")}

    def run(*args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
        return subprocess.run([*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)

    return cwd, env, run


@pytest.fixture(scope="module")
def after_pipeline_and_demo(session):
    cwd, _, run = session
    pipeline = run("pipeline", "run", "--local", *SMALL_RUN)
    demo = run("demo", *SMALL_RUN, "--no-progress")
    return pipeline, demo


def test_1_a_small_pipeline_run_deploys_its_canary_in_the_default_state(session, after_pipeline_and_demo):
    cwd, _, _ = session
    pipeline, _ = after_pipeline_and_demo
    assert pipeline.returncode == 0, pipeline.stderr[-2000:]
    report = json.loads((cwd / ".fraud-rollout/run/report.json").read_text())
    assert report["gate"]["decision"] == "promote"
    manifest = json.loads((cwd / ".fraud-rollout/serving/inferenceservice.json").read_text())
    assert manifest["spec"]["predictor"]["canaryTrafficPercent"] == 20


def test_2_the_demo_works_after_a_pipeline_run(session, after_pipeline_and_demo):
    cwd, _, _ = session
    _, demo = after_pipeline_and_demo
    assert demo.returncode == 0, demo.stderr[-2000:]
    no_traceback(demo)
    report = json.loads((cwd / ".fraud-rollout/demo/report.json").read_text())
    assert report["applied"]["exit_code"] == 0
    # the demo kept to its own serving state: the pipeline run's canary is untouched
    manifest = json.loads((cwd / ".fraud-rollout/serving/inferenceservice.json").read_text())
    assert manifest["spec"]["predictor"]["canaryTrafficPercent"] == 20


def test_3_a_second_serve_on_the_same_state_is_refused_and_names_the_first(session, after_pipeline_and_demo):
    cwd, env, run = session
    state = cwd / ".fraud-rollout/demo/serving"
    first = subprocess.Popen([*CLI, "serve", "--state-dir", str(state), "--http-port", str(free_port())], cwd=cwd,
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not read_runtime(state).get("transformer"):
            assert first.poll() is None, first.stderr.read() if first.stderr else ""
            assert time.monotonic() < deadline, "the first serve did not become ready"
            time.sleep(0.2)
        running = read_runtime(state)
        second = run("serve", "--state-dir", str(state), "--http-port", str(free_port()), timeout=120)
        assert second.returncode == 2
        assert second.stderr.splitlines()[-1] == (
            f"fraud-rollout serve: error: --state-dir {state}: already served by `fraud-rollout serve` pid "
            f"{running['pid']} at {running['transformer']}; stop it (kill {running['pid']}) or pass another "
            "--state-dir")
        no_traceback(second)
        assert first.poll() is None and read_runtime(state)["pid"] == running["pid"]
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(timeout=60)


def test_4_applying_a_replay_of_another_canary_is_refused(session, after_pipeline_and_demo):
    """The demo's replay evidence, applied to the pipeline run's canary (another rollout)."""
    cwd, _, run = session
    before = (cwd / ".fraud-rollout/serving/inferenceservice.json").read_text()
    result = run("canary", "analyze", "--replay-report", ".fraud-rollout/demo/replay.json", "--apply",
                 "--state-dir", ".fraud-rollout/serving", timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    no_traceback(result)
    refusal = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(refusal) == 1 and refusal[0].endswith("replay again against the current canary"), result.stderr
    assert (cwd / ".fraud-rollout/serving/inferenceservice.json").read_text() == before


def test_5_predict_against_a_dead_url_is_one_line(session, after_pipeline_and_demo, tmp_path):
    cwd, _, run = session
    rows = tmp_path / "rows.csv"
    report = json.loads((cwd / ".fraud-rollout/run/report.json").read_text())
    pd.read_parquet(report["artifacts"]["holdout"]).head(2).to_csv(rows, index=False)
    dead = f"http://127.0.0.1:{free_port()}"
    result = run("predict", "--url", dead, "--file", str(rows), timeout=120)
    assert result.returncode == 2
    no_traceback(result)
    assert result.stderr == (f"fraud-rollout predict: error: --url {dead}: cannot reach it (ConnectError: "
                             "[Errno 111] Connection refused); start `fraud-rollout serve` or give the URL it prints\n")


def test_6_a_rerun_while_the_first_canary_runs_is_refused_before_any_step(session, after_pipeline_and_demo):
    """The pipeline run's canary still splits traffic: a second `pipeline run` exits 2 at once with one
    line naming it and the ways on. It once simulated, trained, evaluated and gated first (27 s
    here, about 55 s at 1M), then failed at the deploy step and deleted the first run's report."""
    cwd, _, run = session
    report = cwd / ".fraud-rollout/run/report.json"
    before = report.read_bytes()
    runs = sorted((cwd / ".fraud-rollout/run/runs").iterdir())
    result = run("pipeline", "run", "--local", *SMALL_RUN, timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    no_traceback(result)
    artifact = json.loads(before)["models"]["v2"]["artifact"]
    state = ".fraud-rollout/serving"
    assert result.stderr == (
        f"fraud-rollout pipeline: error: a canary of v2 ({artifact}) is already running at 20 % in {state}; promote "
        f"it or roll it back first (fraud-rollout canary promote|rollback --state-dir {state}), or replace it with "
        "this run's candidate: --supersede\n")
    assert report.read_bytes() == before and sorted((cwd / ".fraud-rollout/run/runs").iterdir()) == runs
    assert result.stdout == ""  # not even the run's first line: no run started
