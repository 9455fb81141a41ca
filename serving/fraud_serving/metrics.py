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
from fraud.schema import LATENCY_BUCKETS_S
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

    def record_shadow(self, served_version: str, shadow_version: str, served: np.ndarray, shadow: np.ndarray) -> None:
        """Add one request's paired decisions to the 2×2 table of its version pair."""
        served, shadow = np.asarray(served, dtype=bool), np.asarray(shadow, dtype=bool)
        for served_flag, served_decision in ((True, "fraud"), (False, "legit")):
            for shadow_flag, shadow_decision in ((True, "fraud"), (False, "legit")):
                rows = int(np.count_nonzero((served == served_flag) & (shadow == shadow_flag)))
                if rows:
                    self.shadow_rows.labels(served_version, shadow_version, served_decision, shadow_decision).inc(rows)
