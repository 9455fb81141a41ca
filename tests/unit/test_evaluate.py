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


def test_the_pr_curve_is_thinned_along_its_length_not_by_index():
    """A model scores most transactions near 0, so most thresholds crowd where recall is high: thinned
    by index, nearly all kept points sat there and the rest of the curve was a straight line (a gap of
    0.51 here). Kept points are now at most one even share of the curve's length apart, plus one raw step."""
    from sklearn.metrics import precision_recall_curve

    rng = np.random.default_rng(3)
    labels = rng.random(200_000) < 0.01
    probability = np.where(labels, rng.beta(2, 5, labels.size), rng.beta(0.3, 30, labels.size))
    points = 200
    curve = curve_points(labels, probability, points=points)["pr"]
    x, y = np.array(curve["recall"]), np.array(curve["precision"])
    precision, recall, _ = precision_recall_curve(labels, probability)
    raw = np.hypot(np.diff(recall[:-1]), np.diff(precision[:-1]))
    gaps = np.hypot(np.diff(x), np.diff(y))
    assert len(x) <= points and gaps.max() <= raw.sum() / (points - 1) + raw.max()
    assert (x[0], x[-1]) == (recall[0], recall[-2])  # both ends kept


def _evaluation() -> dict:
    def model(tp: int, fp: int, fn: int, tn: int) -> dict:
        holdout = {"precision": tp / (tp + fp), "recall": tp / (tp + fn), "f1": 0.75, "roc_auc": 0.97,
                   "pr_auc": 0.8, "tp": tp, "fp": fp, "tn": tn, "fn": fn}
        curve = [0.0, 0.5, 1.0]
        return {"holdout": holdout, "pre_drift": {**holdout, "precision": None},
                "curves": {"pr": {"recall": curve, "precision": curve}, "roc": {"fpr": [1e-4, 0.5, 1.0], "tpr": curve}},
                "recall_change_pre_drift_to_holdout": -0.25}

    windows = {"reference": {"start": "2023-01-01", "end": "2023-06-30", "rows": 6000, "fraud": 11},
               "holdout <script>": {"start": "2023-10-01", "end": "2023-12-31", "rows": 3000, "fraud": 7}}
    return {"data": {"windows": windows}, "models": {"v1": model(30, 10, 20, 940), "v2": model(45, 12, 5, 938)},
            "mcnemar": {"a_only": 2, "b_only": 17, "p_value": 0.000728}}


def test_evaluation_html_shows_windows_metrics_test_curves_and_gate_escaped():
    from fraud.report import evaluation_html

    gate = {"decision": "promote", "reasons": [{"rule": "candidate f1 ≥ 0.75", "passed": True, "detail": "f1 = 0.7500"},
                                               {"rule": "McNemar p < 0.01", "passed": False, "detail": "<b>p</b> & co"}]}
    page = evaluation_html(_evaluation(), gate)
    assert "<tr><td>reference</td><td>2023-01-01</td><td>2023-06-30</td><td>6000</td><td>11</td></tr>" in page
    assert "<td>holdout &lt;script&gt;</td>" in page and "<script>" not in page
    assert "<tr><td>v2</td><td>holdout (after all training data)</td><td>0.7895</td><td>0.9000</td>" in page
    assert "<tr><td>v1</td><td>pre-drift slice</td><td>n/a</td>" in page
    assert "only v1 right 2, only v2 right 17, p = 0.000728." in page
    assert "v1 recall change pre-drift → holdout: -0.2500 (relative)." in page
    assert page.count('<img alt="plot" src="data:image/png;base64,') == 2
    assert "<h2>Gate: promote</h2>" in page and "<td>McNemar p &lt; 0.01</td><td><b>FAIL</b></td>" in page
    assert "<td>&lt;b&gt;p&lt;/b&gt; &amp; co</td>" in page
    assert "<h2>Gate" not in evaluation_html(_evaluation())
