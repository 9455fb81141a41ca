"""fraud_canary's statistics against known values (textbook examples, closed forms, SciPy) and by behaviour."""
from __future__ import annotations

import math

import numpy as np
import pytest
from fraud_canary.agreement import agreement_with_offline, offline_acceptance_interval
from fraud_canary.checks import HOLD, PROMOTE, ROLLBACK
from fraud_canary.decision import recommend
from fraud_canary.evidence import evidence_status, plan_recall_evidence
from fraud_canary.metrics import UNATTRIBUTED, Confusion, VersionMetrics, version_metrics
from fraud_canary.policy import CanaryPolicy, OfflineMetrics
from fraud_canary.proportions import (
    clopper_pearson_interval,
    compare_proportions,
    two_proportion_sample_size,
    wilson_interval,
)
from scipy import stats

# ---------------------------------------------------------------------------------------------
# version_metrics
# ---------------------------------------------------------------------------------------------


def test_version_metrics_counts_by_hand():
    #            v1 rows: 0..5                      v2 rows: 6..9
    labels = [1, 1, 0, 0, 0, 1, 1, 0, 0, 1]
    decisions = [1, 0, 1, 0, 0, math.nan, 1, 0, 0, 0]  # row 5 failed: its decision is ignored
    versions = ["v1"] * 6 + ["v2"] * 4
    latency = [10, 20, 30, 40, 50, 999, 5, 6, 7, 8]
    errors = [0, 0, 0, 0, 0, 1, 0, 0, 0, 0]
    m = version_metrics(labels, decisions, versions, latency, errors)

    v1, v2 = m["v1"], m["v2"]
    assert (v1.requests, v1.errors, v1.answered, v1.flagged) == (6, 1, 5, 2)
    assert v1.confusion == Confusion(tp=1, fp=1, fn=1, tn=2)  # the failed fraud is not a miss
    assert v1.precision == 0.5 and v1.recall == 0.5 and v1.f1 == 0.5
    assert v1.error_rate == pytest.approx(1 / 6) and v1.flag_rate == pytest.approx(2 / 5)
    assert v1.traffic_share == pytest.approx(0.6) and v2.traffic_share == pytest.approx(0.4)
    assert v1.latency_p50_ms == 30  # the failed row's 999 ms is not in the percentiles
    assert v1.latency_p99_ms == pytest.approx(np.percentile([10, 20, 30, 40, 50], 99))
    assert v2.confusion == Confusion(tp=1, fp=0, fn=1, tn=2)
    assert (v2.precision, v2.recall) == (1.0, 0.5) and v2.f1 == pytest.approx(2 / 3)


def test_version_metrics_percentiles_known_values():
    n = 100
    m = version_metrics(np.zeros(n), np.zeros(n), ["v1"] * n, np.arange(1, n + 1), np.zeros(n))["v1"]
    # Linear interpolation between order statistics: p50 of 1..100 is 50.5, p99 is 99.01.
    assert m.latency_p50_ms == pytest.approx(50.5)
    assert m.latency_p95_ms == pytest.approx(95.05)
    assert m.latency_p99_ms == pytest.approx(99.01)


def test_version_metrics_undefined_ratios_are_nan_not_zero():
    # No frauds and nothing flagged: precision, recall, F1 undefined.
    m = version_metrics([0, 0], [0, 0], ["v1", "v1"], [1, 1], [0, 0])["v1"]
    assert math.isnan(m.precision) and math.isnan(m.recall) and math.isnan(m.f1)
    assert m.flag_rate == 0.0 and m.fraud_rate == 0.0
    # Every request failed: no percentiles, no flag rate.
    m = version_metrics([1], [math.nan], ["v2"], [3.0], [1])["v2"]
    assert m.error_rate == 1.0 and math.isnan(m.flag_rate) and math.isnan(m.latency_p99_ms)


def test_version_metrics_unattributed_and_unlabelled():
    m = version_metrics(None, [1, 0, math.nan, math.nan], ["v1", "", None, "unknown"], [1, 2, 3, 4], [0, 0, 1, 1])
    assert set(m) == {"v1", "unknown"} and UNATTRIBUTED == "unknown"  # the transformer's label value
    assert m[UNATTRIBUTED].requests == 3 and m[UNATTRIBUTED].errors == 2 and m[UNATTRIBUTED].answered == 1
    assert m["v1"].confusion is None and math.isnan(m["v1"].recall)
    assert sum(v.traffic_share for v in m.values()) == pytest.approx(1.0)


