import math

import pytest
from fraud.gate import PROMOTE, REJECT, GatePolicy, decide

BASELINE = {"precision": 0.85, "recall": 0.40, "f1": 0.54, "pr_auc": 0.45, "tp": 80, "fn": 120}
CANDIDATE = {"precision": 0.86, "recall": 0.82, "f1": 0.84, "pr_auc": 0.87, "tp": 164, "fn": 36}


def test_candidate_meeting_every_rule_is_promoted():
    result = decide(BASELINE, CANDIDATE, 1e-9, "abc", "abc")
    assert result.decision == PROMOTE
    assert all(r.passed for r in result.reasons) and len(result.reasons) == 9


@pytest.mark.parametrize("baseline_change, change, rule", [
    ({}, {"f1": 0.7}, "candidate f1"),
    ({"precision": 0.80}, {"precision": 0.79}, "candidate precision"),
    ({}, {"recall": 0.69}, "candidate recall"),
    ({}, {"pr_auc": 0.5}, "candidate pr_auc"),
    ({"recall": 0.80}, {}, "recall gain"),  # 0.80 → 0.82 is +2.5 %
    ({}, {"tp": 13, "fn": 3}, "holdout frauds"),
])
def test_each_failed_rule_rejects_and_is_named(baseline_change, change, rule):
    result = decide({**BASELINE, **baseline_change}, {**CANDIDATE, **change}, 1e-9, "abc", "abc")
    assert result.decision == REJECT
    assert [r.rule for r in result.reasons if not r.passed] == [next(r.rule for r in result.reasons if r.rule.startswith(rule))]


def test_precision_loss_beyond_allowance_rejects():
    result = decide({**BASELINE, "precision": 0.95}, {**CANDIDATE, "precision": 0.89}, 1e-9, "a", "a")
    assert result.decision == REJECT
    assert any(r.rule.startswith("precision loss") and not r.passed for r in result.reasons)


def test_insignificant_difference_rejects():
    assert decide(BASELINE, CANDIDATE, 0.02, "a", "a").decision == REJECT


def test_contract_mismatch_rejects():
    result = decide(BASELINE, CANDIDATE, 1e-9, "abc", "xyz")
    assert result.decision == REJECT
    assert "baseline abc, candidate xyz" in [r.detail for r in result.reasons if not r.passed][0]


@pytest.mark.parametrize("bad", [math.nan, None, math.inf])
def test_missing_or_non_finite_metrics_fail_closed(bad):
    assert decide(BASELINE, {**CANDIDATE, "recall": bad}, 1e-9, "a", "a").decision == REJECT
    assert decide(BASELINE, CANDIDATE, bad, "a", "a").decision == REJECT
    assert decide(BASELINE, {k: v for k, v in CANDIDATE.items() if k != "f1"}, 1e-9, "a", "a").decision == REJECT


def test_markdown_lists_every_reason():
    result = decide(BASELINE, CANDIDATE, 0.5, "a", "a")
    text = result.to_markdown(GatePolicy())
    assert "REJECT" in text and text.count("| pass |") == 8 and text.count("**FAIL**") == 1


def test_too_few_holdout_frauds_reject_with_the_count():
    result = decide(BASELINE, {**CANDIDATE, "tp": 13, "fn": 3}, 1e-9, "a", "a", GatePolicy(min_holdout_frauds=100))
    assert result.decision == REJECT
    assert [(r.rule, r.detail) for r in result.reasons if not r.passed] == [("holdout frauds ≥ 100", "16 frauds in the holdout")]


def test_missing_confusion_counts_fail_closed():
    result = decide(BASELINE, {k: v for k, v in CANDIDATE.items() if k != "fn"}, 1e-9, "a", "a")
    assert result.decision == REJECT
    assert [r.detail for r in result.reasons if not r.passed] == ["holdout fraud count missing"]
