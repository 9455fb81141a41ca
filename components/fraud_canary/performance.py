"""Precision and recall estimated from calibrated scores, without labels: confidence-based
performance estimation (CBPE, as NannyML names it).

With calibrated p_i = P(fraud | score_i): E[TP] = Σ_flagged p_i, E[FP] = Σ_flagged (1 − p_i),
E[FN] = Σ_not-flagged p_i; precision ≈ E[TP] / flagged, recall ≈ E[TP] / (E[TP] + E[FN]).

Interval: a Monte Carlo **posterior predictive** interval of the realised precision and recall
of the served rows, covering both sources of error:
* the calibration's own uncertainty: each calibration block's fraud rate is drawn from its Beta
  posterior (`ScoreProfile.posterior`, counts of the model's validation split);
* the label sampling: given those rates, the served rows' labels are Bernoulli, i.e. the frauds
  among a block's flagged (and unflagged) rows are Binomial, so the sum over rows is the exact
  Poisson-binomial, drawn per block (a few thousand draws × a few hundred blocks, vectorised).

CBPE assumes the score → P(fraud) map learned offline still holds online (covariate shift is
fine, concept drift is not): frauds of a pattern the model scores low are invisible to it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from fraud.score_profile import ScoreProfile

DRAWS = 4000
LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    estimate: float
    lower: float
    upper: float

    def covers(self, value: float) -> bool:
        return self.lower <= value <= self.upper


@dataclass(frozen=True)
class PerformanceEstimate:
    """CBPE precision and recall of one batch of served rows, with their intervals."""

    precision: Estimate
    recall: Estimate
    expected_tp: float
    expected_fp: float
    expected_fn: float
    rows: int
    flagged: int
    level: float
    method: str = "CBPE; Monte Carlo interval: Beta posterior per calibration block × Binomial labels"


def estimate_performance(scores: np.ndarray, decisions: np.ndarray, profile: ScoreProfile, *,
                         draws: int = DRAWS, level: float = LEVEL, seed: int = 0) -> PerformanceEstimate:
    """CBPE of served `scores` and their `decisions` (1 = flagged) under the model's profile."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    flagged = np.asarray(decisions).astype(bool).ravel()
    if len(scores) != len(flagged):
        raise ValueError(f"need one decision per score: {len(scores)} scores, {len(flagged)} decisions")
    blocks = profile.block_of(scores)
    n_blocks = len(profile.block_rows)
    flagged_rows = np.bincount(blocks[flagged], minlength=n_blocks)
    other_rows = np.bincount(blocks[~flagged], minlength=n_blocks)
    a, b = profile.posterior()
    rate = a / (a + b)
    tp, fn = float(flagged_rows @ rate), float(other_rows @ rate)
    n_flagged = int(flagged_rows.sum())

    rng = np.random.default_rng(seed)
    rates = rng.beta(a, b, size=(draws, n_blocks))
    tp_draws = rng.binomial(flagged_rows, rates).sum(axis=1).astype(np.float64)
    fn_draws = rng.binomial(other_rows, rates).sum(axis=1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision_draws = tp_draws / n_flagged if n_flagged else np.full(draws, np.nan)
        recall_draws = tp_draws / (tp_draws + fn_draws)
    return PerformanceEstimate(
        precision=_interval(tp / n_flagged if n_flagged else math.nan, precision_draws, level),
        recall=_interval(tp / (tp + fn) if tp + fn > 0 else math.nan, recall_draws, level),
        expected_tp=tp, expected_fp=n_flagged - tp, expected_fn=fn, rows=len(scores), flagged=n_flagged,
        level=level)


def _interval(estimate: float, draws: np.ndarray, level: float) -> Estimate:
    finite = draws[np.isfinite(draws)]
    if not len(finite):
        return Estimate(estimate, math.nan, math.nan)
    tail = (1 - level) / 2 * 100
    lower, upper = np.percentile(finite, [tail, 100 - tail])
    return Estimate(estimate, float(lower), float(upper))
