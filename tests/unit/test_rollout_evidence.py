"""A rollout window from the transformer's own counters: the deltas between two scrapes of the
real `TransformerMetrics` (its Prometheus text), as VersionMetrics and paired decisions."""
from __future__ import annotations

import math

import numpy as np
from fraud_control.rollout.evidence import delta, paired_decisions, parse_metrics, requests_in, version_metrics
from fraud_serving.metrics import TransformerMetrics
from prometheus_client import CollectorRegistry, generate_latest


def _scores(metrics: TransformerMetrics, version: str, rows: int, flagged: int, seconds: float) -> None:
    decided = np.array([1] * flagged + [0] * (rows - flagged))
    metrics.record_scores(version, np.where(decided == 1, 0.9, 0.1), decided)
    metrics.request_seconds.labels(version).observe(seconds)


def test_a_window_is_the_counters_increase_between_two_scrapes():
    registry = CollectorRegistry()
    metrics = TransformerMetrics(registry)
    _scores(metrics, "v1", 500, 5, 0.004)  # before the window: not counted
    start = parse_metrics(generate_latest(registry).decode())
    for _ in range(8):
        _scores(metrics, "v1", 100, 1, 0.004)
    for _ in range(2):
        _scores(metrics, "v2", 100, 3, 0.02)
    metrics.predictor_errors.labels("v2").inc(4)
    counts = delta(parse_metrics(generate_latest(registry).decode()), start)
    assert requests_in(counts) == 1004
    online = version_metrics(counts)
    assert {v: (m.requests, m.errors, m.flagged) for v, m in online.items()} == {"v1": (800, 0, 8), "v2": (204, 4, 6)}
    assert math.isclose(online["v2"].traffic_share, 204 / 1004)
    # 0.004 s lies in the (0.003, 0.005] bucket: histogram_quantile interpolates within it
    assert 3.0 < online["v1"].latency_p50_ms <= 5.0 and 10.0 < online["v2"].latency_p99_ms <= 25.0
    assert online["v1"].confusion is None


def test_a_reset_counter_counts_from_zero():
    key = ("fraud_predictions_total", (("decision", "legit"), ("model_version", "v1")))
    assert delta({key: 30.0}, {key: 100.0}) == {key: 30.0}  # the transformer restarted


def test_shadow_pairs_become_paired_decisions_from_either_side():
    def pair(served, shadow, served_decision, shadow_decision):
        return ("fraud_shadow_rows_total", tuple(sorted({"served_version": served, "shadow_version": shadow,
                                                         "served_decision": served_decision,
                                                         "shadow_decision": shadow_decision}.items())))
    counts = {pair("v1", "v2", "legit", "legit"): 90.0, pair("v1", "v2", "legit", "fraud"): 4.0,
              pair("v2", "v1", "legit", "fraud"): 1.0, pair("v2", "v1", "fraud", "fraud"): 5.0,
              pair("v1", "v3", "legit", "fraud"): 7.0}
    paired = paired_decisions(counts, "v1", "v2")
    assert paired is not None
    assert (paired.pairs, paired.decisions.canary_only, paired.decisions.baseline_only) == (100, 4, 1)
    assert paired_decisions({}, "v1", "v2") is None
