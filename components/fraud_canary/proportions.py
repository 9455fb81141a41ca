"""Proportions: candidate vs baseline tests, confidence intervals, and the trials a test needs.

The intervals are SciPy's (`binomtest(k, n).proportion_ci`): Wilson's score interval and the
exact Clopper-Pearson one; tests/unit/test_online.py checks them against the closed forms.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from scipy import stats

from fraud_canary.counts import check_count, ratio

IntervalMethod = Literal["wilson", "exact"]

#: Fisher's exact test replaces the z-test when any expected cell count is below this.
MIN_EXPECTED_COUNT = 5.0


@dataclass(frozen=True)
class ProportionComparison:
    """Candidate vs baseline proportion: pooled two-sided z-test, or Fisher's exact test when any
    expected cell count is below 5, or "undefined" (not significant) when either has no trials."""

    baseline_successes: int
    baseline_trials: int
    candidate_successes: int
    candidate_trials: int
    method: Literal["z", "fisher", "undefined"]
    z: float  # (candidate − baseline) / pooled SE; NaN unless method == "z"
    p_value: float
    alpha: float
    min_expected_count: float

    @property
    def baseline_proportion(self) -> float:
        return ratio(self.baseline_successes, self.baseline_trials)

    @property
    def candidate_proportion(self) -> float:
        return ratio(self.candidate_successes, self.candidate_trials)

    @property
    def difference(self) -> float:
        """candidate − baseline (positive: the candidate's proportion is higher)."""
        return self.candidate_proportion - self.baseline_proportion

    @property
    def significant(self) -> bool:
        return math.isfinite(self.p_value) and self.p_value < self.alpha

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "baseline_proportion": self.baseline_proportion,
                "candidate_proportion": self.candidate_proportion, "difference": self.difference,
                "significant": self.significant}


def compare_proportions(
    baseline_successes: int, baseline_trials: int, candidate_successes: int, candidate_trials: int,
    *, alpha: float = 0.05,
) -> ProportionComparison:
    """Two-sided test of equal proportions, candidate vs baseline.

    The pooled two-proportion z-test, z = (p_c − p_b) / sqrt(p (1 − p) (1/n_b + 1/n_c)) with p the
    pooled proportion; when any expected count of the 2×2 table (successes/failures × versions)
    is below 5 the normal approximation is poor, so Fisher's exact test is used instead (this
    includes the degenerate tables where every trial succeeded or every trial failed: p = 1).
    """
    check_count(baseline_successes, baseline_trials, "baseline")
    check_count(candidate_successes, candidate_trials, "candidate")
    b_s, b_n, c_s, c_n = int(baseline_successes), int(baseline_trials), int(candidate_successes), int(candidate_trials)

    def result(method: Literal["z", "fisher", "undefined"], z: float, p_value: float,
               min_expected: float) -> ProportionComparison:
        return ProportionComparison(b_s, b_n, c_s, c_n, method=method, z=z, p_value=p_value, alpha=alpha,
                                    min_expected_count=min_expected)

    if b_n == 0 or c_n == 0:
        return result("undefined", math.nan, math.nan, 0.0)
    total, successes = b_n + c_n, b_s + c_s
    min_expected = float(min(t * s / total for t in (b_n, c_n) for s in (successes, total - successes)))
    if min_expected < MIN_EXPECTED_COUNT:
        table = [[b_s, b_n - b_s], [c_s, c_n - c_s]]
        p_value = float(stats.fisher_exact(table, alternative="two-sided").pvalue)
        return result("fisher", math.nan, min(p_value, 1.0), min_expected)
    pooled = successes / total
    se = math.sqrt(pooled * (1 - pooled) * (1 / b_n + 1 / c_n))
    z = (c_s / c_n - b_s / b_n) / se
    return result("z", z, float(2 * stats.norm.sf(abs(z))), min_expected)


@dataclass(frozen=True)
class Interval:
    """A closed interval of proportions; NaN bounds when there were no trials (contains nothing)."""

    low: float
    high: float
    confidence: float
    method: str

    def contains(self, value: float) -> bool:
        # A tiny tolerance so that a bound computed in floating point still contains itself.
        eps = 1e-12
        return all(map(math.isfinite, (self.low, self.high, value))) and self.low - eps <= value <= self.high + eps


def normal_quantile(confidence: float) -> float:
    """z such that ±z holds `confidence` of a standard normal."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence {confidence} must be in (0, 1)")
    return float(stats.norm.isf((1 - confidence) / 2))


def _binomial_interval(successes: int, trials: int, confidence: float, method: IntervalMethod,
                       name: str) -> Interval:
    normal_quantile(confidence)  # the same error for a bad confidence as every other interval
    check_count(successes, trials, name)
    if trials == 0:  # binomtest needs a trial; no trials, no interval
        return Interval(math.nan, math.nan, confidence, method)
    ci = stats.binomtest(int(successes), int(trials)).proportion_ci(confidence_level=confidence, method=method)
    return Interval(max(0.0, float(ci.low)), min(1.0, float(ci.high)), confidence, method)


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> Interval:
    """Wilson score interval of successes/trials: the proportions p a two-sided score test at
    1 − confidence would not reject. Good coverage even for few trials and p near 0 or 1."""
    return _binomial_interval(successes, trials, confidence, "wilson", "wilson_interval")


def clopper_pearson_interval(successes: int, trials: int, confidence: float = 0.95) -> Interval:
    """Exact (Clopper-Pearson) interval: inverts two one-sided binomial tests at (1 − confidence)/2;
    coverage is at least `confidence` for every p, at the price of width."""
    return _binomial_interval(successes, trials, confidence, "exact", "clopper_pearson_interval")


def two_proportion_sample_size(
    p_baseline: float, p_candidate: float, *, alpha: float = 0.05, power: float = 0.8, ratio: float = 1.0,
) -> tuple[int, int]:
    """(n_candidate, n_baseline) trials for a two-sided pooled two-proportion z-test at `alpha`
    to detect p_candidate ≠ p_baseline with probability `power`, with n_baseline = ratio·n_candidate.

    n_c = [z_{1−α/2} sqrt(p̄ q̄ (1 + 1/r)) + z_{1−β} sqrt(p_b q_b / r + p_c q_c)]² / (p_b − p_c)²,
    p̄ = (r p_b + p_c) / (1 + r): pooled variance under H0, unpooled under H1, no continuity
    correction (the formula of R's power.prop.test for r = 1). Both rounded up.
    """
    for name, p in (("p_baseline", p_baseline), ("p_candidate", p_candidate)):
        if not (math.isfinite(p) and 0 <= p <= 1):
            raise ValueError(f"{name} {p} must be a proportion")
    if p_baseline == p_candidate:
        raise ValueError("p_baseline and p_candidate must differ")
    if not (0 < alpha < 1 and 0 < power < 1 and ratio > 0):
        raise ValueError("need 0 < alpha < 1, 0 < power < 1, ratio > 0")
    z_a, z_b = stats.norm.isf(alpha / 2), stats.norm.isf(1 - power)
    pooled = (ratio * p_baseline + p_candidate) / (1 + ratio)
    numerator = (z_a * math.sqrt(pooled * (1 - pooled) * (1 + 1 / ratio))
                 + z_b * math.sqrt(p_baseline * (1 - p_baseline) / ratio + p_candidate * (1 - p_candidate)))
    n_candidate = numerator ** 2 / (p_baseline - p_candidate) ** 2
    # Round away float noise before ceil (76.000000001 is 76).
    return math.ceil(round(n_candidate, 9)), math.ceil(round(n_candidate * ratio, 9))
