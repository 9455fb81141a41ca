"""How often the interval the label-free promotion rule uses covers the truth, on real model scores
(issue 17: "the label-free estimate that may promote keeps its promise").

The rule (`fraud_canary.progressive.label_free_evidence`) promotes without labels when paired CBPE's
one-sided lower bound of Δ = recall(canary) − recall(baseline), over every shadow pair of the
rollout, is ≥ −margin, each version's calibration judging the rows it alone flags
(`fraud_canary.paired_scores.own_flags_difference`). It can be wrong only where the lower bound
lies above the true Δ, so its promise is the coverage P(lower ≤ true Δ) at its level. Δ under
each calibration throughout (`recall_difference`) is measured beside it.

Measured by bootstrap on a labelled holdout scored once by both exported models (each artifact's
own signature on the holdout scaled by its own feature contract, as the transformer serves it):

* a draw resamples `pairs` holdout rows with replacement: the shadow pairs of one rollout;
* it counts them as the transformer's counters do (decision cell × each version's score bucket,
  "≤ bound" buckets `fraud.schema.PAIRED_SCORE_BOUNDS`) into the `PairedScores` the rule reads;
* the truth is Δ of the whole holdout, the traffic the pairs are drawn from (the rule's bound is a
  population statement: `own_flags_difference`);
* the rule's lower bounds are `recall_difference` under each version's calibration (its score
  profile, `fraud.export.read_score_profile`) at the rule's level.

Rows are grouped once by (label, cell, both buckets), so a draw is one multinomial over the groups:
the same distribution as resampling rows, at a cost independent of `pairs`.

Measured on a 1,000,000-transaction run's holdout (198,000 rows, 343 frauds; v1 recall 0.353, v2
0.857; `fraud-rollout bench coverage`, 1,000 draws per row, 7,433 to 148,656 pairs): v2 over v1, the
rule covers 0.999 to 1.000 and promotes in 0.916 (7,433 pairs) to 1.000 of draws; Δ under v1's
calibration throughout (blind to the new pattern) is −0.07 where the truth is +0.50, and a rule
needing it promoted in 13 % to 0.8 %. v1 over v2 (the stale model as the canary): promoted in none,
but the rule's coverage is 0.945 to 0.968: v1's precision fell under drift, so its own calibration
over-counts the frauds among its flags. The promise holds for a canary whose calibration holds on
its flags, which the pipeline's candidate (trained on the newest window) is meant to be.
"""
from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from fraud.export import SignatureScorer, read_contract, read_metadata, read_score_profile
from fraud.protocol import FRAUD_PROBABILITY, IS_FRAUD
from fraud.schema import FEATURES, LABEL, PAIRED_SCORE_BOUNDS, DataError
from fraud.score_profile import ScoreProfile
from fraud_canary.paired_scores import (
    CELLS,
    DRAWS,
    DifferenceEstimate,
    PairedScores,
    own_flags_difference,
    recall_difference,
)
from fraud_canary.progressive import RolloutPolicy, label_free_level
from fraud_canary.simulation import BASELINE, CANARY, ScoredPairs

#: The rule's bound (each version's calibration on the rows it alone flags), beside each calibration's own.
RULE = "rule"
#: Score buckets of the shadow-pair counters, the last running to 1.
BUCKETS = len(PAIRED_SCORE_BOUNDS) + 1


def rule_level(policy: RolloutPolicy) -> float:
    """The one-sided level `label_free_evidence` computes its lower bound at (1 − 0.05/4 by default)."""
    return label_free_level(policy)


def pairs_per_rollout(rows_per_window: int, shadow: float, windows: int) -> int:
    """Shadow pairs a rollout gathers: `shadow` of every row of each of its `windows` is scored by both."""
    if rows_per_window < 1 or windows < 1 or not 0 < shadow <= 1:
        raise ValueError(f"need rows_per_window ≥ 1, windows ≥ 1 and shadow in (0, 1], got {rows_per_window}, "
                         f"{windows}, {shadow}")
    return max(1, round(rows_per_window * shadow * windows))


@dataclass(frozen=True)
class ScoredHoldout:
    """A labelled holdout scored by several versions: their scores, their own decisions, their calibrations."""

    labels: np.ndarray
    scores: Mapping[str, np.ndarray]
    flags: Mapping[str, np.ndarray]
    profiles: Mapping[str, ScoreProfile]

    def __post_init__(self) -> None:
        n = len(self.labels)
        if not n or not set(self.scores) == set(self.flags) == set(self.profiles):
            raise DataError("a scored holdout needs rows, and scores, decisions and a profile for every version")
        if any(len(self.scores[v]) != n or len(self.flags[v]) != n for v in self.scores):
            raise DataError(f"every version's scores and decisions must cover the {n} holdout rows")

    def recall(self, version: str) -> float:
        frauds = self.labels == 1
        return float(self.flags[version][frauds].mean()) if frauds.any() else math.nan


