"""`fraud-rollout rollout` user errors: exit 2, one line naming the value; and the analysis
endpoint's status codes (a real HTTP server on loopback)."""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from fraud_control.rollout.analysis_endpoint import AnalysisEndpoint

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
    """GET /analysis: 200 with the verdict in the body for every verdict but `error` (503), as Argo's
    `web` provider reads it; /analysis/flagger/<hook>: the verdict as Flagger's codes (it POSTs and
    reads only the code: 200 yes, 409 no, 503 error)."""
    endpoint = AnalysisEndpoint(0)
    flagger = endpoint.url + "/flagger/"

    def flagger_post(hook: str) -> tuple[int, dict]:  # Flagger's payload (CanaryWebhookPayload), as it sends it
        payload = json.dumps({"name": "fraud-detector", "namespace": "ns", "phase": "Progressing"}).encode()
        request = urllib.request.Request(flagger + hook, payload, {"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    try:
        first = {"verdict": "hold", "decision": "hold", "percent": None, "next_percent": None,
                 "reasons": ["no step analysed yet"], "analysis": None}
        assert get_json(endpoint.url) == (200, first)
        assert flagger_post("rollback") == (409, first)
        #                verdict      GET  confirm-traffic-increase  confirm-promotion  rollback
        for verdict, codes in (("advance", (200, 200, 409, 409)), ("promote", (200, 200, 200, 409)),
                               ("hold", (200, 409, 409, 409)), ("rollback", (200, 409, 409, 200)),
                               ("inconclusive", (200, 409, 409, 409)), ("abort", (200, 409, 409, 200)),
                               ("error", (503, 503, 503, 503))):
            endpoint.update({"decision": verdict, "percent": 20, "next_percent": None, "reasons": [verdict]},
                            {"action": "hold"})
            body = {"verdict": verdict, "decision": verdict, "percent": 20, "next_percent": None,
                    "reasons": [verdict], "analysis": {"action": "hold"}}
            answers = [get_json(endpoint.url)] + [flagger_post(hook) for hook in
                                                  ("confirm-traffic-increase", "confirm-promotion", "rollback")]
            assert answers == [(code, body) for code in codes], verdict
            assert get_json(flagger + "rollback") == (codes[3], body)  # GET to look, as a person would
        with pytest.raises(ValueError, match="step decision 'pause' is none of advance, promote, hold, rollback, "
                                             "inconclusive, error, abort"):
            endpoint.update({"decision": "pause"}, None)
        assert get_json(endpoint.url)[1]["verdict"] == "error"
        base = endpoint.url.removesuffix("/analysis")
        paths = "GET /analysis, or POST /analysis/flagger/{confirm-traffic-increase,confirm-promotion,rollback}"
        assert get_json(f"{base}/metrics") == (404, {"error": f"no such path '/metrics': {paths}"})
        assert get_json(flagger + "rollout") == (404, {"error": f"no such path '/analysis/flagger/rollout': {paths}"})
        for method in ("POST", "PUT", "DELETE"):
            assert get_json(endpoint.url, method) == (405, {"error": f"method {method} not allowed: GET /analysis"})
        assert get_json(flagger + "rollback", "PUT") == (
            405, {"error": "method PUT not allowed: GET, POST /analysis/flagger/rollback"})
    finally:
        endpoint.close()