def test_version_metrics_counts_only_known_labels():
    # The prediction log before every label has matured: NaN rows are served but not yet labelled.
    m = version_metrics([1, math.nan, 0, math.nan], [1, 1, 0, 0], ["v2"] * 4, [1, 1, 1, 1], [0, 0, 0, 0])["v2"]
    assert (m.answered, m.flagged) == (4, 2)
    assert m.confusion == Confusion(tp=1, fp=0, fn=0, tn=1)
    assert m.fraud_rate == 0.5  # over the labelled rows, not the answered ones


@pytest.mark.parametrize("kwargs, message", [
    (dict(decisions=[1, 2]), "decisions must be 0/1"),
    (dict(decisions=[1, math.nan]), "decisions must be 0/1"),
    (dict(labels=[1, 0.5]), "labels must be 0/1"),
    (dict(latency_ms=[1, -1]), "negative"),
    (dict(model_versions=["v1"]), "expected 2"),
])
def test_version_metrics_rejects_bad_input(kwargs, message):
    args = dict(labels=[1, 0], decisions=[1, 0], model_versions=["v1", "v1"], latency_ms=[1, 1], errors=[0, 0])
    with pytest.raises(ValueError, match=message):
        version_metrics(**{**args, **kwargs})


def test_version_metrics_object_rejects_inconsistent_counts():
    with pytest.raises(ValueError, match="exceed"):
        VersionMetrics("v1", 10, 0, 2, 1.0, 1, 1, 1, Confusion(tp=3, fp=0, fn=0, tn=8))
    with pytest.raises(ValueError, match="exceed"):
        VersionMetrics("v1", 10, 0, 2, 1.0, 1, 1, 1, Confusion(tp=1, fp=0, fn=0, tn=10))
    with pytest.raises(ValueError, match="errors"):
        VersionMetrics("v1", 1, 2, 0, 1.0, 1, 1, 1)


# ---------------------------------------------------------------------------------------------
# compare_proportions
# ---------------------------------------------------------------------------------------------


def test_z_test_matches_hand_computation_and_chi_square():
    t = compare_proportions(45, 100, 60, 100)
    pooled = 105 / 200
    z = (0.60 - 0.45) / math.sqrt(pooled * (1 - pooled) * (1 / 100 + 1 / 100))
    assert t.method == "z"
    assert t.z == pytest.approx(z) and t.z == pytest.approx(2.12398, abs=1e-5)
    assert t.p_value == pytest.approx(math.erfc(abs(z) / math.sqrt(2)))
    # The pooled z-test is the uncorrected chi-square test of the 2×2 table: z² = χ².
    chi2, p, _, _ = stats.chi2_contingency([[45, 55], [60, 40]], correction=False)
    assert t.z ** 2 == pytest.approx(chi2) and t.p_value == pytest.approx(p)
    assert t.significant and t.difference == pytest.approx(0.15)


def test_small_expected_counts_use_fisher_exact():
    # Fisher's tea-tasting table [[3, 1], [1, 3]]: two-sided p = 34/70.
    t = compare_proportions(3, 4, 1, 4)
    assert t.method == "fisher" and t.p_value == pytest.approx(34 / 70)
    assert not t.significant and math.isnan(t.z)
    # Rare frauds: expected count of caught frauds below 5 even with many trials.
    t = compare_proportions(2, 300, 7, 300)
    assert t.min_expected_count == pytest.approx(4.5) and t.method == "fisher"
    assert t.p_value == pytest.approx(stats.fisher_exact([[2, 298], [7, 293]]).pvalue)
    # One more fraud caught each and the expected count reaches 5.5: back to the z-test.
    assert compare_proportions(2, 400, 9, 400).method == "z"


def test_degenerate_and_empty_tables():
    t = compare_proportions(50, 50, 20, 20)  # every trial succeeded: no evidence of a difference
    assert t.method == "fisher" and t.p_value == pytest.approx(1.0) and not t.significant
    t = compare_proportions(10, 20, 0, 0)  # zero traffic to the candidate
    assert t.method == "undefined" and math.isnan(t.p_value) and not t.significant
    with pytest.raises(ValueError):
        compare_proportions(5, 4, 1, 2)


