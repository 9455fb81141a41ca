"""Label-free paired evidence: the recall difference of two versions on the same (shadow-scored)
rows, estimated from calibrated scores (paired CBPE), from counters alone.

The transformer counts each shadow pair by both versions' decisions and by each version's score
bucket (`fraud_shadow_score_bucket`, buckets `fraud.schema.PAIRED_SCORE_BOUNDS`). With a version's
calibration (`ScoreProfile`: isotonic blocks, a Beta posterior per block) its scores say how many
frauds each cell of the 2×2 decision table holds:

    Δ = recall(canary) − recall(baseline) = (E[frauds only the canary flags] − E[frauds only the
        baseline flags]) / E[frauds among all pairs].

Rows both versions flag, or neither, cancel in the numerator; they count in the denominator.

Which calibration. Each version's calibration is blind where the version is: the frauds of a
pattern a model scores low look legitimate to it (v1 on the drifted holdout: its own CBPE recall
0.651 [0.560, 0.751], true 0.361). Under v1's calibration the rows only v2 flags (the new pattern)
look legitimate; under a blind canary's own calibration, the rows only the baseline flags (the
frauds it misses) would. A calibration is trustworthy where its version *flags*: a high score is
what its validation split measured most closely, and drift that lowers precision there makes it
over-count frauds, not hide them. So `own_flags_difference` judges each discordant cell by the
version that flagged it, the canary's gains by the canary's calibration and its losses by the
baseline's, and the frauds both or neither flag by whichever calibration makes Δ smaller (the
denominator bounds both ways). `recall_difference` gives Δ under one calibration throughout, for
the record: on a 1,000,000-row run v1's calibration puts the far better v2 (true +0.50) at −0.07.

Interval: Monte Carlo posterior predictive, as `fraud_canary.performance`: each block's fraud
rate from its Beta posterior, the frauds of each (cell, block) Binomial given it.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from fraud.schema import PAIRED_SCORE_BOUNDS
from fraud.score_profile import ScoreProfile

#: Cells of the paired decision table, as (canary flags, baseline flags).
CELLS: tuple[tuple[bool, bool], ...] = ((True, False), (False, True), (True, True), (False, False))
DRAWS = 4000


@dataclass(frozen=True)
class PairedScores:
    """Shadow-paired rows by cell (`CELLS`) and by one version's score bucket: `rows[version][c][k]`
    rows of cell c whose `version` score falls in bucket k (≤ PAIRED_SCORE_BOUNDS[k], above the
    previous bound; the last bucket runs to 1)."""

    baseline_version: str
    canary_version: str
    rows: dict[str, tuple[tuple[int, ...], ...]]

    def __post_init__(self) -> None:
        buckets = len(PAIRED_SCORE_BOUNDS) + 1
        for version, table in self.rows.items():
            if len(table) != len(CELLS) or any(len(cell) != buckets for cell in table):
                raise ValueError(f"{version}: need {len(CELLS)} cells of {buckets} buckets")
            if any(n < 0 for cell in table for n in cell):
                raise ValueError(f"{version}: counts must be non-negative")

    @classmethod
    def empty(cls, baseline_version: str, canary_version: str) -> PairedScores:
        zero = tuple((0,) * (len(PAIRED_SCORE_BOUNDS) + 1) for _ in CELLS)
        return cls(baseline_version, canary_version, {baseline_version: zero, canary_version: zero})

    @property
    def pairs(self) -> int:
        return sum(sum(cell) for cell in self.rows.get(self.canary_version, ()))

    def __add__(self, other: PairedScores) -> PairedScores:
        if (other.baseline_version, other.canary_version) != (self.baseline_version, self.canary_version):
            raise ValueError("paired scores of different version pairs cannot be added")
        versions = set(self.rows) | set(other.rows)
        zero = PairedScores.empty(self.baseline_version, self.canary_version).rows[self.canary_version]
        return PairedScores(self.baseline_version, self.canary_version, {
            v: tuple(tuple(a + b for a, b in zip(x, y)) for x, y in zip(self.rows.get(v, zero), other.rows.get(v, zero)))
            for v in versions})

    def to_dict(self) -> dict[str, Any]:
        return {"baseline_version": self.baseline_version, "canary_version": self.canary_version, "pairs": self.pairs,
                "cells": {f"{'canary' if c else '-'}/{'baseline' if b else '-'}": sum(self.rows[self.canary_version][i])
                          for i, (c, b) in enumerate(CELLS)} if self.canary_version in self.rows else {}}


def _bucket_blocks(profile: ScoreProfile) -> np.ndarray:
    """The calibration block of each score bucket: the block holding the bucket's midpoint in log-odds."""
    bounds = np.asarray(PAIRED_SCORE_BOUNDS)
    logits = np.log(bounds / (1 - bounds))
    step = logits[1] - logits[0]
    mids = np.concatenate([[logits[0] - step / 2], (logits[:-1] + logits[1:]) / 2, [logits[-1] + step / 2]])
    return profile.block_of(1 / (1 + np.exp(-mids)))


@dataclass(frozen=True)
class DifferenceEstimate:
    """Δ recall (canary − baseline) under one version's calibration, with a one-sided lower bound."""

    judged_by: str
    estimate: float
    lower: float
    level: float
    pairs: int
    expected_frauds: float

    def to_dict(self) -> dict[str, Any]:
        return {"judged_by": self.judged_by, "estimate": self.estimate, "lower": self.lower, "level": self.level,
                "pairs": self.pairs, "expected_frauds": self.expected_frauds,
                "method": "paired CBPE; Monte Carlo: Beta posterior per calibration block × Binomial frauds"}


