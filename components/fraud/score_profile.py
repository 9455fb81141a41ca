"""A model's offline score profile, from its OWN validation split (the time-ordered tail of its
training window, `train.split_time_ordered`): what the label-free signals compare served scores to.

* Score deciles and the share of validation rows in each (PSI of served scores).
* The validation scores' quantiles at 1,001 levels (a KS test; the table's own resolution is
  1/1000, far below the KS statistics that matter).
* A calibration map score → P(fraud) by **isotonic regression** (SciPy's pool-adjacent-violators)
  kept as its blocks: each block is a score interval with its validation rows and frauds. That is
  histogram binning whose bins the data chose under a monotonicity constraint, and it keeps the
  counts, so the calibration's own uncertainty is a Beta posterior per block (Jeffreys prior
  Beta(½, ½)): what the interval of `fraud_canary.performance` needs. sklearn's isotonic
  regression interpolates between blocks and keeps no counts.

Written as `monitoring.json` in the model's version directory beside `metadata.json`
(`export.export_model`, read back by `export.read_score_profile`); the serving artifacts are not
touched.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import isotonic_regression

MONITORING_FILE = "monitoring.json"
SCORE_BINS = 10
KS_LEVELS = 1001
#: Jeffreys prior on each calibration block's fraud rate.
PRIOR = (0.5, 0.5)


@dataclass(frozen=True)
class ScoreProfile:
    """Offline score distribution and calibration map of one model version."""

    threshold: float
    validation_rows: int
    validation_frauds: int
    #: Interior decile edges of validation scores and the validation rows in each bin.
    bin_edges: tuple[float, ...]
    bin_counts: tuple[int, ...]
    #: Validation score quantiles at levels 0, 1/(KS_LEVELS-1), …, 1.
    quantiles: tuple[float, ...]
    #: Calibration blocks: interior edges (block b holds edges[b-1] ≤ score < edges[b]), rows, frauds.
    block_edges: tuple[float, ...]
    block_rows: tuple[int, ...]
    block_frauds: tuple[int, ...]

    def block_of(self, scores: np.ndarray) -> np.ndarray:
        """Calibration block index of each score."""
        return np.searchsorted(np.asarray(self.block_edges), np.asarray(scores, dtype=np.float64), side="right")

    def posterior(self) -> tuple[np.ndarray, np.ndarray]:
        """Beta(a, b) posterior parameters of each block's fraud rate."""
        frauds = np.asarray(self.block_frauds, dtype=np.float64)
        rows = np.asarray(self.block_rows, dtype=np.float64)
        return frauds + PRIOR[0], rows - frauds + PRIOR[1]

    def calibrate(self, scores: np.ndarray) -> np.ndarray:
        """P(fraud) of each score: its block's posterior mean."""
        a, b = self.posterior()
        return (a / (a + b))[self.block_of(scores)]

    def to_dict(self) -> dict:
        return {"threshold": self.threshold, "validation_rows": self.validation_rows,
                "validation_frauds": self.validation_frauds,
                "score_bins": {"edges": list(self.bin_edges), "counts": list(self.bin_counts)},
                "quantiles": list(self.quantiles),
                "calibration": {"method": "isotonic blocks, Beta(0.5, 0.5) posterior per block",
                                "edges": list(self.block_edges), "rows": list(self.block_rows),
                                "frauds": list(self.block_frauds)}}

    @classmethod
    def from_dict(cls, body: dict) -> ScoreProfile:
        calibration = body["calibration"]
        return cls(float(body["threshold"]), int(body["validation_rows"]), int(body["validation_frauds"]),
                   tuple(body["score_bins"]["edges"]), tuple(body["score_bins"]["counts"]),
                   tuple(body["quantiles"]), tuple(calibration["edges"]), tuple(calibration["rows"]),
                   tuple(calibration["frauds"]))


def fit_score_profile(labels: np.ndarray, scores: np.ndarray, threshold: float) -> ScoreProfile:
    """Profile a model's validation scores (`labels` 0/1) under its decision `threshold`."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(np.int64).ravel()
    if len(scores) != len(labels) or not len(scores):
        raise ValueError(f"need as many labels as scores, and some: {len(labels)} labels, {len(scores)} scores")
    bin_edges = np.unique(np.quantile(scores, np.arange(1, SCORE_BINS) / SCORE_BINS))
    bin_counts = np.bincount(np.searchsorted(bin_edges, scores, side="right"), minlength=len(bin_edges) + 1)
    quantiles = np.quantile(scores, np.linspace(0, 1, KS_LEVELS))
    edges, rows, frauds = _isotonic_blocks(labels, scores)
    return ScoreProfile(float(threshold), len(scores), int(labels.sum()), tuple(float(e) for e in bin_edges),
                        tuple(int(c) for c in bin_counts), tuple(float(q) for q in quantiles),
                        edges, rows, frauds)


def _isotonic_blocks(labels: np.ndarray, scores: np.ndarray) -> tuple[tuple[float, ...], tuple[int, ...], tuple[int, ...]]:
    """Blocks of the isotonic fit of labels on scores: interior edges (halfway between
    neighbouring blocks' scores), rows and frauds per block."""
    unique, inverse = np.unique(scores, return_inverse=True)
    rows = np.bincount(inverse).astype(np.float64)
    frauds = np.bincount(inverse, weights=labels).astype(np.float64)
    fit = isotonic_regression(frauds / rows, weights=rows, increasing=True)
    starts = fit.blocks[:-1]  # SciPy gives block starts plus the end
    block_rows = np.add.reduceat(rows, starts)
    block_frauds = np.add.reduceat(frauds, starts)
    lows, highs = unique[starts], unique[np.r_[starts[1:], len(unique)] - 1]
    edges = (highs[:-1] + lows[1:]) / 2
    return (tuple(float(e) for e in edges), tuple(int(r) for r in block_rows),
            tuple(int(round(f)) for f in block_frauds))
