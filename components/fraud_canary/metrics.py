"""Per-version online metrics: what each model version did with the traffic it was sent.

`version_metrics` counts from one entry per transaction (a replay); `fraud_control.rollout.prometheus`
builds the same `VersionMetrics` from the transformer's counters (no labels, so no confusion).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from fraud.schema import LATENCY_BUCKETS_S
from numpy.typing import ArrayLike

from fraud_canary.counts import ratio

#: Version key for rows no version can be attributed to: a failed request whose response carried
#: no model_version. Same value as the transformer's metric label for such failures
#: (`fraud_predictor_errors_total{model_version="unknown"}`: in a cluster Knative splits behind
#: one address, so the transformer cannot tell which revision failed).
UNATTRIBUTED = "unknown"
#: Bounds (ms) of the latency histogram a version's answered rows are counted in.
LATENCY_BOUNDS_MS: tuple[float, ...] = tuple(round(1000 * s, 6) for s in LATENCY_BUCKETS_S)


@dataclass(frozen=True)
class Confusion:
    """Confusion counts of answered, labelled requests (positive = fraud)."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def frauds(self) -> int:
        return self.tp + self.fn

    @property
    def labelled(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    @property
    def precision(self) -> float:
        return ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        # 2TP / (2TP + FP + FN): defined whenever anything was flagged or missed.
        return ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)


