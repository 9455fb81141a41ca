"""The sink's feedback signals over real HTTP: a sink started with two real model roots (`--model`)
receives KServe's events for holdout transactions, and its /metrics exports exactly what
`feedback_signals` computes on the answered rows of its window (SQLite and PostgreSQL); promtool,
on the deployed rules, fires the feedback alerts those values call for."""
from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import pytest
from fraud.export import SignatureScorer, read_feature_profile, read_score_profile
from fraud.inference_log import REQUEST_EVENT, RESPONSE_EVENT
from fraud.schema import FEATURES
from fraud_canary.feedback import feedback_signals
from fraud_control.prediction_log.feedback_metrics import FeedbackCollector
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.prediction_log import request_body
from tests.promtool import alert_rule, expected_alert, run_rule_test
from tests.sink_process import batch, kserve_event, start_sink

pytestmark = pytest.mark.integration

REQUESTS, ROWS = 40, 100
FEEDBACK_FAMILIES = ("fraud_feedback_", "fraud_feature_")


def response(scores: np.ndarray, decisions: np.ndarray, version: str) -> dict:
    return {"model_name": "fraud-detector", "model_version": version, "id": "r", "outputs": [
        {"name": "fraud_probability", "datatype": "FP32", "shape": [len(scores)], "data": scores.tolist()},
        {"name": "is_fraud", "datatype": "INT32", "shape": [len(decisions)], "data": decisions.tolist()}]}


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """The feedback samples of a Prometheus text page, by (name, sorted labels)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
            if s.name.startswith(FEEDBACK_FAMILIES)}


def same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


@pytest.fixture
def served(tiny_run):
    """Holdout transactions as two versions answered them: v1 with its own signature, v2 with
    scores that are nothing like its validation scores (a skew FraudScoreShift must catch)."""
    holdout = tiny_run.windows["holdout"].iloc[: REQUESTS * ROWS]
    raw = holdout.loc[:, list(FEATURES)].to_numpy(dtype=np.float64)
    v1 = SignatureScorer(tiny_run.v1)(tiny_run.contract.transform(raw))
    skewed = np.random.default_rng(3).uniform(size=len(raw)).astype(np.float32)
    threshold = read_score_profile(tiny_run.v2).threshold
    answers = {"v1": (v1["fraud_probability"], v1["is_fraud"]), "v2": (skewed, (skewed >= threshold).astype(np.int32))}
    requests = []
    for i in range(REQUESTS):
        version = ("v1", "v2")[i % 2]
        rows = slice(i * ROWS, (i + 1) * ROWS)
        scores, decisions = answers[version]
        requests.append((f"req-{i}", version, raw[rows], scores[rows], decisions[rows]))
    return requests


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_metrics_export_the_feedback_signals_of_the_window_and_promtool_fires_on_them(tiny_run, served, tmp_path,
                                                                                      request, backend):
    store = str(tmp_path / "predictions.db") if backend == "sqlite" else request.getfixturevalue("postgres_url")
    sink = start_sink(store, tmp_path / "sink.log", None, "--model", str(tiny_run.v1), "--model", str(tiny_run.v2),
                      "--feedback-window", "1h")
    try:
        now = datetime.now(UTC)
        events = []
        for i, (event_id, version, raw, scores, decisions) in enumerate(served):
            at = now - timedelta(minutes=30) + timedelta(seconds=i)
            events += [kserve_event(event_id, REQUEST_EVENT, request_body(raw), at=at),
                       kserve_event(event_id, RESPONSE_EVENT, response(scores, decisions, version), at=at)]
        # outside the window, and a request never answered: neither counts
        old_id, old_version, old_raw, old_scores, old_decisions = served[0]
        events += [kserve_event("old", REQUEST_EVENT, request_body(old_raw), at=now - timedelta(hours=2)),
                   kserve_event("old", RESPONSE_EVENT, response(old_scores, old_decisions, old_version),
                                at=now - timedelta(hours=2)),
                   kserve_event("unanswered", REQUEST_EVENT, request_body(old_raw * 50), at=now)]
        headers, body = batch(events)
        posted = httpx.post(f"{sink.url}/", headers=headers, content=body, timeout=60)
        assert posted.status_code == 200 and posted.json() == {"accepted": len(events), "duplicates": 0}
        metrics = httpx.get(f"{sink.url}/metrics", timeout=60)  # the first scrape computes
        assert metrics.status_code == 200
        scraped = metrics.text
        assert "fraud_sink_feedback_errors_total 0.0" in scraped
    finally:
        sink.stop()
    log = (tmp_path / "sink.log").read_text()
    assert "feedback signals of v1, v2 over the last 3600 s" in log, log

    per_version = {v: (np.concatenate([s for _, w, _, s, _ in served if w == v]).astype(np.float64),
                       np.concatenate([d for _, w, _, _, d in served if w == v]).astype(np.int64))
                   for v in ("v1", "v2")}
    profiles = {"v1": read_score_profile(tiny_run.v1), "v2": read_score_profile(tiny_run.v2)}
    features = np.concatenate([raw for _, _, raw, _, _ in served])
    expected = feedback_signals(per_version, profiles, features, read_feature_profile(tiny_run.v1))
    registry = CollectorRegistry()
    registry.register(FeedbackCollector(lambda: expected))
    want, got = samples(generate_latest(registry).decode()), samples(scraped)
    assert set(got) == set(want) and all(same(got[key], want[key]) for key in want), \
        {key: (got.get(key), value) for key, value in want.items() if not same(got.get(key, math.nan), value)}
    assert got[("fraud_feedback_rows", (("model_version", "v2"),))] == REQUESTS // 2 * ROWS
    assert got[("fraud_feedback_flag_rate", (("model_version", "v1"),))] == per_version["v1"][1].mean()
    assert len([key for key in got if key[0] == "fraud_feature_drift_psi"]) == len(FEATURES)

    by_version = {v.model_version: v for v in expected.versions}
    # v2's scores are uniform: far from its validation scores; v1 serves its own model's scores
    assert by_version["v2"].score_ks > 0.05 and by_version["v2"].score_ks_p < 0.01
    assert by_version["v1"].score_ks < by_version["v2"].score_ks
    firing = {
        "FraudFeatureDrift": [({"feature": d.feature}, d.adjusted_p) for d in expected.features
                              if d.adjusted_p < 0.01],
        "FraudScoreShift": [({"model_version": v.model_version}, v.score_ks) for v in expected.versions
                            if v.score_ks > 0.05 and v.score_ks_p < 0.01],
        "FraudEstimatedRecallLow": [({"model_version": v.model_version, "bound": "upper"}, v.recall.upper)
                                    for v in expected.versions if v.recall.upper < 0.70],
    }
    series = [{"series": name + "{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}", "values": f"{value!r} {value!r}"}
              for (name, labels), value in got.items() if math.isfinite(value)]
    checks = [{"eval_time": "1m", "alertname": name,
               "exp_alerts": [expected_alert(alert_rule(name), labels, value) for labels, value in alerts]}
              for name, alerts in firing.items()]
    result = run_rule_test({"tests": [{"name": "scraped feedback", "interval": "1m", "input_series": series,
                                       "alert_rule_test": checks}]}, tmp_path / "scraped.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
