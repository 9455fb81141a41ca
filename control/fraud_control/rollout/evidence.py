"""Live evidence for a rollout step, from the transformer's counters (label-free).

Windows do not overlap: each starts where the previous one ended (a new step starts a new one: the
split changed) and is full once `WindowSpec.seconds` more seconds passed *and* `min_requests` more
rows were counted, so a hold waits for a whole new window. The rollout's ledger adds them up.

- `MetricsWindow`: scrapes the transformer's `/metrics` at the window's start and again until it is
  full, and takes the counters' deltas: `fraud_predictions_total`, `fraud_predictor_errors_total`,
  `fraud_request_seconds` (percentiles from the bucket deltas, as `histogram_quantile` does, and
  the histogram itself), the shadow pairs `fraud_shadow_rows_total` → `PairedOutcomes`, and the
  same pairs by each version's score bucket `fraud_shadow_score_bucket` → `PairedScores` (paired CBPE).
- `PrometheusWindow`: the same counters' `increase(…[Ns])` over the window, from a Prometheus
  server scraping the transformer, read by the same code.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from fraud.schema import PAIRED_SCORE_BOUNDS, DataError
from fraud.waiting import poll
from fraud_canary.metrics import VersionMetrics
from fraud_canary.paired import Discordant, PairedOutcomes
from fraud_canary.paired_scores import CELLS, PairedScores

from fraud_control.rollout.controller import Evidence, EvidenceSource, RolloutAborted, Window, now_iso
from fraud_control.rollout.prometheus import DEFAULT_SELECTOR, PERCENTILES, prometheus_query

Sample = tuple[str, tuple[tuple[str, str], ...]]
Snapshot = dict[Sample, float]
FRAUD = "fraud"
COUNTED = ("fraud_predictions_total", "fraud_predictor_errors_total", "fraud_request_seconds_bucket",
           "fraud_shadow_rows_total", "fraud_shadow_score_bucket")
#: The bucket index of each `le` of `fraud_shadow_score` (the last, +Inf, runs to 1).
SCORE_BUCKET = {**{bound: k for k, bound in enumerate(PAIRED_SCORE_BOUNDS)}, math.inf: len(PAIRED_SCORE_BOUNDS)}


def parse_metrics(text: str) -> Snapshot:
    """The counters a window needs, keyed by (sample name, sorted labels)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: Snapshot = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in COUNTED:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return out


def scrape(url: str, timeout: float = 10.0) -> Snapshot:
    """The transformer's `/metrics`; DataError naming the URL when it cannot be read."""
    try:
        response = httpx.get(url, timeout=timeout)
        if response.status_code != 200:
            raise ValueError(f"HTTP {response.status_code}")
        return parse_metrics(response.text)
    except (httpx.HTTPError, httpx.InvalidURL, OSError, ValueError) as error:
        raise DataError(f"--metrics-url {url}: cannot scrape the transformer ({error})") from None


def delta(end: Snapshot, start: Snapshot) -> Snapshot:
    """Counter increases; a counter that went down was reset (a restarted transformer): its end value."""
    return {k: (v - start.get(k, 0.0)) if v >= start.get(k, 0.0) else v for k, v in end.items()}


def _quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """histogram_quantile over cumulative (le, count) buckets: linear within the bucket."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            width = count - lower_count
            return lower_bound + (bound - lower_bound) * ((rank - lower_count) / width if width else 1.0)
        lower_bound, lower_count = bound, count
    return math.nan


def _rows(counts: Snapshot) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    answered: dict[str, int] = {}
    flagged: dict[str, int] = {}
    failed: dict[str, int] = {}
    for (name, labels), value in counts.items():
        label = dict(labels)
        version = label.get("model_version", "")
        if name == "fraud_predictions_total":
            answered[version] = answered.get(version, 0) + round(value)
            if label.get("decision") == FRAUD:
                flagged[version] = flagged.get(version, 0) + round(value)
        elif name == "fraud_predictor_errors_total":
            failed[version] = failed.get(version, 0) + round(value)
    return answered, flagged, failed


def requests_in(counts: Snapshot) -> int:
    """Rows answered plus requests failed (the same unit with one transaction per request)."""
    answered, _, failed = _rows(counts)
    return sum(answered.values()) + sum(failed.values())


def version_metrics(counts: Snapshot) -> dict[str, VersionMetrics]:
    """VersionMetrics per version from counter deltas (no labels: `confusion` None), with the
    latency histogram in ms."""
    answered, flagged, failed = _rows(counts)
    latency: dict[str, list[tuple[float, float]]] = {}
    for (name, labels), value in counts.items():
        if name == "fraud_request_seconds_bucket":
            label = dict(labels)
            latency.setdefault(label.get("model_version", ""), []).append((float(label["le"]), value))
    versions = sorted(set(answered) | {v for v, n in failed.items() if n})
    total = sum(answered.get(v, 0) + failed.get(v, 0) for v in versions)
    out = {}
    for version in versions:
        requests = answered.get(version, 0) + failed.get(version, 0)
        buckets = latency.get(version, [])
        p50, p95, p99 = (1000 * _quantile(q / 100, buckets) for q in PERCENTILES)
        histogram = tuple(sorted((round(1000 * le, 6), round(n)) for le, n in buckets if math.isfinite(le)))
        out[version] = VersionMetrics(
            model_version=version, requests=requests, errors=failed.get(version, 0), flagged=flagged.get(version, 0),
            traffic_share=requests / total if total else math.nan, latency_p50_ms=p50, latency_p95_ms=p95,
            latency_p99_ms=p99, confusion=None, latency_histogram=histogram or None)
    return out


def paired_decisions(counts: Snapshot, baseline_version: str, canary_version: str) -> PairedOutcomes | None:
    """Both versions' decisions on the shadow-scored rows (either version served); None without pairs."""
    pairs = canary_only = baseline_only = 0
    for (name, labels), value in counts.items():
        if name != "fraud_shadow_rows_total":
            continue
        label = dict(labels)
        decisions = {label.get("served_version"): label.get("served_decision"),
                     label.get("shadow_version"): label.get("shadow_decision")}
        if set(decisions) != {baseline_version, canary_version}:
            continue
        n = round(value)
        pairs += n
        canary_flags, baseline_flags = decisions[canary_version] == FRAUD, decisions[baseline_version] == FRAUD
        canary_only += n if canary_flags and not baseline_flags else 0
        baseline_only += n if baseline_flags and not canary_flags else 0
    if not pairs:
        return None
    return PairedOutcomes(baseline_version, canary_version, Discordant(pairs, canary_only, baseline_only))


