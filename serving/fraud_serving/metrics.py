"""The transformer's Prometheus metrics, served next to KServe's own on `/metrics`.

The names are the contract with the alerting rules (manifests/): do not rename them.

- `fraud_predictions_total{model_version, decision}`: rows scored, decision "fraud" or "legit"
- `fraud_score{model_version}`: histogram of `fraud_probability`, one observation per row
- `fraud_rejected_requests_total{reason}`: requests refused with a 4xx, reason a short slug
- `fraud_predictor_errors_total{model_version}`: failed forwards to a predictor ("unknown" if none answered),
  retried ones included
- `fraud_predictor_retries_total{model_version}`: failed forwards sent again to the other revision, by the
  version that failed (the client got the other revision's answer)
- `fraud_request_seconds{model_version}`: end-to-end latency of a transformer request

Shadow scoring (`shadow`): the same request scored on the other revision, never returned; its
scores never count in `fraud_predictions_total` or `fraud_score`.

- `fraud_shadow_rows_total{served_version, shadow_version, served_decision, shadow_decision}`: rows
  decided by both, decisions "fraud" or "legit": the label-free 2×2 table per version pair
- `fraud_shadow_score{served_version, shadow_version, served_decision, shadow_decision, scored_version}`:
  histogram (buckets `fraud.schema.PAIRED_SCORE_BOUNDS`) of the same rows' scores, each row observed
  twice: the served version's `fraud_probability` (scored_version = served_version) and the shadow
  version's (scored_version = shadow_version), in the series of the row's decision cell; each
  series' `_count` is its cell of `fraud_shadow_rows_total`. Paired CBPE reads it
  (`fraud_canary.paired_scores`). A version paired with itself is not observed here
- `fraud_shadow_errors_total{model_version}`: shadow calls that failed, by the version asked
- `fraud_shadow_dropped_total{reason}`: requests drawn for a shadow score but not sent ("busy": the
  in-flight bound was reached; "same_version": a cluster tag host turned out to serve the served
  version); a request with no other revision to ask is not counted
- `fraud_shadow_in_flight`: shadow scores sent and not yet finished (answered and in the pair log,
  or failed); 0 means every pair so far is on disk
"""

from __future__ import annotations

import threading

import numpy as np
from fraud.schema import LATENCY_BUCKETS_S, PAIRED_SCORE_BOUNDS
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

SCORE_BUCKETS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
UNKNOWN_VERSION = "unknown"


class ScoreHistogram(Collector):
    """`fraud_score` as a histogram, observed a batch at a time.

    prometheus-client's Histogram observes one value per call (≈ 1 µs each, 10 ms for a 10,000-row
    request); here a batch is bucketed with one NumPy call and exposed as the same metric family.
    """

    name = "fraud_score"
    documentation = "fraud_probability of each scored row, by the model version that scored it"

    def __init__(self, buckets: tuple[float, ...] = SCORE_BUCKETS) -> None:
        self.bounds = np.asarray(buckets, dtype=np.float64)
        self._counts: dict[str, np.ndarray] = {}  # per bucket incl. +Inf, not cumulative
        self._sums: dict[str, float] = {}
        self._lock = threading.Lock()

    def observe(self, model_version: str, scores: np.ndarray) -> None:
        # le buckets: a score equal to a bound belongs to that bound's bucket
        counts = np.bincount(np.searchsorted(self.bounds, scores, side="left"), minlength=len(self.bounds) + 1)
        with self._lock:
            if model_version not in self._counts:
                self._counts[model_version] = np.zeros(len(self.bounds) + 1, dtype=np.int64)
                self._sums[model_version] = 0.0
            self._counts[model_version] += counts
            self._sums[model_version] += float(np.sum(scores, dtype=np.float64))

    def collect(self):
        family = HistogramMetricFamily(self.name, self.documentation, labels=["model_version"])
        with self._lock:
            for version, counts in self._counts.items():
                cumulative = np.cumsum(counts)
                buckets = [(repr(float(b)), int(c)) for b, c in zip(self.bounds, cumulative[:-1])]
                buckets.append(("+Inf", int(cumulative[-1])))
                family.add_metric([version], buckets, self._sums[version])
        yield family

    def describe(self):
        yield HistogramMetricFamily(self.name, self.documentation, labels=["model_version"])


#: (served_decision, shadow_decision) of each cell of the shadow pairs' 2×2 table, in the order
#: `_decision_cells` numbers them: 2 × (served legit) + (shadow legit).
DECISION_CELLS: tuple[tuple[str, str], ...] = (("fraud", "fraud"), ("fraud", "legit"), ("legit", "fraud"),
                                               ("legit", "legit"))


def _decision_cells(served: np.ndarray, shadow: np.ndarray) -> np.ndarray:
    """Each row's cell of `DECISION_CELLS`."""
    return 2 * np.logical_not(served).astype(np.intp) + np.logical_not(shadow)