# ---------------------------------------------------------------------------------------------
# Intervals and online-vs-offline agreement
# ---------------------------------------------------------------------------------------------

# Newcombe (1998), Statistics in Medicine 17:857-872, Table I: method 3 (Wilson score) and
# method 5 (Clopper-Pearson exact), 95 %.
NEWCOMBE = [
    (81, 263, (0.2553, 0.3662), (0.2527, 0.3676)),
    (15, 148, (0.0624, 0.1605), (0.0578, 0.1617)),
    (0, 20, (0.0000, 0.1611), (0.0000, 0.1684)),
    (1, 29, (0.0061, 0.1718), (0.0009, 0.1776)),
]


@pytest.mark.parametrize("x, n, wilson, exact", NEWCOMBE)
def test_intervals_match_newcombe_table(x, n, wilson, exact):
    w, e = wilson_interval(x, n), clopper_pearson_interval(x, n)
    assert (w.low, w.high) == pytest.approx(wilson, abs=6e-5)
    assert (e.low, e.high) == pytest.approx(exact, abs=6e-5)


def _wilson_closed_form(x: int, n: int, confidence: float) -> tuple[float, float]:
    z = stats.norm.isf((1 - confidence) / 2)
    centre = (x + z * z / 2) / (n + z * z)
    half = z / (n + z * z) * math.sqrt(x * (n - x) / n + z * z / 4)
    return max(0.0, centre - half), min(1.0, centre + half)


def _clopper_pearson_beta(x: int, n: int, confidence: float) -> tuple[float, float]:
    a = 1 - confidence
    return (0.0 if x == 0 else stats.beta.ppf(a / 2, x, n - x + 1),
            1.0 if x == n else stats.beta.ppf(1 - a / 2, x + 1, n - x))