def score_holdout(frame: pd.DataFrame, artifacts: Mapping[str, str | Path]) -> ScoredHoldout:
    """Score a labelled holdout (FEATURES + Class) with each exported model (version → artifact root)."""
    missing = [c for c in (*FEATURES, LABEL) if c not in frame.columns]
    if missing:
        raise DataError(f"the holdout lacks {', '.join(missing)}")
    raw = frame.loc[:, list(FEATURES)].to_numpy(dtype=np.float64)
    scores, flags, profiles = {}, {}, {}
    for version, root in artifacts.items():
        out = SignatureScorer(root)(read_contract(root).transform(raw))
        scores[version] = out[FRAUD_PROBABILITY].astype(np.float64).ravel()
        flags[version] = out[IS_FRAUD].astype(bool).ravel()
        profiles[version] = read_score_profile(root)
    return ScoredHoldout(frame[LABEL].to_numpy().astype(np.int64), scores, flags, profiles)


class PairedHoldout:
    """The holdout's rows as shadow pairs of (baseline, canary), grouped by label, decision cell
    (`CELLS`) and each version's score bucket; `draw` resamples a rollout's pairs from them."""

    def __init__(self, holdout: ScoredHoldout, baseline: str, canary: str) -> None:
        self.baseline, self.canary = baseline, canary
        self.profiles = {v: holdout.profiles[v] for v in (baseline, canary)}
        cell = np.full(len(holdout.labels), -1)
        for i, (c, b) in enumerate(CELLS):
            cell[(holdout.flags[canary] == c) & (holdout.flags[baseline] == b)] = i
        # "≤ bound" buckets, as the transformer's counters (searchsorted, side="left")
        bucket = {v: np.searchsorted(PAIRED_SCORE_BOUNDS, holdout.scores[v]) for v in (baseline, canary)}
        key = ((holdout.labels * len(CELLS) + cell) * BUCKETS + bucket[baseline]) * BUCKETS + bucket[canary]
        keys, self.sizes = np.unique(key, return_counts=True)
        self.fraud = keys // (len(CELLS) * BUCKETS * BUCKETS) == 1
        self.cell = keys // (BUCKETS * BUCKETS) % len(CELLS)
        self.bucket = {baseline: keys // BUCKETS % BUCKETS, canary: keys % BUCKETS}
        self.true_delta = self.delta(self.sizes)

    def delta(self, counts: np.ndarray) -> float:
        """True Δ recall (canary − baseline) of rows counted `counts` per group; NaN without frauds."""
        frauds = counts[self.fraud]
        total = frauds.sum()
        gained = frauds[self.cell[self.fraud] == 0].sum() - frauds[self.cell[self.fraud] == 1].sum()
        return float(gained / total) if total else math.nan

    def paired_scores(self, counts: np.ndarray) -> PairedScores:
        """The counters' view of rows counted `counts` per group: no labels."""
        rows = {v: tuple(tuple(int(n) for n in row) for row in np.bincount(
            self.cell * BUCKETS + b, weights=counts, minlength=len(CELLS) * BUCKETS).reshape(len(CELLS), BUCKETS))
            for v, b in self.bucket.items()}
        return PairedScores(self.baseline, self.canary, rows)

    def draw(self, rng: np.random.Generator, pairs: int) -> tuple[PairedScores, float]:
        """`pairs` rows resampled with replacement: what the counters see, and the true Δ on them."""
        counts = rng.multinomial(pairs, self.sizes / self.sizes.sum())
        return self.paired_scores(counts), self.delta(counts)

    def draw_scores(self, rng: np.random.Generator, pairs: int) -> PairedScores:
        """What the counters see of `pairs` resampled rows (`draw` without the truth)."""
        return self.draw(rng, pairs)[0]


def equal_canary(holdout: ScoredHoldout, baseline: str, canary: str) -> ScoredHoldout:
    """The holdout with `canary`'s scores, decisions and calibration replaced by `baseline`'s: a
    canary that is the baseline itself."""
    def same(by_version: Mapping[str, Any]) -> dict[str, Any]:
        return {**by_version, canary: by_version[baseline]}

    return ScoredHoldout(holdout.labels, same(holdout.scores), same(holdout.flags), same(holdout.profiles))


def scored_pairs(holdout: ScoredHoldout) -> ScoredPairs:
    """The rollout simulator's shadow-pair scores: rows of the holdout resampled as shadow pairs of
    the simulator's baseline (`BASELINE`) and canary (`CANARY`), the holdout's versions of those names."""
    paired = PairedHoldout(holdout, BASELINE, CANARY)
    return ScoredPairs(paired.profiles, paired.draw_scores)


def lower_bounds(scores: PairedScores, profiles: Mapping[str, ScoreProfile], level: float,
                 mc_draws: int = DRAWS) -> dict[str, DifferenceEstimate]:
    """The rule's estimate (`RULE`: each version's calibration on the rows it alone flags) and, for
    the record, Δ under the canary's and under the baseline's calibration throughout, at `level`."""
    out = {v: recall_difference(scores, v, profiles[v], level=level, draws=mc_draws)
           for v in (scores.canary_version, scores.baseline_version)}
    out[RULE] = own_flags_difference(scores, profiles, level=level, draws=mc_draws)
    return out


@dataclass(frozen=True)
class Coverage:
    """Coverage of the rule's lower bounds over bootstrap draws at one number of pairs."""

    baseline: str
    canary: str
    pairs: int
    draws: int
    level: float
    margin: float
    mc_draws: int
    holdout_delta: float
    #: Draws with at least one fraud (the true Δ exists); coverage is over these.
    judged: int
    #: Draws whose lower bound ≤ the holdout's true Δ: per calibration (version) and for the rule (`RULE`).
    covered: Mapping[str, int]
    #: Median of estimate − lower, per calibration and for the rule.
    median_width: Mapping[str, float]
    median_estimate: Mapping[str, float]
    median_true_delta: float
    #: Draws in which the rule would promote: its lower bound ≥ −margin.
    promoted: int
    seconds: float

    def coverage(self, which: str = RULE) -> float:
        return self.covered[which] / self.judged if self.judged else math.nan

    @property
    def standard_error(self) -> float:
        """Monte Carlo standard error of a coverage equal to the nominal level over `judged` draws:
        the yardstick for "at least nominal minus its Monte Carlo error"."""
        return math.sqrt(self.level * (1 - self.level) / self.judged) if self.judged else math.nan

    @property
    def promote_share(self) -> float:
        return self.promoted / self.draws

    def to_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "canary": self.canary, "pairs": self.pairs, "draws": self.draws,
                "judged": self.judged, "level": self.level, "margin": self.margin, "mc_draws": self.mc_draws,
                "holdout_delta": self.holdout_delta, "median_true_delta": self.median_true_delta,
                "coverage": {k: self.coverage(k) for k in self.covered}, "standard_error": self.standard_error,
                "median_width": dict(self.median_width), "median_estimate": dict(self.median_estimate),
                "promote_share": self.promote_share, "seconds": self.seconds}


