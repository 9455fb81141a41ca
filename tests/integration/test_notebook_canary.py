"""Notebook 02 executed headless on the small demo run's replay and pipeline reports."""
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
    assert "RECOMMENDATION:" in text
