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
0.651 [0.560, 0.751], true 0.361). A canary blind to frauds the baseline catches would, under its
own calibration, call the baseline's extra flags false alarms. So `difference_bounds` computes Δ
under **both** versions' calibrations and the promotion rule needs non-inferiority under both: a
version's blind spot cannot hide the other's evidence.

Interval: Monte Carlo posterior predictive, as `fraud_canary.performance`: each block's fraud
rate from its Beta posterior, the frauds of each (cell, block) Binomial given it.
"""
from __future__ import annotations

import math
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


def recall_difference(scores: PairedScores, judged_by: str, profile: ScoreProfile, *, level: float,
                      draws: int = DRAWS, seed: int = 0) -> DifferenceEstimate:
    """Δ recall on the pairs under `judged_by`'s calibration, and its lower bound at `level`."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    table = np.asarray(scores.rows[judged_by], dtype=np.int64)  # cells × buckets
    blocks = _bucket_blocks(profile)
    n_blocks = len(profile.block_rows)
    rows = np.stack([np.bincount(blocks, weights=cell, minlength=n_blocks) for cell in table]).astype(np.int64)
    a, b = profile.posterior()
    mean = a / (a + b)
    expected = rows @ mean  # per cell
    total = float(expected.sum())
    estimate = (expected[0] - expected[1]) / total if total > 0 else math.nan
    rng = np.random.default_rng(seed)
    rates = rng.beta(a, b, size=(draws, n_blocks))
    frauds = rng.binomial(rows[None, :, :], rates[:, None, :]).sum(axis=2).astype(np.float64)  # draws × cells
    all_frauds = frauds.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        delta = (frauds[:, 0] - frauds[:, 1]) / all_frauds
    # a draw with no frauds at all says nothing about recall: the bound stays at its worst, −1
    delta = np.where(all_frauds > 0, delta, -1.0)
    lower = float(np.quantile(delta, 1 - level)) if rows.sum() else -1.0
    return DifferenceEstimate(judged_by, float(estimate), lower, level, int(table.sum()), total)
