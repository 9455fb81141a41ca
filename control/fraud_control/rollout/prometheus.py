"""Online evidence from Prometheus: the transformer's per-version counters as `VersionMetrics`.

No labels reach Prometheus, so `confusion` is None: an analysis from here can roll back on health
but never promote. An unreachable server or a failed query is a `DataError` naming the URL.
"""
from __future__ import annotations

import json
import math
import urllib.parse
from typing import Any

import httpx
from fraud.schema import DataError
from fraud_canary.metrics import VersionMetrics

DEFAULT_SELECTOR = 'job="fraud-detector"'
PERCENTILES = (50, 95, 99)


def prometheus_query(url: str, query: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """An instant query; the result vector (DataError naming the URL when it fails)."""
    address = f"{url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    try:  # Prometheus answers a refused query 400/422 with a JSON error: read any status's body
        text = httpx.get(address, timeout=timeout).text
    except (httpx.HTTPError, httpx.InvalidURL, OSError, ValueError) as error:
        raise DataError(f"--prometheus {url}: cannot reach Prometheus ({error})") from None
    try:
        body = json.loads(text)
    except ValueError:
        raise DataError(f"--prometheus {url}: not a Prometheus API answer: {text[:200]}") from None
    if not isinstance(body, dict) or body.get("status") != "success":
        error_text = body.get("error", text[:200]) if isinstance(body, dict) else text[:200]
        raise DataError(f"--prometheus {url}: query {query!r} failed: {error_text}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def prometheus_queries(selector: str = DEFAULT_SELECTOR, window: str = "") -> dict[str, str]:
    """The PromQL behind `metrics_from_prometheus` (counters over `window`, or their lifetime)."""
    def counter(name: str) -> str:
        series = f"{name}{{{selector}}}"
        return f"increase({series}[{window}])" if window else series

    latency = counter("fraud_request_seconds_bucket")
    queries = {
        "rows": f"sum by (model_version, decision) ({counter('fraud_predictions_total')})",
        "failed_requests": f"sum by (model_version) ({counter('fraud_predictor_errors_total')})",
    }
    for q in PERCENTILES:
        queries[f"p{q}"] = f"histogram_quantile({q / 100}, sum by (model_version, le) ({latency}))"
    return queries


def _by_version(samples: list[dict[str, Any]], scale: float = 1.0) -> dict[str, float]:
    return {s["metric"].get("model_version", ""): scale * float(s["value"][1]) for s in samples}


def metrics_from_prometheus(url: str, selector: str = DEFAULT_SELECTOR,
                            window: str = "") -> tuple[dict[str, VersionMetrics], dict[str, str]]:
    """VersionMetrics per version from the transformer's counters, and the queries used.

    Units: `fraud_predictions_total` counts scored rows, `fraud_predictor_errors_total` failed
    requests; with live traffic (one transaction per request) they are the same unit. Labels are
    unknown, so `confusion` is None. Latency percentiles come from the histogram buckets."""
    queries = prometheus_queries(selector, window)
    answered: dict[str, int] = {}
    flagged: dict[str, int] = {}
    for sample in prometheus_query(url, queries["rows"]):
        version = sample["metric"].get("model_version", "")
        value = round(float(sample["value"][1]))
        answered[version] = answered.get(version, 0) + value
        if sample["metric"].get("decision") == "fraud":
            flagged[version] = flagged.get(version, 0) + value
    failed = {v: round(n) for v, n in _by_version(prometheus_query(url, queries["failed_requests"])).items()}
    latency_ms = {q: _by_version(prometheus_query(url, queries[f"p{q}"]), 1000) for q in PERCENTILES}
    versions = sorted(set(answered) | {v for v, n in failed.items() if n})
    total = sum(answered.get(v, 0) + failed.get(v, 0) for v in versions)
    out = {}
    for version in versions:
        requests = answered.get(version, 0) + failed.get(version, 0)
        p50, p95, p99 = (latency_ms[q].get(version, math.nan) for q in PERCENTILES)
        out[version] = VersionMetrics(
            model_version=version, requests=requests, errors=failed.get(version, 0),
            flagged=flagged.get(version, 0), traffic_share=requests / total if total else math.nan,
            latency_p50_ms=p50, latency_p95_ms=p95, latency_p99_ms=p99, confusion=None)
    return out, queries