def _score_series(counts: Snapshot, versions: set[str]) -> dict[tuple[tuple[str, str], ...], dict[float, float]]:
    """The `fraud_shadow_score` series of a version pair (either served): cumulative count by `le`."""
    series: dict[tuple[tuple[str, str], ...], dict[float, float]] = {}
    for (name, labels), value in counts.items():
        if name != "fraud_shadow_score_bucket":
            continue
        label = dict(labels)
        if {label.get("served_version"), label.get("shadow_version")} == versions:
            le = float(label.pop("le", "nan"))
            series.setdefault(tuple(sorted(label.items())), {})[le] = value
    return series


def paired_scores(counts: Snapshot, baseline_version: str, canary_version: str) -> PairedScores | None:
    """The shadow pairs by cell (as (canary flags, baseline flags), either version served) and each
    version's score bucket, from `fraud_shadow_score`'s cumulative buckets; None without pairs.
    DataError when the transformer counts in other buckets than `PAIRED_SCORE_BOUNDS`."""
    rows = {v: np.zeros((len(CELLS), len(SCORE_BUCKET)), dtype=np.int64) for v in (baseline_version, canary_version)}
    for labels, by_le in _score_series(counts, {baseline_version, canary_version}).items():
        label = dict(labels)
        if set(by_le) - set(SCORE_BUCKET) or label.get("scored_version") not in rows:
            raise DataError(f"fraud_shadow_score {label}: buckets or scored_version other than the rollout's "
                            "(fraud.schema.PAIRED_SCORE_BOUNDS, the pair's two versions)")
        flags = {label["served_version"]: label.get("served_decision") == FRAUD,
                 label["shadow_version"]: label.get("shadow_decision") == FRAUD}
        cumulative = np.zeros(len(SCORE_BUCKET))
        for le, value in by_le.items():
            cumulative[SCORE_BUCKET[le]] = round(value)
        # as histogram_quantile does: increases (and a bucket missing) can break monotony; a count never shrinks with le
        cumulative = np.maximum.accumulate(cumulative)
        rows[label["scored_version"]][CELLS.index((flags[canary_version], flags[baseline_version]))] += np.diff(
            cumulative, prepend=0.0).astype(np.int64)
    if not rows[canary_version].any():
        return None
    return PairedScores(baseline_version, canary_version,
                        {v: tuple(tuple(cell) for cell in table.tolist()) for v, table in rows.items()})


@dataclass
class WindowSpec:
    """When a window is full: `seconds` passed and `min_requests` rows counted (both)."""

    seconds: float = 60.0
    min_requests: int = 0
    poll_s: float = 2.0
    #: Give up (DataError) when the requests have not come in this long: no traffic reaches the transformer.
    max_seconds: float = 3600.0

    def __post_init__(self) -> None:
        if self.seconds < 0 or self.min_requests < 0 or self.poll_s <= 0:
            raise ValueError(f"a window needs seconds ≥ 0, min_requests ≥ 0, poll_s > 0, got {self}")


