"""Per-version metrics from the prediction log's rows: labels count only once their window closed."""
import math
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from fraud_canary.metrics import UNATTRIBUTED, Confusion
from fraud_canary.served import feedback_summary, judged_by, mature_labels, served_metrics, served_pairs

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def rows(*entries) -> pd.DataFrame:
    """(version, decision, days ago requested, label, days ago the label arrived)."""
    frame = []
    for version, decision, requested_days, label, label_days in entries:
        requested = NOW - timedelta(days=requested_days)
        frame.append({"model_version": version, "decision": decision, "requested_at": requested,
                      "answered_at": None if version is None else requested + timedelta(milliseconds=8),
                      "label": label, "label_time": None if label_days is None else NOW - timedelta(days=label_days)})
    return pd.DataFrame(frame)


SERVED = rows(
    ("v1", 1, 40, 1, 10),      # mature at 30 days, label arrived
    ("v1", 0, 40, 1, 5),       # a missed fraud, mature
    ("v1", 0, 10, 0, 1),       # labelled, window open at 30 days
    ("v2", 1, 40, 0, 20),      # a false alarm, mature
    ("v2", 1, 35, None, None), # mature, no label arrived
    ("v2", 0, 40, 0, -1),      # the label arrives tomorrow: not known as of now
    (None, None, 2, None, None),  # logged, never answered: failed
)


def test_mature_labels_need_a_closed_window_and_an_arrived_label():
    labels = mature_labels(SERVED, NOW, timedelta(days=30))
    assert [None if math.isnan(x) else x for x in labels] == [1, 1, None, 0, None, None, None]
    # with no maturity, any label that has arrived counts
    labels = mature_labels(SERVED, NOW, timedelta(0))
    assert [None if math.isnan(x) else x for x in labels] == [1, 1, 0, 0, None, None, None]


def test_served_metrics_counts_all_answered_rows_and_only_matured_labels():
    m = served_metrics(SERVED, as_of=NOW, label_maturity=timedelta(days=30))
    assert set(m) == {"v1", "v2", UNATTRIBUTED}
    assert (m["v1"].requests, m["v1"].flagged, m["v1"].errors) == (3, 1, 0)
    assert m["v1"].confusion == Confusion(tp=1, fp=0, fn=1, tn=0)
    assert m["v2"].confusion == Confusion(tp=0, fp=1, fn=0, tn=0)
    assert (m[UNATTRIBUTED].requests, m[UNATTRIBUTED].errors) == (1, 1)
    assert m["v1"].latency_p50_ms == pytest.approx(8.0)
    assert sum(v.traffic_share for v in m.values()) == pytest.approx(1.0)


def test_a_request_still_in_flight_is_not_an_error():
    served = rows(("v1", 0, 1, None, None), (None, None, 0, None, None))
    m = served_metrics(served, as_of=NOW)
    assert set(m) == {"v1"} and m["v1"].errors == 0
    assert feedback_summary(served, as_of=NOW)["in_flight"] == 1


def test_feedback_summary_counts():
    summary = feedback_summary(SERVED, as_of=NOW, label_maturity=timedelta(days=30))
    assert {k: summary[k] for k in ("logged", "answered", "failed", "in_flight", "labelled")} == {
        "logged": 7, "answered": 6, "failed": 1, "in_flight": 0, "labelled": 3}
    assert summary["per_version"] == {"v1": {"answered": 3, "flagged": 1, "labelled": 2, "frauds": 2},
                                      "v2": {"answered": 3, "flagged": 2, "labelled": 1, "frauds": 0}}
    assert summary["label_maturity_days"] == 30


def test_served_metrics_names_missing_columns():
    with pytest.raises(ValueError, match="the served rows lack label, label_time"):
        served_metrics(SERVED.drop(columns=["label", "label_time"]), as_of=NOW)


def pairs(*entries) -> pd.DataFrame:
    """(served version, shadow version, served decision, shadow decision, label, days ago paired)."""
    return pd.DataFrame([{"served_version": a, "shadow_version": b, "served_decision": x, "shadow_decision": y,
                          "label": label, "label_time": None if label is None else NOW - timedelta(days=1),
                          "paired_at": NOW - timedelta(days=days)} for a, b, x, y, label, days in entries])


def test_served_pairs_orient_by_version_and_count_only_matured_labels():
    logged = pairs(
        ("v1", "v2", 0, 1, 1, 40),     # a fraud only the canary caught
        ("v2", "v1", 1, 0, 1, 40),     # the same, served the other way round
        ("v2", "v1", 0, 1, 1, 40),     # a fraud only the baseline caught
        ("v1", "v2", 0, 1, 0, 40),     # a false alarm of the canary only
        ("v1", "v2", 1, 1, 1, 5),      # both caught, label window still open at 30 days
        ("v1", "v2", 0, 0, None, 40),  # no label yet
        ("v1", "v3", 1, 0, 1, 40),     # another pair of versions
    )
    paired = served_pairs(logged, baseline_version="v1", canary_version="v2", as_of=NOW,
                          label_maturity=timedelta(days=30))
    assert (paired.decisions.pairs, paired.decisions.canary_only, paired.decisions.baseline_only,
            paired.decisions.both) == (6, 3, 1, 1)
    assert (paired.frauds.pairs, paired.frauds.canary_only, paired.frauds.baseline_only) == (3, 2, 1)
    assert (paired.legit.pairs, paired.legit.canary_only, paired.legit.baseline_only) == (1, 1, 0)
    assert served_pairs(logged, baseline_version="v1", canary_version="v4", as_of=NOW) is None


def test_judged_by_takes_the_references_scores_and_the_versions_decisions_on_their_pairs():
    logged = pairs(("v1", "v2", 1, 0, 1, 40), ("v2", "v1", 1, 0, 0, 40), ("v1", "v3", 1, 1, None, 40))
    logged["served_score"], logged["shadow_score"] = [0.8, 0.7, 0.6], [0.2, 0.3, 0.4]
    scores, decisions, labels = judged_by(logged, "v1", "v2")
    assert (scores.tolist(), decisions.tolist(), labels.tolist()) == ([0.2, 0.7], [1, 0], [1.0, 0.0])
    scores, decisions, _ = judged_by(logged, "v2", "v2")
    assert (scores.tolist(), decisions.tolist()) == ([0.2, 0.7], [0, 1])
    scores, decisions, labels = judged_by(logged, "v1", "v1")
    assert (scores.tolist(), decisions.tolist()) == ([0.8, 0.3, 0.6], [1, 0, 1]) and math.isnan(labels[2])
