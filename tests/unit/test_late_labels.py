"""Late labels in a live rollout: the prediction store's matured labels (`served.newly_matured`),
each transaction counted once across looks, and the rollout's tests taking them whenever they come."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
from fraud_canary.metrics import Confusion, VersionMetrics
from fraud_canary.paired import Discordant
from fraud_canary.policy import OfflineMetrics
from fraud_canary.progressive import Ledger, Observation, RolloutPolicy, judge
from fraud_canary.served import MaturedLabels, newly_matured

NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)
OFFLINE = {"v1": OfflineMetrics(precision=0.6, recall=0.4, flag_rate=0.001),
           "v2": OfflineMetrics(precision=0.85, recall=0.8, flag_rate=0.0016)}


def _served(rows: list[tuple[str | None, str, int, int | None, datetime | None]]) -> pd.DataFrame:
    """(transaction id, version, decision, label, label time) per served row, requested an hour ago."""
    return pd.DataFrame({"event_id": [f"e{i}" for i in range(len(rows))], "row": 0,
                         "transaction_id": [r[0] for r in rows], "model_version": [r[1] for r in rows],
                         "decision": pd.array([r[2] for r in rows], dtype="Int64"),
                         "requested_at": pd.Timestamp(NOW - timedelta(hours=1)),
                         "label": pd.array([r[3] for r in rows], dtype="Int64"),
                         "label_time": pd.to_datetime([r[4] for r in rows], utc=True)})


def _pairs(rows: list[tuple[str, int, int, int | None]]) -> pd.DataFrame:
    """(transaction id, v1's decision (served), v2's decision (shadow), label) per pair."""
    return pd.DataFrame({"event_id": [f"p{i}" for i in range(len(rows))], "row": 0,
                         "transaction_id": [r[0] for r in rows], "served_version": "v1", "shadow_version": "v2",
                         "served_decision": pd.array([r[1] for r in rows], dtype="Int64"),
                         "shadow_decision": pd.array([r[2] for r in rows], dtype="Int64"),
                         "paired_at": pd.Timestamp(NOW - timedelta(hours=1)),
                         "label": pd.array([r[3] for r in rows], dtype="Int64"),
                         "label_time": pd.to_datetime([NOW - timedelta(minutes=5) if r[3] is not None else None
                                                       for r in rows], utc=True)})


def test_each_matured_label_counts_once_across_looks():
    early = NOW - timedelta(minutes=30)
    served = _served([("t1", "v2", 1, 1, early), ("t2", "v2", 0, 1, early), ("t3", "v2", 1, 0, early),
                      ("t1", "v2", 1, 1, early),  # a retried transaction: one label
                      ("t4", "v1", 1, 1, early),  # the baseline's: not the canary's recall
                      ("t8", "v1", 0, 0, early), ("t8", "v2", 0, 0, early),  # retried on the canary: counted there once
                      ("t5", "v2", 0, None, None),  # no label yet
                      (None, "v2", 1, None, None)])
    pairs = _pairs([("t1", 0, 1, 1), ("t2", 1, 0, 1), ("t6", 1, 1, 0), ("t7", 0, 1, None)])
    first = newly_matured(served, pairs, baseline_version="v1", canary_version="v2", as_of=NOW)
    assert first.canary == Confusion(tp=1, fp=1, fn=1, tn=1)
    assert first.frauds == Discordant(2, 1, 1, 0) and first.legit == Discordant(1, 0, 0, 1)
    again = newly_matured(served, pairs, baseline_version="v1", canary_version="v2", as_of=NOW, before=first)
    assert (again.canary.labelled, again.frauds.pairs, again.legit.pairs, again.rows) == (0, 0, 0, 0)

    # t5's chargeback and t7's label arrive later: only they count at the next look
    served.loc[served["transaction_id"] == "t5", ["label", "label_time"]] = [1, pd.Timestamp(NOW)]
    pairs.loc[pairs["transaction_id"] == "t7", ["label", "label_time"]] = [1, pd.Timestamp(NOW)]
    later = newly_matured(served, pairs, baseline_version="v1", canary_version="v2", as_of=NOW, before=again)
    assert later.canary == Confusion(tp=0, fp=0, fn=1, tn=0)
    assert later.frauds == Discordant(1, 1, 0, 0)
    assert later.summary() == {"canary_labelled": 1, "canary_frauds": 1, "canary_caught": 0, "paired_frauds": 1,
                               "paired_legit": 0}


def test_a_label_counts_only_once_its_window_has_closed():
    served = _served([("t1", "v2", 1, 1, NOW - timedelta(minutes=30))])  # requested an hour ago
    pairs = _pairs([])
    young = newly_matured(served, pairs, baseline_version="v1", canary_version="v2", as_of=NOW,
                          label_maturity=timedelta(days=1))
    assert young.canary.labelled == 0
    old = newly_matured(served, pairs, baseline_version="v1", canary_version="v2", as_of=NOW + timedelta(days=1),
                        label_maturity=timedelta(days=1), before=young)
    assert old.canary == Confusion(tp=1, fp=0, fn=0, tn=0)


def _unlabelled(percent: int, rows: int = 40_000) -> dict[str, VersionMetrics]:
    n_c = rows * percent // 100
    return {v: VersionMetrics(v, n, 0, round(n * rate), 0.0, 4.0, 8.0, 10.0)
            for v, n, rate in (("v1", rows - n_c, 0.001), ("v2", n_c, 0.0016))}


def _late(caught_alone: int, missed_alone: int) -> MaturedLabels:
    return MaturedLabels(Confusion(0, 0, 0, 0), Discordant(caught_alone + missed_alone, caught_alone, missed_alone, 0),
                         Discordant(0, 0, 0, 0))


def test_late_labels_let_a_label_free_window_promote_and_a_worse_canary_roll_back():
    policy = RolloutPolicy()
    window = Observation(_unlabelled(50), "v1", "v2", OFFLINE)
    waiting = judge(Ledger.start(policy), window, percent=50, policy=policy, holds=0)
    assert waiting.action == "hold"
    assert "WAIT labels: no labelled frauds yet" in waiting.reasons[1]

    better = judge(waiting.ledger, Observation(_unlabelled(50), "v1", "v2", OFFLINE, labels=_late(30, 2)),
                   percent=50, policy=policy, holds=1)
    assert better.action == "promote", better.reasons
    assert better.reasons[2].startswith("PASS paired.recall_better: the canary catches more of the paired frauds")

    worse = judge(waiting.ledger, Observation(_unlabelled(50), "v1", "v2", OFFLINE, labels=_late(2, 30)),
                  percent=50, policy=policy, holds=1)
    assert worse.action == "rollback"
    assert worse.reasons[0].startswith("FAIL paired.recall: e-value ")


def test_labels_with_nothing_new_leave_the_tests_untouched():
    policy = RolloutPolicy()
    nothing = MaturedLabels(Confusion(0, 0, 0, 0), Discordant(0, 0, 0, 0), Discordant(0, 0, 0, 0))
    look = judge(Ledger.start(policy), Observation(_unlabelled(50), "v1", "v2", OFFLINE, labels=nothing),
                 percent=50, policy=policy, holds=0)
    assert look.ledger.tests["paired.recall"].looks == 0 and look.ledger.canary_frauds == 0