def measure_coverage(paired: PairedHoldout, *, pairs: int, draws: int, policy: RolloutPolicy | None = None,
                     seed: int = 0, mc_draws: int = DRAWS) -> Coverage:
    """Coverage of the rule's lower bounds over `draws` bootstrap rollouts of `pairs` shadow pairs."""
    policy = policy or RolloutPolicy()
    if pairs < 1 or draws < 1:
        raise ValueError(f"need pairs ≥ 1 and draws ≥ 1, got {pairs}, {draws}")
    level, margin = rule_level(policy), policy.canary.detectable_recall_difference
    versions = (paired.canary, paired.baseline, RULE)
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    truth, lowers, estimates = np.empty(draws), np.empty((draws, 3)), np.empty((draws, 3))
    for i in range(draws):
        scores, truth[i] = paired.draw(rng, pairs)
        bounds = lower_bounds(scores, paired.profiles, level, mc_draws)
        lowers[i] = [bounds[v].lower for v in versions]
        estimates[i] = [bounds[v].estimate for v in versions]
    judged = ~np.isnan(truth)
    widths = estimates - lowers
    # the rule speaks of the traffic the pairs come from (the holdout), not of the pairs drawn
    covered = {v: int(np.sum(lowers[judged, j] <= paired.true_delta)) for j, v in enumerate(versions)}
    median_width = {v: float(np.nanmedian(widths[:, j])) for j, v in enumerate(versions)}
    return Coverage(paired.baseline, paired.canary, pairs, draws, level, margin, mc_draws, paired.true_delta,
                    int(judged.sum()), covered, median_width,
                    {v: float(np.nanmedian(estimates[:, j])) for j, v in enumerate(versions)},
                    float(np.nanmedian(truth)), int(np.sum(lowers[:, 2] >= -margin)),
                    time.perf_counter() - started)


def artifact_versions(baseline: str | Path, candidate: str | Path) -> tuple[str, str]:
    """The model versions ("v1", "v2") of two exported artifacts, by their metadata; "baseline" and
    "candidate" when the metadata does not tell them apart."""
    names = tuple(str(read_metadata(root).get("model_version", "")) for root in (baseline, candidate))
    return (names[0], names[1]) if all(names) and names[0] != names[1] else ("baseline", "candidate")