@pytest.mark.parametrize("confidence", [0.8, 0.95, 0.99])
@pytest.mark.parametrize("n", [1, 2, 7, 40, 263, 4000])
def test_scipy_intervals_equal_the_closed_forms(n, confidence):
    """binomtest(...).proportion_ci gives the numbers of the formulas it replaced, to 1e-10."""
    for x in sorted({0, 1, n // 3, n // 2, n - 1, n}):
        w, e = wilson_interval(x, n, confidence), clopper_pearson_interval(x, n, confidence)
        assert (w.low, w.high) == pytest.approx(_wilson_closed_form(x, n, confidence), abs=1e-10), (x, n)
        assert (e.low, e.high) == pytest.approx(_clopper_pearson_beta(x, n, confidence), abs=1e-10), (x, n)
        assert (w.method, e.method, w.confidence) == ("wilson", "exact", confidence)


def test_bad_interval_arguments_are_named():
    with pytest.raises(ValueError, match=r"confidence 1.5 must be in \(0, 1\)"):
        wilson_interval(1, 2, 1.5)
    with pytest.raises(ValueError, match=r"clopper_pearson_interval: need 0 ≤ successes \(3\) ≤ trials \(2\)"):
        clopper_pearson_interval(3, 2)


def test_intervals_with_no_trials_contain_nothing():
    assert not wilson_interval(0, 0).contains(0.5)
    assert not clopper_pearson_interval(0, 0).contains(0.5)
    assert not offline_acceptance_interval(0.8, 0).contains(0.8)


@pytest.mark.parametrize("method, interval", [("wilson", wilson_interval), ("exact", clopper_pearson_interval)])
@pytest.mark.parametrize("offline, n", [(0.8, 40), (0.35, 17), (0.97, 200)])
def test_acceptance_interval_is_inversion_of_online_interval(method, interval, offline, n):
    """Online p̂ in the interval around offline ⇔ offline in the online estimate's interval."""
    for x in range(n + 1):
        around_offline = agreement_with_offline(x, n, offline, method=method).agrees
        assert around_offline == interval(x, n).contains(offline), (x, n)


def test_acceptance_interval_uses_online_sample_size():
    # The same offline recall: a 40-fraud canary gets a wide interval, a 4,000-fraud one a narrow one.
    wide, narrow = offline_acceptance_interval(0.8, 40), offline_acceptance_interval(0.8, 4000)
    assert wide.high - wide.low == pytest.approx(2 * 1.959964 * math.sqrt(0.8 * 0.2 / 40), rel=1e-6)
    assert narrow.high - narrow.low < (wide.high - wide.low) / 9
    assert agreement_with_offline(29, 40, 0.8).agrees  # 0.725: within noise of 40 frauds
    assert not agreement_with_offline(2900, 4000, 0.8).agrees  # 0.725 of 4,000 is a real drop
    assert agreement_with_offline(2900, 4000, 0.8).direction == "below"


def test_agreement_coverage_when_online_matches_offline():
    """With no skew (online recall truly equals offline), agreement fails about 5 % of the time."""
    rng = np.random.default_rng(11)
    n, p = 60, 0.8
    caught = rng.binomial(n, p, size=4000)
    exact = np.mean([agreement_with_offline(int(x), n, p, method="exact").agrees for x in caught])
    wilson = np.mean([agreement_with_offline(int(x), n, p).agrees for x in caught])
    assert exact >= 0.95 - 0.01  # exact: coverage ≥ 95 % by construction (minus simulation noise)
    assert 0.92 <= wilson <= 0.99


def _false_failure(n: int, p: float, method: str) -> float:
    """P(a version whose true proportion is `p` fails agreement on `n` online trials), exactly."""
    return sum(stats.binom.pmf(x, n, p) for x in range(n + 1)
               if not agreement_with_offline(x, n, p, method=method).agrees)


def test_the_policys_acceptance_region_keeps_its_level_at_a_handful_of_frauds():
    """A canary's slice of frauds is small at 5-20 %: the default region must hold 95 % there too."""
    policy = CanaryPolicy()
    assert policy.interval_method == "exact"
    worst = max(_false_failure(n, p, policy.interval_method)
                for n in range(1, 61) for p in (0.35, 0.6, 0.75, 0.8, 0.9, 0.97))
    assert worst <= 1 - policy.confidence
    # The score region misses its level there: 0 of 2 caught at 0.75 (6.25 %) is outside it.
    assert not agreement_with_offline(0, 2, 0.75, method="wilson").agrees
    assert _false_failure(2, 0.75, "wilson") == pytest.approx(0.0625)
    assert agreement_with_offline(0, 2, 0.75, method=policy.interval_method).agrees


def test_agreement_undecidable_cases():
    assert agreement_with_offline(0, 0, 0.8).direction == "unknown"  # no frauds seen online
    assert not agreement_with_offline(0, 0, 0.8).agrees
    assert not agreement_with_offline(5, 10, math.nan).agrees
    # Offline recall 1.0 and the online sample caught everything: agreement.
    assert agreement_with_offline(12, 12, 1.0).agrees and not agreement_with_offline(11, 12, 1.0).agrees


# ---------------------------------------------------------------------------------------------
# Sample size and evidence
# ---------------------------------------------------------------------------------------------


def test_sample_size_matches_r_power_prop_test_example():
    # R, ?power.prop.test: power.prop.test(p1 = .50, p2 = .75, power = .90)  # => n = 76.7
    # (it prints n = 76.7069 per group); by hand, with z_0.975 = 1.959964 and z_0.9 = 1.281552:
    z_a, z_b = 1.959964, 1.281552
    n = (z_a * math.sqrt(2 * 0.625 * 0.375) + z_b * math.sqrt(0.25 + 0.1875)) ** 2 / 0.25 ** 2
    assert n == pytest.approx(76.7069, abs=1e-3)
    assert two_proportion_sample_size(0.50, 0.75, alpha=0.05, power=0.90) == (77, 77)


def _power(n_candidate: int, p_b: float, p_c: float, ratio: float, alpha: float) -> float:
    n_b = ratio * n_candidate
    pooled = (ratio * p_b + p_c) / (1 + ratio)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n_b + 1 / n_candidate))
    se1 = math.sqrt(p_b * (1 - p_b) / n_b + p_c * (1 - p_c) / n_candidate)
    return stats.norm.cdf((abs(p_b - p_c) - stats.norm.isf(alpha / 2) * se0) / se1)


@pytest.mark.parametrize("p_b, p_c, ratio", [(0.8, 0.7, 4.0), (0.9, 0.85, 4.0), (0.6, 0.75, 1.0)])
def test_sample_size_is_the_smallest_with_the_power(p_b, p_c, ratio):
    n_c, n_b = two_proportion_sample_size(p_b, p_c, alpha=0.05, power=0.8, ratio=ratio)
    assert (n_c - 1) * ratio < n_b <= n_c * ratio  # the baseline sees `ratio` times the canary's frauds
    assert _power(n_c, p_b, p_c, ratio, 0.05) >= 0.8 > _power(n_c - 1, p_b, p_c, ratio, 0.05)