@dataclass(frozen=True)
class VersionMetrics:
    """What one model version did online.

    Counts are per transaction (row): a batched request contributes its rows, each with the
    request's latency and error flag. `confusion` is None when labels are unknown (metrics read
    from Prometheus); precision, recall and F1 are then NaN. From the prediction log it counts only
    the answered rows whose label is known (matured), so it may cover fewer rows than `answered`.
    """

    model_version: str
    requests: int  # rows routed to this version, answered or failed
    errors: int  # rows whose request failed
    flagged: int  # answered rows decided "fraud"
    traffic_share: float  # requests / all requests of every version (unattributed included)
    latency_p50_ms: float  # over answered rows: a fast failure is not a fast answer
    latency_p95_ms: float
    latency_p99_ms: float
    confusion: Confusion | None = None
    #: Answered rows at or under each latency bound (ms), cumulative; None when not counted.
    latency_histogram: tuple[tuple[float, int], ...] | None = None

    def __post_init__(self) -> None:
        if min(self.requests, self.errors, self.flagged) < 0:
            raise ValueError(f"{self.model_version}: counts must be non-negative")
        if self.errors > self.requests or self.flagged > self.answered:
            raise ValueError(f"{self.model_version}: errors ≤ requests and flagged ≤ answered rows required")
        c = self.confusion
        if c is not None:
            if min(c.tp, c.fp, c.fn, c.tn) < 0:
                raise ValueError(f"{self.model_version}: confusion counts must be non-negative")
            if c.tp + c.fp + c.fn + c.tn > self.answered or c.tp + c.fp > self.flagged:
                raise ValueError(f"{self.model_version}: confusion counts exceed the answered/flagged rows")

    @classmethod
    def empty(cls, model_version: str) -> VersionMetrics:
        """A version that received nothing: every rate and percentile NaN."""
        return cls(model_version, 0, 0, 0, 0.0, math.nan, math.nan, math.nan, None)

    @property
    def answered(self) -> int:
        return self.requests - self.errors

    @property
    def error_rate(self) -> float:
        return ratio(self.errors, self.requests)

    @property
    def flag_rate(self) -> float:
        """Share of answered rows decided "fraud" (failed rows have no decision)."""
        return ratio(self.flagged, self.answered)

    @property
    def frauds(self) -> int | None:
        return None if self.confusion is None else self.confusion.frauds

    @property
    def fraud_rate(self) -> float:
        c = self.confusion  # over the labelled rows (all answered rows in a replay)
        return math.nan if c is None else ratio(c.frauds, c.tp + c.fp + c.fn + c.tn)

    @property
    def precision(self) -> float:
        return math.nan if self.confusion is None else self.confusion.precision

    @property
    def recall(self) -> float:
        return math.nan if self.confusion is None else self.confusion.recall

    @property
    def f1(self) -> float:
        return math.nan if self.confusion is None else self.confusion.f1

    def to_dict(self) -> dict[str, Any]:
        """Counts, derived metrics and percentiles as one flat dict (NaN stays NaN)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("confusion", "latency_histogram")}
        out["latency_histogram"] = [list(pair) for pair in self.latency_histogram or ()] or None
        out.update(answered=self.answered, error_rate=self.error_rate, flag_rate=self.flag_rate,
                   fraud_rate=self.fraud_rate, precision=self.precision, recall=self.recall, f1=self.f1)
        out.update(asdict(self.confusion) if self.confusion else dict(tp=None, fp=None, fn=None, tn=None))
        return out


def _versions(model_versions: ArrayLike, n: int) -> np.ndarray:
    raw = np.asarray(model_versions).reshape(-1)
    if raw.shape[0] != n:
        raise ValueError(f"model_versions has {raw.shape[0]} entries, expected {n}")
    if raw.dtype.kind == "U":  # plain strings: no per-row Python work (a 1M-row replay)
        return np.where(raw == "", UNATTRIBUTED, raw)
    return np.array([UNATTRIBUTED if _unattributed(v) else str(v) for v in raw.tolist()], dtype=object)


def _unattributed(version: object) -> bool:
    return version is None or version in ("", UNATTRIBUTED) or (isinstance(version, float) and math.isnan(version))


def _binary(values: ArrayLike, name: str, rows: np.ndarray) -> np.ndarray:
    """`values` as bool, requiring 0/1 (or bool) on the selected rows."""
    array = np.asarray(values, dtype=float).reshape(-1)
    if array.shape != rows.shape:
        raise ValueError(f"{name} has {array.shape[0]} entries, expected {rows.shape[0]}")
    picked = array[rows]
    if not np.isin(picked, (0.0, 1.0)).all():
        raise ValueError(f"{name} must be 0/1 on every {'answered ' if not rows.all() else ''}row")
    return np.where(rows, array, 0.0) == 1.0


def version_metrics(
    labels: ArrayLike | None,
    decisions: ArrayLike,
    model_versions: ArrayLike,
    latency_ms: ArrayLike,
    errors: ArrayLike,
) -> dict[str, VersionMetrics]:
    """Per-version online metrics from one entry per transaction.

    Args:
        labels: true class (1 = fraud) per row, or None when unknown; NaN marks a row whose label
            is not known yet (the prediction log before its labels mature): confusion counts skip it.
        decisions: the served decision (1 = flagged as fraud); ignored (may be NaN) on failed rows.
        model_versions: the `model_version` of the response; None, "", NaN and "unknown" (a failed
            request that reached no identifiable version) are grouped under `UNATTRIBUTED`.
        latency_ms: end-to-end latency of the row's request; NaN rows are left out of percentiles.
        errors: True where the row's request failed.

    Returns:
        {model_version: VersionMetrics}, sorted by version. Traffic shares sum to 1 over all keys.
    """
    failed = np.asarray(errors, dtype=bool).reshape(-1)
    n = failed.shape[0]
    answered = ~failed
    versions = _versions(model_versions, n)
    flagged = _binary(decisions, "decisions", answered)
    known = np.ones(n, dtype=bool) if labels is None else ~np.isnan(np.asarray(labels, dtype=float).reshape(-1))
    fraud = None if labels is None else _binary(labels, "labels", known)
    latency = np.asarray(latency_ms, dtype=float).reshape(-1)
    if latency.shape[0] != n:
        raise ValueError(f"latency_ms has {latency.shape[0]} entries, expected {n}")
    if (latency < 0).any():
        raise ValueError("latency_ms must not be negative")

    out: dict[str, VersionMetrics] = {}
    for version in sorted(set(versions.tolist())):
        rows = versions == version
        ok = rows & answered
        finite = latency[ok & np.isfinite(latency)]
        p50, p95, p99 = (np.percentile(finite, (50, 95, 99)) if finite.size else (math.nan,) * 3)
        histogram = tuple((bound, int(np.count_nonzero(finite <= bound))) for bound in LATENCY_BOUNDS_MS)
        confusion = None
        if fraud is not None:
            ok_known = ok & known
            confusion = Confusion(tp=int(np.sum(ok_known & fraud & flagged)), fp=int(np.sum(ok_known & ~fraud & flagged)),
                                  fn=int(np.sum(ok_known & fraud & ~flagged)), tn=int(np.sum(ok_known & ~fraud & ~flagged)))
        out[version] = VersionMetrics(
            model_version=version, requests=int(rows.sum()), errors=int((rows & failed).sum()),
            flagged=int((ok & flagged).sum()), traffic_share=ratio(int(rows.sum()), n),
            latency_p50_ms=float(p50), latency_p95_ms=float(p95), latency_p99_ms=float(p99),
            confusion=confusion, latency_histogram=histogram)
    return out