def wait_full(spec: WindowSpec, started: float, counted: Callable[[], int], stop: Callable[[], bool],
              what: str) -> int:
    """Poll until the window is full; the requests counted. RolloutAborted when `stop()`."""
    last = [0]

    def full() -> tuple[int] | None:
        if stop():
            raise RolloutAborted("abort requested while the window filled")
        last[0] = counted()
        full_now = time.monotonic() - started >= spec.seconds and last[0] >= spec.min_requests
        return (last[0],) if full_now else None

    found = poll(full, timeout_s=started + spec.max_seconds - time.monotonic(), poll_s=spec.poll_s)
    if found is None:
        raise DataError(f"{what}: only {last[0]} of {spec.min_requests} requests after "
                        f"{time.monotonic() - started:.0f} s: is traffic reaching the transformer?")
    return found[0]


def _evidence(counts: Snapshot, started: float, started_at: str, requests: int, versions: tuple[str, str],
              source: str) -> Evidence:
    return Evidence(version_metrics(counts), Window(started_at, now_iso(), time.monotonic() - started, requests),
                    paired_decisions(counts, *versions), source=source, paired_scores=paired_scores(counts, *versions))


class MetricsWindow:
    """Step windows from the transformer's `/metrics` (e.g. http://127.0.0.1:8080/metrics)."""

    def __init__(self, url: str, spec: WindowSpec, baseline_version: str, canary_version: str) -> None:
        self.url, self.spec = url, spec
        self.versions = (baseline_version, canary_version)
        self._last: tuple[int, float, str, Snapshot] | None = None  # percent, monotonic, iso, counters at the end

    def window(self, percent: int, stop: Callable[[], bool]) -> Evidence:
        if self._last is None or self._last[0] != percent:
            self._last = (percent, time.monotonic(), now_iso(), scrape(self.url))
        _, started, started_at, start = self._last
        latest: dict[str, Snapshot] = {}

        def counted() -> int:
            latest["end"] = scrape(self.url)
            return requests_in(delta(latest["end"], start))

        requests = wait_full(self.spec, started, counted, stop, self.url)
        self._last = (percent, time.monotonic(), now_iso(), latest["end"])
        return _evidence(delta(latest["end"], start), started, started_at, requests, self.versions,
                         f"metrics {self.url}")


class PrometheusWindow:
    """Step windows from a Prometheus server scraping the transformer (`selector` picks its series):
    the counters' increase over each window, one query, read as `MetricsWindow` reads a scrape."""

    def __init__(self, url: str, spec: WindowSpec, baseline_version: str, canary_version: str,
                 selector: str = DEFAULT_SELECTOR) -> None:
        self.url, self.spec, self.selector = url, spec, selector
        self.versions = (baseline_version, canary_version)
        self._last: tuple[int, float, str] | None = None

    def _increase(self, started: float) -> Snapshot:
        # one query per counter: increase() drops the metric name, so one query over several names
        # could not tell their series apart
        window = f"{max(1, math.ceil(time.monotonic() - started))}s"
        out: Snapshot = {}
        for name in COUNTED:
            for sample in prometheus_query(self.url, f"increase({name}{{{self.selector}}}[{window}])"):
                labels = {k: v for k, v in sample["metric"].items() if k not in ("__name__", "job", "instance")}
                key = (name, tuple(sorted(labels.items())))
                out[key] = out.get(key, 0.0) + float(sample["value"][1])
        return out

    def window(self, percent: int, stop: Callable[[], bool]) -> Evidence:
        if self._last is None or self._last[0] != percent:
            self._last = (percent, time.monotonic(), now_iso())
        _, started, started_at = self._last
        latest: dict[str, Snapshot] = {}

        def counted() -> int:
            latest["counts"] = self._increase(started)
            return requests_in(latest["counts"])

        requests = wait_full(self.spec, started, counted, stop, self.url)
        self._last = (percent, time.monotonic(), now_iso())
        return _evidence(latest["counts"], started, started_at, requests, self.versions, f"prometheus {self.url}")


class AfterLocalApply:
    """A source for the local runtime: each window starts only once `fraud-rollout serve` has applied
    the manifest's generation (the state dir reconciles on write, the servers follow it a poll later;
    without this a step's first requests would still go by the previous split)."""

    def __init__(self, source: EvidenceSource, state_dir: Path, poll_s: float = 0.2, timeout_s: float = 120.0) -> None:
        self.source, self.state_dir, self.poll_s, self.timeout_s = source, Path(state_dir), poll_s, timeout_s

    def window(self, percent: int, stop: Callable[[], bool]) -> Evidence:
        from fraud_control.inferenceservice.local_state import LocalInferenceService
        from fraud_control.local_runtime.runtime import read_runtime

        wanted = LocalInferenceService(self.state_dir).get()["metadata"]["generation"]
        def aborted() -> None:
            if stop():
                raise RolloutAborted("abort requested while the runtime applied the step")

        if not poll(lambda: (read_runtime(self.state_dir).get("appliedGeneration") or 0) >= wanted,
                    timeout_s=self.timeout_s, poll_s=self.poll_s, give_up=aborted):
            raise DataError(f"the local runtime in {self.state_dir} did not apply generation {wanted} in "
                            f"{self.timeout_s:g} s: is `fraud-rollout serve` running?")
        return self.source.window(percent, stop)