def test_sample_size_delivers_its_power_in_simulation():
    p_b, p_c, ratio = 0.8, 0.7, 4.0
    n_c, n_b = two_proportion_sample_size(p_b, p_c, alpha=0.05, power=0.8, ratio=ratio)
    rng = np.random.default_rng(5)
    x_b, x_c = rng.binomial(n_b, p_b, 3000), rng.binomial(n_c, p_c, 3000)
    pooled = (x_b + x_c) / (n_b + n_c)
    z = (x_c / n_c - x_b / n_b) / np.sqrt(pooled * (1 - pooled) * (1 / n_b + 1 / n_c))
    rejected = np.mean(2 * stats.norm.sf(np.abs(z)) < 0.05)
    assert 0.77 <= rejected <= 0.84


def test_plan_converts_frauds_to_requests():
    plan = plan_recall_evidence(0.8, 0.1, fraud_rate=0.002, canary_share=0.2)
    n_c, n_b = two_proportion_sample_size(0.8, 0.7, ratio=4.0)
    assert (plan.candidate_frauds_needed, plan.baseline_frauds_needed) == (n_c, n_b)
    # The canary sees 0.2 × 0.002 = 0.0004 frauds per request.
    assert plan.requests_needed == math.ceil(n_c / 0.0004)
    assert plan_recall_evidence(0.8, 0.1, fraud_rate=0.0, canary_share=0.2).requests_needed is None
    assert plan_recall_evidence(0.05, 0.1, fraud_rate=0.01, canary_share=0.2).candidate_recall == pytest.approx(0.15)


def test_evidence_status_until_reached():
    plan = plan_recall_evidence(0.8, 0.1, fraud_rate=0.01, canary_share=0.2)
    short = evidence_status(plan, candidate_frauds=plan.candidate_frauds_needed - 10,
                            baseline_frauds=plan.baseline_frauds_needed, requests=1)
    assert not short.sufficient and "insufficient evidence" in short.message
    assert short.requests_remaining == math.ceil(10 / (0.01 * 0.2))
    done = evidence_status(plan, candidate_frauds=plan.candidate_frauds_needed,
                           baseline_frauds=plan.baseline_frauds_needed, requests=1)
    assert done.sufficient and done.requests_remaining == 0


# ---------------------------------------------------------------------------------------------
# recommend
# ---------------------------------------------------------------------------------------------


def _metrics(version: str, *, requests: int, share: float, frauds: int, caught: int, false_flags: int,
             errors: int = 0, p99: float = 40.0) -> VersionMetrics:
    answered = requests - errors
    confusion = Confusion(tp=caught, fp=false_flags, fn=frauds - caught, tn=answered - frauds - false_flags)
    return VersionMetrics(version, requests, errors, caught + false_flags, share, 10.0, 30.0, p99, confusion)


def _healthy(**canary_overrides) -> dict[str, VersionMetrics]:
    """A 100,000-request canary run at 1 % fraud: 20 % to v2, recall 0.8 for both, no errors."""
    canary = dict(requests=20_000, share=0.2, frauds=200, caught=160, false_flags=20)
    canary.update(canary_overrides)
    return {"v1": _metrics("v1", requests=80_000, share=0.8, frauds=800, caught=640, false_flags=80),
            "v2": _metrics("v2", **canary)}


OFFLINE = {"v1": OfflineMetrics(precision=0.889, recall=0.8, flag_rate=0.009),
           "v2": OfflineMetrics(precision=0.889, recall=0.8, flag_rate=0.009)}
POLICY = CanaryPolicy(detectable_recall_difference=0.12)


def _rule(rec, rule):
    return next(c for c in rec.checks if c.rule == rule)


def test_promote_when_every_check_passes():
    rec = recommend(_healthy(), OFFLINE, baseline_version="v1", canary_version="v2", policy=POLICY)
    assert rec.action == PROMOTE, rec.reasons
    assert all(c.status == "pass" for c in rec.checks)
    assert rec.evidence is not None and rec.evidence.sufficient
    assert {"canary.error_rate", "canary.latency_p99", "traffic.canary_share", "canary.recall_vs_offline",
            "canary.recall_vs_baseline", "evidence.sample_size"} <= {c.rule for c in rec.checks}


