import math

import numpy as np
import pytest
from fraud.evaluate import classification_metrics, curve_points, mcnemar_exact
from scipy.stats import binomtest
from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score, roc_auc_score


def test_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    labels = rng.random(2_000) < 0.05
    probability = np.clip(labels * 0.5 + rng.random(2_000) * 0.6, 0, 1)
    decision = probability >= 0.55
    m = classification_metrics(labels, probability, decision)
    assert m["precision"] == pytest.approx(precision_score(labels, decision))
    assert m["recall"] == pytest.approx(recall_score(labels, decision))
    assert m["f1"] == pytest.approx(f1_score(labels, decision))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(labels, probability))
    assert m["pr_auc"] == pytest.approx(average_precision_score(labels, probability))
    assert m["tp"] + m["fp"] + m["tn"] + m["fn"] == 2_000 and m["tp"] + m["fn"] == labels.sum()


def test_undefined_metrics_are_nan_not_invented():
    m = classification_metrics(np.array([0, 0, 1]), np.array([.1, .2, .3]), np.array([0, 0, 0]))
    assert math.isnan(m["precision"]) and m["recall"] == 0 and math.isnan(m["f1"])
    m = classification_metrics(np.array([0, 0]), np.array([.1, .2]), np.array([0, 1]))
    assert math.isnan(m["roc_auc"]) and math.isnan(m["recall"])


def test_mcnemar_counts_discordant_pairs():
    labels = np.array([1, 1, 1, 1, 1, 0, 0, 0])
    a = np.array([1, 0, 0, 0, 0, 0, 0, 1])  # right on rows 0, 5, 6
    b = np.array([1, 1, 1, 1, 0, 0, 0, 0])  # right on rows 0-3, 5-7
    result = mcnemar_exact(labels, a, b)
    assert result["a_only"] == 0 and result["b_only"] == 4
    assert result["p_value"] == pytest.approx(binomtest(0, 4, 0.5).pvalue) == pytest.approx(0.125)
    assert mcnemar_exact(labels, a, a)["p_value"] == 1.0


def test_curves_are_thinned_and_finite():
    rng = np.random.default_rng(1)
    labels = rng.random(5_000) < 0.1
    curves = curve_points(labels, rng.random(5_000), points=50)
    assert len(curves["roc"]["fpr"]) <= 50 and len(curves["pr"]["recall"]) <= 50
    assert all(math.isfinite(t) for t in curves["roc"]["threshold"])
