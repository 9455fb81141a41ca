"""Notebook 02 executed headless on the small demo run's replay and pipeline reports."""
import subprocess
import sys

import pytest

from tests.integration.test_notebooks import execute

pytestmark = pytest.mark.integration


def test_canary_analysis_notebook_runs_on_the_demo_output(demo_run, tmp_path):
    if not demo_run.replay_report.is_file():
        pytest.skip("the demo run failed (see test_demo.py)")
    text = execute("02_canary_analysis.ipynb", tmp_path, {
        "FRAUD_ROLLOUT_REPLAY_REPORT": str(demo_run.replay_report),
        "FRAUD_ROLLOUT_PIPELINE_REPORT": str(demo_run.pipeline_report)})
    assert "replayed" in text and "skew: 0 of" in text
    # the analysis `canary analyze` gives with its defaults (it once used `auto` without the pairs)
    cli = subprocess.run([sys.executable, "-m", "fraud_rollout", "canary", "analyze", "--replay-report",
                          str(demo_run.replay_report), "--report", str(demo_run.pipeline_report),
                          "--expected-canary-percent", "20"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    recommendation = next(line for line in cli.stdout.splitlines() if line.startswith("RECOMMENDATION:"))
    assert recommendation in text.splitlines()
    paired = next(line for line in cli.stdout.splitlines() if "pair" in line)
    assert paired in text.splitlines()
