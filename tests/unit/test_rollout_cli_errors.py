"""`fraud-rollout rollout` user errors: exit 2, one line naming the value; and the analysis
endpoint's status codes (a real HTTP server on loopback)."""
from __future__ import annotations

import subprocess
import sys

import pytest
from fraud_control.analysis_endpoint import AnalysisEndpoint

from tests.http_json import get_json


def fraud_rollout(*args, cwd):
    return subprocess.run([sys.executable, "-m", "fraud_rollout", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("plan, message", [
    ("5,20,50", "--plan '5,20,50': the last step must be 100 (the promotion)"),
    ("20,5,100", "--plan '20,5,100': the steps must increase (e.g. --plan 5,20,50,100)"),
    ("5,5,100", "--plan '5,5,100': the steps must increase (e.g. --plan 5,20,50,100)"),
    ("0,50,100", "--plan '0,50,100': 0 is not a percentage within 1..100 (0 is a rollback, not a step)"),
    ("5,x,100", "--plan '5,x,100': 'x' is not a whole number (e.g. --plan 5,20,50,100)"),
    ("5,20.5,100", "--plan '5,20.5,100': '20.5' is not a whole number (e.g. --plan 5,20,50,100)"),
    ("100", "--plan '100': needs at least one step below 100 to analyse"),
])
def test_a_bad_plan_is_named_on_one_line(tmp_path, plan, message):
    result = fraud_rollout("rollout", "start", "--plan", plan, "--state-dir", str(tmp_path / "state"), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"fraud-rollout rollout: error: {message}"]
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("action", ["start", "abort"])
def test_no_inferenceservice_is_one_line(tmp_path, action):
    result = fraud_rollout("rollout", action, "--state-dir", str(tmp_path / "state"), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"fraud-rollout rollout: error: InferenceService fraud-detector in {tmp_path / 'state'} does not exist "
        "(deploy it first: the pipeline's deploy step or `fraud-rollout serve --baseline … --candidate …`)"]


def test_status_with_no_rollout_is_one_line(tmp_path):
    result = fraud_rollout("rollout", "status", "--state-dir", str(tmp_path / "state"), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"fraud-rollout rollout: error: rollout status: no rollout has run on fraud-detector in {tmp_path / 'state'} "
        f"(nothing in {tmp_path / 'state' / 'rollout.json'}); start one with `fraud-rollout rollout start`"]


def test_the_analysis_endpoint_code_is_the_decision():
    endpoint = AnalysisEndpoint(0)
    try:
        assert get_json(endpoint.url) == (425, {"decision": "hold", "reasons": ["no step analysed yet"], "analysis": None})
        for decision, code in (("advance", 200), ("promote", 200), ("hold", 425), ("rollback", 409), ("abort", 409)):
            endpoint.update({"decision": decision, "percent": 20, "next_percent": None, "reasons": [decision]},
                            {"action": "hold"})
            assert get_json(endpoint.url) == (code, {"decision": decision, "percent": 20, "next_percent": None,
                                                 "reasons": [decision], "analysis": {"action": "hold"}})
        base = endpoint.url.removesuffix("/analysis")
        assert get_json(f"{base}/metrics") == (404, {"error": "no such path '/metrics': GET /analysis"})
        for method in ("POST", "PUT", "DELETE"):
            assert get_json(endpoint.url, method) == (405, {"error": f"method {method} not allowed: GET /analysis"})
    finally:
        endpoint.close()