def test_insufficient_evidence_holds():
    # Same rates, a tenth of the traffic: nothing fails, but too few frauds for the planned power.
    online = {"v1": _metrics("v1", requests=8_000, share=0.8, frauds=80, caught=64, false_flags=8),
              "v2": _metrics("v2", requests=2_000, share=0.2, frauds=20, caught=16, false_flags=2)}
    rec = recommend(online, OFFLINE, baseline_version="v1", canary_version="v2", policy=POLICY)
    assert rec.action == HOLD
    assert _rule(rec, "evidence.sample_size").status == "insufficient"
    assert _rule(rec, "canary.recall_vs_baseline").status == "insufficient"
    assert rec.evidence.requests_remaining > 0
    assert not any(c.status == "fail" for c in rec.checks)


def test_canary_errors_above_objective_roll_back():
    rec = recommend(_healthy(errors=400, false_flags=20), OFFLINE, baseline_version="v1", canary_version="v2",
                    policy=POLICY)
    assert rec.action == ROLLBACK
    assert _rule(rec, "canary.error_rate").status == "fail"
    assert any(r.startswith("FAIL canary.error_rate") and r.endswith("rollback") for r in rec.reasons)


def test_unattributed_failures_count_against_canary():
    online = _healthy()
    online[UNATTRIBUTED] = VersionMetrics(UNATTRIBUTED, 500, 500, 0, 0.005, math.nan, math.nan, math.nan, None)
    rec = recommend(online, OFFLINE, baseline_version="v1", canary_version="v2", policy=POLICY)
    assert rec.action == ROLLBACK and _rule(rec, "canary.error_rate").status == "fail"
    lenient = CanaryPolicy(detectable_recall_difference=0.12, unattributed_errors_against_canary=False)
    rec = recommend(online, OFFLINE, baseline_version="v1", canary_version="v2", policy=lenient)
    assert _rule(rec, "canary.error_rate").status == "pass"


def test_significantly_worse_recall_rolls_back():
    rec = recommend(_healthy(caught=120), OFFLINE, baseline_version="v1", canary_version="v2", policy=POLICY)
    assert rec.action == ROLLBACK
    check = _rule(rec, "canary.recall_vs_baseline")
    assert check.status == "fail" and "significantly worse" in check.detail
    assert rec.comparisons["canary.recall_vs_baseline"]["p_value"] < 0.05


def test_canary_recall_above_offline_interval_holds_not_promotes():
    # Better than the baseline, but far from its own offline recall: skew to investigate.
    rec = recommend(_healthy(caught=196), OFFLINE, baseline_version="v1", canary_version="v2", policy=POLICY)
    assert _rule(rec, "canary.recall_vs_offline").status == "fail"
    assert _rule(rec, "canary.recall_vs_baseline").status == "pass"
    assert rec.action == HOLD


def test_traffic_share_off_target_holds():
    rec = recommend(_healthy(share=0.31), OFFLINE, baseline_version="v1", canary_version="v2", policy=POLICY)
    assert rec.action == HOLD and _rule(rec, "traffic.canary_share").status == "fail"
    rec = recommend(_healthy(share=0.24), OFFLINE, baseline_version="v1", canary_version="v2", policy=POLICY)
    assert _rule(rec, "traffic.canary_share").status == "pass"


def test_latency_breach_rolls_back_only_when_the_baseline_meets_it():
    rec = recommend(_healthy(p99=400.0), OFFLINE, baseline_version="v1", canary_version="v2", policy=POLICY)
    assert rec.action == ROLLBACK and _rule(rec, "canary.latency_p99").status == "fail"
    online = _healthy(p99=400.0)
    online["v1"] = _metrics("v1", requests=80_000, share=0.8, frauds=800, caught=640, false_flags=80, p99=300.0)
    rec = recommend(online, OFFLINE, baseline_version="v1", canary_version="v2", policy=POLICY)
    assert rec.action == HOLD  # the whole service is slow: not the canary's doing


def test_precision_and_flag_rate_divergence_hold():
    rec = recommend(_healthy(false_flags=160), OFFLINE, baseline_version="v1", canary_version="v2", policy=POLICY)
    assert _rule(rec, "canary.precision_vs_baseline").status == "fail"
    assert _rule(rec, "canary.flag_rate_vs_baseline").status == "pass"  # 320 vs 180 flags per 20k: ratio < 2
    assert rec.action == HOLD
    rec = recommend(_healthy(false_flags=300), OFFLINE, baseline_version="v1", canary_version="v2", policy=POLICY)
    assert _rule(rec, "canary.flag_rate_vs_baseline").status == "fail"
    assert rec.action == HOLD


