"""Offline evaluation of baseline and candidate on the same held-out data.

Each model is scored at its own threshold (inside its signature) on the holdout, which lies after
every training row, and on the pre-drift slice, which neither model trained on. McNemar's exact
test compares the two models' per-row correctness on the holdout.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.stats import binomtest
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

METRICS = ("precision", "recall", "f1", "roc_auc", "pr_auc", "tp", "fp", "tn", "fn")


def classification_metrics(labels: np.ndarray, probability: np.ndarray, decision: np.ndarray) -> dict[str, float]:
    """Precision, recall, F1, ROC-AUC, PR-AUC (average precision) and confusion counts.
    Undefined ratios (no positives flagged, one class only) are NaN, never a made-up 0 or 1."""
    labels = np.asarray(labels).astype(bool)
    decision = np.asarray(decision).astype(bool)
    tp = int(np.sum(labels & decision))
    fp = int(np.sum(~labels & decision))
    fn = int(np.sum(labels & ~decision))
    tn = int(np.sum(~labels & ~decision))
    precision = tp / (tp + fp) if tp + fp else math.nan
    recall = tp / (tp + fn) if tp + fn else math.nan
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else math.nan
    both_classes = 0 < labels.sum() < len(labels)
    return {
        "precision": precision, "recall": recall, "f1": f1,
        "roc_auc": float(roc_auc_score(labels, probability)) if both_classes else math.nan,
        "pr_auc": float(average_precision_score(labels, probability)) if both_classes else math.nan,
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
    }


def mcnemar_exact(labels: np.ndarray, decision_a: np.ndarray, decision_b: np.ndarray) -> dict[str, float]:
    """McNemar's exact (binomial) test on the discordant pairs of per-row correctness.
    `a_only` rows only A got right, `b_only` rows only B got right; p = 1 with no discordant pairs."""
    labels = np.asarray(labels).astype(bool)
    right_a = np.asarray(decision_a).astype(bool) == labels
    right_b = np.asarray(decision_b).astype(bool) == labels
    a_only = int(np.sum(right_a & ~right_b))
    b_only = int(np.sum(right_b & ~right_a))
    p = binomtest(min(a_only, b_only), a_only + b_only, 0.5).pvalue if a_only + b_only else 1.0
    return {"a_only": a_only, "b_only": b_only, "p_value": float(p)}


def along_curve(x: np.ndarray, y: np.ndarray, points: int) -> np.ndarray:
    """Indices of about `points` points spread evenly along the drawn curve (x, y), by its length,
    the first and last kept. Thinning by index put nearly every point where the thresholds crowd
    (a model's many low scores), and drew the rest of the curve as a straight line."""
    if len(x) <= points:
        return np.arange(len(x))
    length = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))])
    wanted = np.linspace(0.0, length[-1], points)
    return np.unique(np.clip(np.searchsorted(length, wanted), 0, len(x) - 1))


def curve_points(labels: np.ndarray, probability: np.ndarray, points: int = 200) -> dict[str, dict[str, list[float]]]:
    """ROC and PR curves thinned to about `points` points each (for plots and KFP artifacts)."""
    fpr, tpr, roc_thresholds = roc_curve(labels, probability)
    precision, recall, pr_thresholds = precision_recall_curve(labels, probability)

    r = along_curve(fpr, tpr, points)
    p = along_curve(recall[:-1], precision[:-1], points)  # the last (recall 0, precision 1) has no threshold
    return {
        # roc_curve's first threshold is +inf; KFP wants finite numbers.
        "roc": {"fpr": fpr[r].tolist(), "tpr": tpr[r].tolist(),
                "threshold": np.minimum(roc_thresholds[r], 1.0).tolist()},
        "pr": {"precision": precision[p].tolist(), "recall": recall[p].tolist(),
               "threshold": pr_thresholds[p].tolist()},
    }


def relative_change(new: float, old: float) -> float:
    """(new - old) / old; NaN when old is 0 or either is NaN."""
    return (new - old) / old if old and math.isfinite(old) and math.isfinite(new) else math.nan