class ShadowScoreHistogram(Collector):
    """`fraud_shadow_score`: the shadow pairs' scores by decision cell and by the version that scored them.

    One request's pairs cost one `searchsorted` and two `bincount`s (both versions' scores at once),
    not one `Histogram.observe` per row and version (≈ 1 µs each).
    """

    name = "fraud_shadow_score"
    documentation = ("fraud_probability of each shadow-paired row by the version that scored it "
                     "(scored_version), in the series of the pair's two decisions")
    labels = ["served_version", "shadow_version", "served_decision", "shadow_decision", "scored_version"]

    def __init__(self, buckets: tuple[float, ...] = PAIRED_SCORE_BOUNDS) -> None:
        self.bounds = np.asarray(buckets, dtype=np.float64)
        cells, width = len(DECISION_CELLS), len(self.bounds) + 1
        self._shape = (2, cells, width)  # scored by (served, shadow) × cell × bucket incl. +Inf
        self._counts: dict[tuple[str, str], np.ndarray] = {}  # per bucket, not cumulative
        self._sums: dict[tuple[str, str], np.ndarray] = {}  # (served, shadow) × cell
        self._lock = threading.Lock()

    def observe(self, served_version: str, shadow_version: str, cells: np.ndarray, served_scores: np.ndarray,
                shadow_scores: np.ndarray) -> None:
        """Add one request's pairs: `cells` from `_decision_cells`, both versions' scores row by row."""
        _, n_cells, width = self._shape
        series = np.concatenate([cells, cells + n_cells])  # served's scores, then shadow's
        scores = np.concatenate([served_scores, shadow_scores]).astype(np.float64)
        # le buckets: a score equal to a bound belongs to that bound's bucket
        buckets = np.searchsorted(self.bounds, scores, side="left")
        counts = np.bincount(series * width + buckets, minlength=2 * n_cells * width).reshape(self._shape)
        sums = np.bincount(series, weights=scores, minlength=2 * n_cells).reshape(2, n_cells)
        key = (served_version, shadow_version)
        with self._lock:
            if key not in self._counts:
                self._counts[key] = np.zeros(self._shape, dtype=np.int64)
                self._sums[key] = np.zeros((2, n_cells), dtype=np.float64)
            self._counts[key] += counts
            self._sums[key] += sums

    def collect(self):
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        le = [repr(float(b)) for b in self.bounds] + ["+Inf"]
        with self._lock:
            for (served_version, shadow_version), counts in self._counts.items():
                cumulative = np.cumsum(counts, axis=2)
                for scored, scored_version in enumerate((served_version, shadow_version)):
                    for cell, (served_decision, shadow_decision) in enumerate(DECISION_CELLS):
                        if not cumulative[scored, cell, -1]:
                            continue  # a cell never seen has no series, as an unused Counter label
                        family.add_metric([served_version, shadow_version, served_decision, shadow_decision,
                                           scored_version], list(zip(le, cumulative[scored, cell].tolist())),
                                          float(self._sums[(served_version, shadow_version)][scored, cell]))
        yield family

    def describe(self):
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labels)


class TransformerMetrics:
    """All transformer metrics, registered once per process (KServe's `/metrics` reads REGISTRY)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.predictions = Counter("fraud_predictions_total", "Rows scored, by model version and decision",
                                   ["model_version", "decision"], registry=registry)
        self.scores = ScoreHistogram()
        registry.register(self.scores)
        self.rejected = Counter("fraud_rejected_requests_total", "Requests refused as invalid (4xx), by reason",
                                ["reason"], registry=registry)
        self.predictor_errors = Counter("fraud_predictor_errors_total",
                                        "Failed forwards to a predictor, by the version it serves",
                                        ["model_version"], registry=registry)
        self.predictor_retries = Counter("fraud_predictor_retries_total",
                                         "Failed forwards retried on the other revision, by the version that failed",
                                         ["model_version"], registry=registry)
        self.request_seconds = Histogram("fraud_request_seconds", "End-to-end transformer request latency",
                                         ["model_version"], buckets=LATENCY_BUCKETS_S, registry=registry)
        self.shadow_rows = Counter("fraud_shadow_rows_total",
                                   "Rows scored by the served and the shadow version, by both decisions",
                                   ["served_version", "shadow_version", "served_decision", "shadow_decision"],
                                   registry=registry)
        self.shadow_scores = ShadowScoreHistogram()
        registry.register(self.shadow_scores)
        self.shadow_errors = Counter("fraud_shadow_errors_total", "Failed shadow scores, by the version asked",
                                     ["model_version"], registry=registry)
        self.shadow_dropped = Counter("fraud_shadow_dropped_total", "Shadow scores not sent, by reason",
                                      ["reason"], registry=registry)
        self.shadow_in_flight = Gauge("fraud_shadow_in_flight", "Shadow scores sent and not yet finished",
                                      registry=registry)

    def record_scores(self, model_version: str, probability: np.ndarray, is_fraud: np.ndarray) -> None:
        frauds = int(np.count_nonzero(is_fraud))
        if frauds:
            self.predictions.labels(model_version, "fraud").inc(frauds)
        if len(is_fraud) - frauds:
            self.predictions.labels(model_version, "legit").inc(len(is_fraud) - frauds)
        self.scores.observe(model_version, probability)

    def record_shadow(self, served_version: str, shadow_version: str, served: np.ndarray, shadow: np.ndarray,
                      served_scores: np.ndarray, shadow_scores: np.ndarray) -> None:
        """Add one request's pairs to the 2×2 table of its version pair, and both versions' scores
        to `fraud_shadow_score` (same rows, same order: decisions and scores of each version)."""
        cells = _decision_cells(np.asarray(served, dtype=bool), np.asarray(shadow, dtype=bool))
        for cell, rows in enumerate(np.bincount(cells, minlength=len(DECISION_CELLS)).tolist()):
            if rows:
                self.shadow_rows.labels(served_version, shadow_version, *DECISION_CELLS[cell]).inc(rows)
        if served_version != shadow_version:  # both observations would land in one series
            self.shadow_scores.observe(served_version, shadow_version, cells, np.asarray(served_scores).reshape(-1),
                                       np.asarray(shadow_scores).reshape(-1))