def _cell_blocks(scores: PairedScores, version: str, profile: ScoreProfile) -> np.ndarray:
    """Rows per (cell, calibration block) of `version`'s scores."""
    table = np.asarray(scores.rows[version], dtype=np.int64)  # cells × buckets
    blocks = _bucket_blocks(profile)
    n_blocks = len(profile.block_rows)
    return np.stack([np.bincount(blocks, weights=cell, minlength=n_blocks) for cell in table]).astype(np.int64)


def _frauds(rows: np.ndarray, profile: ScoreProfile, draws: int, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray]:
    """Expected frauds per cell (posterior means), and draws × cells of posterior predictive frauds."""
    a, b = profile.posterior()
    rates = rng.beta(a, b, size=(draws, len(a)))
    return rows @ (a / (a + b)), rng.binomial(rows[None, :, :], rates[:, None, :]).sum(axis=2).astype(np.float64)


def _lower(delta: np.ndarray, level: float) -> float:
    # a draw with no frauds at all says nothing about recall: it counts at the worst, −1
    return float(np.quantile(np.where(np.isfinite(delta), delta, -1.0), 1 - level))


def _check(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")


def recall_difference(scores: PairedScores, judged_by: str, profile: ScoreProfile, *, level: float,
                      draws: int = DRAWS, seed: int = 0) -> DifferenceEstimate:
    """Δ recall on the pairs under `judged_by`'s calibration throughout, and its lower bound at `level`."""
    _check(level)
    rows = _cell_blocks(scores, judged_by, profile)
    expected, frauds = _frauds(rows, profile, draws, np.random.default_rng(seed))
    total = float(expected.sum())
    estimate = (expected[0] - expected[1]) / total if total > 0 else math.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        delta = (frauds[:, 0] - frauds[:, 1]) / frauds.sum(axis=1)
    lower = _lower(delta, level) if rows.sum() else -1.0
    return DifferenceEstimate(judged_by, float(estimate), lower, level, int(rows.sum()), total)


def _population_frauds(scores: PairedScores, version: str, profile: ScoreProfile, draws: int,
                       rng: np.random.Generator, cell_shares: np.ndarray) -> np.ndarray:
    """draws × cells: expected frauds per pair of the traffic the pairs were drawn from, by cell,
    under `version`'s calibration. Within a cell the share of each calibration block is drawn from
    a Dirichlet posterior (the cell's rows plus one pseudo-row spread evenly over the buckets)."""
    table = np.asarray(scores.rows[version], dtype=np.float64)  # cells × buckets
    blocks = _bucket_blocks(profile)
    n_blocks = len(profile.block_rows)
    a, b = profile.posterior()
    rates = rng.beta(a, b, size=(draws, n_blocks))[:, blocks]  # draws × buckets
    out = np.empty((draws, len(CELLS)))
    for i, cell in enumerate(table):
        shares = rng.dirichlet(cell + 1.0 / len(cell), size=draws)  # draws × buckets
        out[:, i] = cell_shares[:, i] * np.einsum("db,db->d", shares, rates)
    return out


def own_flags_difference(scores: PairedScores, profiles: Mapping[str, ScoreProfile], *, level: float,
                         draws: int = DRAWS, seed: int = 0) -> DifferenceEstimate:
    """Δ recall of the traffic the pairs come from, each discordant cell judged by the version that
    flagged it, the frauds both or neither flag by the calibration that makes Δ smaller; its lower
    bound at `level`.

    A population statement, not one about the pairs at hand: a few hundred pairs in which the
    baseline flags nothing the canary misses do not show that the canary never misses what the
    baseline catches. So the cells' shares are drawn too, from a Dirichlet posterior of the cell
    counts with a Jeffreys prior (½ a pseudo-row per cell), each cell's score buckets from their
    own (`_population_frauds`), and each calibration block's fraud rate from its Beta posterior."""
    _check(level)
    canary, baseline = scores.canary_version, scores.baseline_version
    rng = np.random.default_rng(seed)
    cells = np.asarray(scores.rows[canary], dtype=np.float64).sum(axis=1)
    cell_shares = rng.dirichlet(cells + 0.5, size=draws)
    by_c = _population_frauds(scores, canary, profiles[canary], draws, rng, cell_shares)
    by_b = _population_frauds(scores, baseline, profiles[baseline], draws, rng, cell_shares)
    # CELLS: 0 canary only, 1 baseline only, 2 both, 3 neither
    gained, lost = by_c[:, 0], by_b[:, 1]
    shared_low = np.minimum(by_c[:, 2:], by_b[:, 2:]).sum(axis=1)
    shared_high = np.maximum(by_c[:, 2:], by_b[:, 2:]).sum(axis=1)
    delta = np.minimum((gained - lost) / (gained + lost + shared_low), (gained - lost) / (gained + lost + shared_high))
    lower = float(np.quantile(delta, 1 - level)) if cells.sum() else -1.0
    return DifferenceEstimate("each version on its own flags", float(np.median(delta)), lower, level,
                              int(cells.sum()), float(np.median(gained + lost + shared_high) * cells.sum()))
