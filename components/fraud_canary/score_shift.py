"""Label-free signals of one version's served scores: flag rate, and the shift of the score
distribution against the model's offline (validation) profile, by KS and PSI."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from fraud.score_profile import ScoreProfile
from scipy import stats

#: PSI floor for a bin's share: an empty bin counts as 0.01 % of rows, so PSI stays finite and a
#: single empty bin adds at most ≈ p·ln(p / 1e-4) instead of infinity.
PSI_EPSILON = 1e-4


@dataclass(frozen=True)
class KsResult:
    """Two-sample Kolmogorov–Smirnov statistic of served vs offline scores and its p-value."""

    statistic: float
    p_value: float
    rows: int


def flag_rate(decisions: np.ndarray) -> float:
    """Share of rows flagged as fraud; NaN with no rows."""
    decisions = np.asarray(decisions)
    return float(decisions.mean()) if len(decisions) else math.nan


def psi(expected: np.ndarray, observed: np.ndarray, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index Σ (o − e) ln(o / e) of two count (or share) vectors over the
    same bins, each normalised to shares and floored at `epsilon`. NaN if either is empty."""
    expected, observed = np.asarray(expected, dtype=np.float64), np.asarray(observed, dtype=np.float64)
    if expected.shape != observed.shape:
        raise ValueError(f"expected and observed need the same bins, got {expected.shape} and {observed.shape}")
    if expected.sum() <= 0 or observed.sum() <= 0:
        return math.nan
    e = np.maximum(expected / expected.sum(), epsilon)
    o = np.maximum(observed / observed.sum(), epsilon)
    return float(np.sum((o - e) * np.log(o / e)))


def score_psi(scores: np.ndarray, profile: ScoreProfile, epsilon: float = PSI_EPSILON) -> float:
    """PSI of served scores over the offline profile's score deciles."""
    observed = np.bincount(np.searchsorted(np.asarray(profile.bin_edges), np.asarray(scores, dtype=np.float64),
                                           side="right"), minlength=len(profile.bin_counts))
    return psi(np.asarray(profile.bin_counts), observed, epsilon)


def score_ks(scores: np.ndarray, profile: ScoreProfile) -> KsResult:
    """KS of served scores against the offline CDF (interpolated from the profile's quantiles).

    The p-value treats it as two-sample with n·m/(n+m) effective rows (m = validation rows), as
    `scipy.stats.ks_2samp(method="asymp")` does: the offline CDF is itself an estimate."""
    served = np.sort(np.asarray(scores, dtype=np.float64))
    n = len(served)
    if not n:
        return KsResult(math.nan, math.nan, 0)
    quantiles = np.asarray(profile.quantiles)
    offline = np.interp(served, quantiles, np.linspace(0, 1, len(quantiles)))
    right = np.searchsorted(served, served, side="right") / n
    left = np.searchsorted(served, served, side="left") / n
    statistic = float(max(np.max(np.abs(right - offline)), np.max(np.abs(left - offline))))
    m = profile.validation_rows
    effective = max(1, round(n * m / (n + m)))
    return KsResult(statistic, float(stats.kstwo.sf(statistic, effective)), n)
