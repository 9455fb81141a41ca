"""Paired (shadow-scored) evidence in `recommend` and `analyze`: it decides where the unpaired
slices cannot, it rolls back a worse or disagreeing canary, and without it nothing changes."""
from __future__ import annotations

import math

import numpy as np
import pytest
from fraud_canary.analysis import analyze, format_analysis
from fraud_canary.decision import recommend
from fraud_canary.metrics import version_metrics
from fraud_canary.paired import Discordant, PairedOutcomes, paired_outcomes
from fraud_canary.policy import CanaryPolicy, OfflineMetrics

#: The demo's replay: the 1,000,000-transaction run's holdout, 190,000 rows with 324 frauds
#: (0.17 %), 20 % to the canary (≈ 65 of them frauds: far below the ≈ 177 the unpaired plan needs).
ROWS, FRAUDS, CANARY_SHARE = 190_000, 324, 0.2


def _outcomes(fraud_split: tuple[int, int, int], legit_split: tuple[int, int, int], *, seed: int = 7,
              labelled: bool = True, rows: int = ROWS, frauds: int = FRAUDS):
    """Rows whose frauds are caught by (both, canary only, baseline only) and whose legitimate rows
    are flagged by (both, canary only, baseline only); the rest by neither. Returns the online
    metrics of the 20 % split, each version's offline metrics on all rows, and the pairs."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(rows, bool)
    labels[rng.choice(rows, frauds, replace=False)] = True
    canary, baseline = np.zeros(rows, bool), np.zeros(rows, bool)
    for group, (both, canary_only, baseline_only) in ((np.flatnonzero(labels), fraud_split),
                                                     (np.flatnonzero(~labels), legit_split)):
        picked = rng.permutation(group)[:both + canary_only + baseline_only]
        canary[picked[:both + canary_only]] = True
        baseline[picked[:both]] = baseline[picked[both + canary_only:]] = True
    versions = np.where(rng.random(rows) < CANARY_SHARE, "v2", "v1")
    served = np.where(versions == "v2", canary, baseline)
    online = version_metrics(labels if labelled else None, served, versions, rng.uniform(5, 20, rows),
                             np.zeros(rows, bool))
    offline = {v: OfflineMetrics(precision=float((flags & labels).sum() / flags.sum()),
                                 recall=float((flags & labels).sum() / labels.sum()),
                                 flag_rate=float(flags.mean())) for v, flags in (("v1", baseline), ("v2", canary))}
    pairs = paired_outcomes(baseline, canary, baseline_version="v1", canary_version="v2",
                            labels=labels if labelled else None)
    return online, offline, pairs


BETTER = _outcomes((230, 40, 3), (50, 15, 10))
WORSE = _outcomes((230, 3, 40), (50, 10, 15))


def _check(analysis, rule):
    return next(c for c in analysis["checks"] if c["rule"] == rule)


def _analyze(outcomes, **kwargs):
    online, offline, pairs = outcomes
    return analyze(online, offline, baseline_version="v1", canary_version="v2", paired=pairs, **kwargs)


def test_paired_evidence_decides_where_the_unpaired_slices_are_insufficient():
    analysis = _analyze(BETTER)
    assert analysis["without_pairs"]["action"] == "hold"
    assert analysis["without_pairs"]["evidence"].startswith("insufficient evidence")
    assert analysis["action"] == "promote", analysis["reasons"]
    recall = _check(analysis, "paired.recall")
    p = analysis["paired"]["p_value"]
    assert p < 0.01 and p == pytest.approx(2 * sum(math.comb(43, k) for k in range(4)) / 2 ** 43)
    assert recall == {"rule": "paired.recall", "status": "pass", "on_failure": "rollback",
                      "detail": f"v2 caught 40 frauds v1 missed, v1 caught 3 v2 missed, of 324 paired frauds, "
                                f"McNemar exact p={p:.3g}: canary significantly better"}
    assert _check(analysis, "evidence.sample_size")["detail"].startswith(
        f"paired recall test decided (McNemar exact p={p:.3g} < alpha 0.05 on 43 discordant frauds); unpaired: "
        "insufficient evidence")
    assert ": the paired test decided (canary significantly better" in _check(
        analysis, "canary.recall_vs_baseline")["detail"]
    assert (analysis["paired"]["v2_only_right"], analysis["paired"]["v1_only_right"]) == (40, 3)
    text = format_analysis(analysis)
    assert f"  paired: 190,000 rows scored by both, decided differently on 68; frauds caught by one only: v2 40, " \
           f"v1 3, McNemar exact p={p:.3g}" in text
    assert "  without the pairs the same policy would say HOLD: insufficient evidence" in text
    assert text.endswith("RECOMMENDATION: PROMOTE")


def test_a_million_live_rows_meet_the_unpaired_plan_only_for_a_large_drop_and_pairs_decide_a_small_one():
    # 1,000,000 rows at 0.17 % fraud, 20 % canary: ≈ 340 canary frauds meet the default plan (0.10),
    # not a plan for a 0.05 drop (≈ 1.5 M more requests); 40 vs 3 discordant of 1,700 paired frauds decide.
    million = _outcomes((1_200, 40, 3), (300, 80, 70), rows=1_000_000, frauds=1_700)
    assert _analyze(million)["without_pairs"] == {
        "action": "promote", "evidence": "sufficient evidence: canary saw 324 frauds (≥ 216), baseline 1376 (≥ 864)"}
    analysis = _analyze(million, detectable=0.05)
    assert analysis["without_pairs"]["action"] == "hold"
    assert analysis["without_pairs"]["evidence"].startswith("insufficient evidence")
    assert analysis["action"] == "promote", analysis["reasons"]
    assert analysis["paired"]["p_value"] < 0.01


def test_a_significantly_worse_canary_on_the_pairs_rolls_back():
    analysis = _analyze(WORSE)
    assert analysis["action"] == "rollback"
    recall = _check(analysis, "paired.recall")
    assert (recall["status"], recall["on_failure"]) == ("fail", "rollback")
    assert recall["detail"].startswith("v2 caught 3 frauds v1 missed, v1 caught 40 v2 missed, of 324 paired frauds")
    assert recall["detail"].endswith(": canary significantly worse")
    assert any(r.startswith("FAIL paired.recall: ") and r.endswith("→ rollback") for r in analysis["reasons"])


def test_disagreement_beyond_tolerance_rolls_back_without_labels():
    # 3 % of the rows decided differently: a canary that is not the model that was gated.
    online, offline, pairs = _outcomes((230, 40, 3), (50, 5_000, 700), labelled=False)
    analysis = analyze(online, offline, baseline_version="v1", canary_version="v2", paired=pairs)
    assert analysis["action"] == "rollback"
    check = _check(analysis, "paired.disagreement")
    assert (check["status"], check["on_failure"]) == ("fail", "rollback")
    assert check["detail"].startswith("versions disagree on 5743 of 190000 paired rows (0.03023), tolerance ≤ 0.02, "
                                      "one-sided binomial p=")
    assert _check(analysis, "paired.recall")["detail"] == "labels unknown"
    assert "frauds among them unknown (no labels)" in format_analysis(analysis)


def test_disagreement_within_tolerance_passes_and_without_labels_the_step_advances():
    online, offline, pairs = _outcomes((230, 40, 3), (50, 15, 10), labelled=False)
    analysis = analyze(online, offline, baseline_version="v1", canary_version="v2", paired=pairs)
    assert analysis["action"] == "hold"
    assert _check(analysis, "paired.disagreement")["status"] == "pass"
    assert _check(analysis, "paired.flag_rate")["status"] == "pass"
    assert _check(analysis, "paired.false_alarms") == {"rule": "paired.false_alarms", "status": "insufficient",
                                                       "on_failure": "hold", "detail": "labels unknown"}
    assert {c["rule"] for c in analysis["checks"]} >= {"paired.disagreement", "paired.flag_rate"}


def _paired(decisions: Discordant, frauds: Discordant | None = None, legit: Discordant | None = None):
    return PairedOutcomes("v1", "v2", decisions, frauds, legit)


def test_paired_flag_rate_shift_holds_only_when_significant_and_beyond_the_ratio():
    online, offline, _ = BETTER
    shifted = _paired(Discordant(190_000, 600, 10, both=300))  # 900 vs 310 flags: ×2.9
    rec = recommend(online, offline, baseline_version="v1", canary_version="v2", paired=shifted)
    check = next(c for c in rec.checks if c.rule == "paired.flag_rate")
    assert (check.status, check.on_failure) == ("fail", "hold")
    assert "rates 0.004737 vs 0.001632 (ratio 2.9), allowed ratio ×2.0" in check.detail
    widened = recommend(online, offline, baseline_version="v1", canary_version="v2", paired=shifted,
                        policy=CanaryPolicy(max_flag_rate_ratio=3.0))
    assert next(c for c in widened.checks if c.rule == "paired.flag_rate").status == "pass"
    unknown_both = _paired(Discordant(190_000, 600, 10))
    rec = recommend(online, offline, baseline_version="v1", canary_version="v2", paired=unknown_both)
    assert next(c for c in rec.checks if c.rule == "paired.flag_rate").status == "insufficient"


def test_paired_false_alarms_hold_only_when_the_canary_adds_them():
    online, offline, pairs = BETTER
    noisy = _paired(pairs.decisions, pairs.frauds, Discordant(189_676, 400, 10, both=50))
    rec = recommend(online, offline, baseline_version="v1", canary_version="v2", paired=noisy)
    check = next(c for c in rec.checks if c.rule == "paired.false_alarms")
    assert (check.status, check.on_failure) == ("fail", "hold") and rec.action == "hold"
    assert check.detail.startswith("v2 falsely flagged 400 v1 did not, v1 10 v2 did not, of 189676 pairs")
    quieter = _paired(pairs.decisions, pairs.frauds, Discordant(189_676, 10, 400, both=50))
    rec = recommend(online, offline, baseline_version="v1", canary_version="v2", paired=quieter)
    assert next(c for c in rec.checks if c.rule == "paired.false_alarms").status == "pass"


def test_no_pairs_leaves_the_recommendation_unchanged():
    online, offline, _ = BETTER
    without = analyze(online, offline, baseline_version="v1", canary_version="v2")
    assert "paired" not in without and "without_pairs" not in without
    assert not any(c["rule"].startswith("paired.") for c in without["checks"])
    assert without["action"] == _analyze(BETTER)["without_pairs"]["action"] == "hold"
    assert "paired:" not in format_analysis(without)


def test_pairs_of_other_versions_and_bad_tolerances_are_refused():
    online, offline, _ = BETTER
    with pytest.raises(ValueError, match="^paired outcomes are for v3 vs v1, not v2 vs v1$"):
        recommend(online, offline, baseline_version="v1", canary_version="v2",
                  paired=PairedOutcomes("v1", "v3", Discordant(1, 0, 0, both=0)))
    with pytest.raises(ValueError, match=r"^max_paired_disagreement must be in \(0, 1\], got 0.0$"):
        CanaryPolicy(max_paired_disagreement=0.0)