def test_missing_or_nan_metrics_never_promote():
    for offline in ({"v1": OFFLINE["v1"]},  # no offline metrics for the canary
                    {**OFFLINE, "v2": OfflineMetrics(precision=math.nan, recall=0.8)}):
        rec = recommend(_healthy(), offline, baseline_version="v1", canary_version="v2", policy=POLICY)
        assert rec.action == HOLD and any(c.status == "insufficient" for c in rec.checks)
    rec = recommend(_healthy(p99=math.nan), OFFLINE, baseline_version="v1", canary_version="v2", policy=POLICY)
    assert rec.action == HOLD and _rule(rec, "canary.latency_p99").status == "insufficient"
    # Metrics from Prometheus carry no labels: recall cannot be judged.
    online = {v: VersionMetrics(v, m.requests, m.errors, m.flagged, m.traffic_share, 10.0, 30.0, 40.0, None)
              for v, m in _healthy().items()}
    rec = recommend(online, OFFLINE, baseline_version="v1", canary_version="v2", policy=POLICY)
    assert rec.action == HOLD and _rule(rec, "canary.recall_vs_baseline").status == "insufficient"


def test_zero_traffic_to_canary_holds_and_zero_frauds_is_insufficient():
    online = {"v1": _healthy()["v1"]}
    rec = recommend(online, OFFLINE, baseline_version="v1", canary_version="v2", policy=POLICY)
    assert rec.action == HOLD
    assert _rule(rec, "traffic.canary_share").status == "fail"
    assert _rule(rec, "canary.error_rate").status == "insufficient"
    no_frauds = {"v1": _metrics("v1", requests=8_000, share=0.8, frauds=0, caught=0, false_flags=8),
                 "v2": _metrics("v2", requests=2_000, share=0.2, frauds=0, caught=0, false_flags=2)}
    rec = recommend(no_frauds, OFFLINE, baseline_version="v1", canary_version="v2", policy=POLICY)
    assert rec.action == HOLD
    assert _rule(rec, "canary.recall_vs_offline").status == "insufficient"
    assert "unknown" in _rule(rec, "evidence.sample_size").detail


def test_a_third_version_receiving_traffic_holds():
    online = _healthy()
    online["v0"] = _metrics("v0", requests=1_000, share=0.01, frauds=10, caught=8, false_flags=1)
    rec = recommend(online, OFFLINE, baseline_version="v1", canary_version="v2", policy=POLICY)
    assert rec.action == HOLD and _rule(rec, "traffic.attribution").status == "fail"
    assert "v0" in _rule(rec, "traffic.attribution").detail


def test_baseline_trouble_holds_rather_than_promoting_or_rolling_back():
    online = _healthy()
    online["v1"] = _metrics("v1", requests=80_000, share=0.8, frauds=800, caught=640, false_flags=80, errors=4_000)
    rec = recommend(online, OFFLINE, baseline_version="v1", canary_version="v2", policy=POLICY)
    assert rec.action == HOLD and _rule(rec, "baseline.error_rate").status == "fail"


def test_recommendation_serialises_every_reason():
    rec = recommend(_healthy(caught=120), OFFLINE, baseline_version="v1", canary_version="v2", policy=POLICY)
    d = rec.to_dict()
    assert d["action"] == ROLLBACK and len(d["reasons"]) == len(rec.checks) == len(d["checks"])
    assert d["reasons"][0].startswith("FAIL")  # failures first
    assert any(r.startswith("PASS") for r in d["reasons"])  # passed reasons are kept too


def test_offline_metrics_from_evaluate_dict_and_policy_validation():
    off = OfflineMetrics.from_mapping({"precision": 0.9, "recall": 0.8, "tp": 8, "fp": 1, "fn": 2, "tn": 989})
    assert off.flag_rate == pytest.approx(9 / 1000)
    with pytest.raises(ValueError):
        CanaryPolicy(max_error_rate=math.nan)
    with pytest.raises(ValueError):
        CanaryPolicy(target_canary_percent=0)
    with pytest.raises(ValueError):
        recommend(_healthy(), OFFLINE, baseline_version="v2", canary_version="v2")
