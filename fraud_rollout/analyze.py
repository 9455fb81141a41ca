"""`fraud-rollout canary analyze`: promote, hold or roll back the canary, with every reason.

Online evidence comes from a replay report (labelled: confusion counts per version) or from
Prometheus (the transformer's per-version counters; no labels, so recall and precision stay
"insufficient" and the analysis can roll back on health but never promote). Offline evidence is the
pipeline report's holdout metrics per version. `fraud_canary.online.recommend` decides; `--apply`
carries the decision out with the same functions `canary promote|rollback` use (local state dir or
the cluster) and keeps MLflow's aliases true (promote: `champion` = the canary's registered
version, `challenger` cleared; rollback: `challenger` cleared). Hold changes nothing.

The evidence policy. `recommend` holds until each version has seen enough frauds to detect a
recall drop of `detectable_recall_difference` (default 0.10) with 80 % power. At a 0.17 % fraud
rate and a 20 % canary that takes ≈ 500,000–700,000 requests; a replay of one holdout has far fewer.
`--detectable-recall-difference auto` states instead the smallest drop the evidence at hand can
detect (`supported_recall_drop`), never less than the default, and the analysis reports both what
the default policy says and what was decided under the stated one. See README "Reading the
recommendation".

Flag rates. `recommend` holds when the two versions' flag rates differ by more than ×2 (the alert
rule's number, meant for unlabelled live traffic). When the online traffic is a replay of the
holdout, the offline flag rates already say how far apart the versions should be (a candidate that
catches a new fraud pattern flags more), and each version's online flag rate is checked against its
own offline value; the ×2 tolerance is then applied around the holdout's ratio.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import replace

from fraud.schema import DataError

from fraud_rollout.args import AUTO

log = logging.getLogger(__name__)

DEFAULT_SELECTOR = 'job="fraud-detector"'
DIFFERENCE_STEP = 0.01


# --------------------------------------------------------------------------------------------
# Evidence
# --------------------------------------------------------------------------------------------


def metrics_from_replay(report: dict) -> dict:
    """VersionMetrics per version from a replay report's `versions` block."""
    from fraud_canary.online import Confusion, VersionMetrics

    def number(x):
        return math.nan if x is None else float(x)

    out = {}
    for version, m in report["versions"].items():
        confusion = None if m.get("tp") is None else Confusion(tp=m["tp"], fp=m["fp"], fn=m["fn"], tn=m["tn"])
        out[version] = VersionMetrics(
            model_version=version, requests=int(m["requests"]), errors=int(m["errors"]), flagged=int(m["flagged"]),
            traffic_share=number(m["traffic_share"]), latency_p50_ms=number(m["latency_p50_ms"]),
            latency_p95_ms=number(m["latency_p95_ms"]), latency_p99_ms=number(m["latency_p99_ms"]),
            confusion=confusion)
    return out


def prometheus_query(url: str, query: str, timeout: float = 10.0) -> list[dict]:
    """An instant query; the result vector (DataError naming the URL when it fails)."""
    import urllib.error
    import urllib.parse
    import urllib.request

    address = f"{url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    try:
        with urllib.request.urlopen(address, timeout=timeout) as response:
            text = response.read().decode()
    except urllib.error.HTTPError as error:  # Prometheus answers 400/422 with a JSON error
        text = error.read().decode(errors="replace")
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise DataError(f"--prometheus {url}: cannot reach Prometheus ({getattr(error, 'reason', error)})") from None
    try:
        body = json.loads(text)
    except ValueError:
        raise DataError(f"--prometheus {url}: not a Prometheus API answer: {text[:200]}") from None
    if body.get("status") != "success":
        raise DataError(f"--prometheus {url}: query {query!r} failed: {body.get('error', text[:200])}")
    return body["data"]["result"]


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
    for q in (50, 95, 99):
        queries[f"p{q}"] = f"histogram_quantile({q / 100}, sum by (model_version, le) ({latency}))"
    return queries


def metrics_from_prometheus(url: str, selector: str = DEFAULT_SELECTOR, window: str = "") -> tuple[dict, dict]:
    """VersionMetrics per version from the transformer's counters, and the queries used.

    Units: `fraud_predictions_total` counts scored rows, `fraud_predictor_errors_total` failed
    requests; with live traffic (one transaction per request) they are the same unit. Labels are
    unknown, so `confusion` is None. Latency percentiles come from the histogram buckets."""
    from fraud_canary.online import VersionMetrics

    queries = prometheus_queries(selector, window)
    answered: dict[str, int] = {}
    flagged: dict[str, int] = {}
    for sample in prometheus_query(url, queries["rows"]):
        version = sample["metric"].get("model_version", "")
        value = round(float(sample["value"][1]))
        answered[version] = answered.get(version, 0) + value
        if sample["metric"].get("decision") == "fraud":
            flagged[version] = flagged.get(version, 0) + value
    failed = {s["metric"].get("model_version", ""): round(float(s["value"][1]))
              for s in prometheus_query(url, queries["failed_requests"])}
    percentiles = {q: {s["metric"].get("model_version", ""): 1000 * float(s["value"][1])
                       for s in prometheus_query(url, queries[q])} for q in ("p50", "p95", "p99")}
    versions = sorted(set(answered) | {v for v, n in failed.items() if n})
    total = sum(answered.get(v, 0) + failed.get(v, 0) for v in versions)
    out = {}
    for version in versions:
        requests = answered.get(version, 0) + failed.get(version, 0)
        out[version] = VersionMetrics(
            model_version=version, requests=requests, errors=failed.get(version, 0),
            flagged=flagged.get(version, 0), traffic_share=requests / total if total else math.nan,
            latency_p50_ms=percentiles["p50"].get(version, math.nan),
            latency_p95_ms=percentiles["p95"].get(version, math.nan),
            latency_p99_ms=percentiles["p99"].get(version, math.nan), confusion=None)
    return out, queries


def offline_metrics(pipeline_report: dict, with_flag_rate: bool) -> dict:
    """OfflineMetrics per model_version from the pipeline report's holdout metrics. The flag rate
    only when online traffic is drawn like the holdout (a replay of it)."""
    from fraud_canary.online import OfflineMetrics

    out = {}
    for name, model in pipeline_report["models"].items():
        metrics = OfflineMetrics.from_mapping(model["holdout"])
        out[str(model.get("version", name))] = metrics if with_flag_rate else replace(metrics, flag_rate=math.nan)
    return out


def supported_recall_drop(baseline_recall: float, candidate_frauds: int, baseline_frauds: int, policy) -> float | None:
    """The smallest recall drop (in steps of 0.01) that the frauds each version saw can detect at
    the policy's alpha and power (`fraud_canary.online.plan_recall_evidence`); None if even 0.99 cannot."""
    from fraud_canary.online import plan_recall_evidence

    if not (math.isfinite(baseline_recall) and 0 <= baseline_recall <= 1):
        return None
    for step in range(1, 100):
        difference = round(step * DIFFERENCE_STEP, 2)
        try:
            plan = plan_recall_evidence(baseline_recall, difference, fraud_rate=math.nan,
                                        canary_share=policy.target_canary_percent / 100,
                                        alpha=policy.alpha, power=policy.power)
        except ValueError:
            continue
        if plan.candidate_frauds_needed <= candidate_frauds and plan.baseline_frauds_needed <= baseline_frauds:
            return difference
    return None


# --------------------------------------------------------------------------------------------
# Analysis
# --------------------------------------------------------------------------------------------


def analyze(online: dict, offline: dict, *, baseline_version: str, canary_version: str,
            canary_percent: float = 20.0, detectable: float | str | None = None) -> dict:
    """The recommendation under the stated policy, and what the default policy says.

    Returns a JSON-ready dict: action, reasons, checks, evidence, comparisons, the policy used
    (with how its detectable difference was chosen) and `default_policy` (action and evidence
    message of `CanaryPolicy()` at the same canary percent)."""
    from fraud_canary.online import CanaryPolicy, recommend

    default = CanaryPolicy(target_canary_percent=canary_percent)
    choice = "default"
    policy = default
    supported = None
    base, canary = online.get(baseline_version), online.get(canary_version)
    if base is not None and canary is not None and base.confusion and canary.confusion:
        off = offline.get(baseline_version)
        baseline_recall = off.recall if off is not None and math.isfinite(off.recall) else base.recall
        supported = supported_recall_drop(baseline_recall, canary.confusion.frauds, base.confusion.frauds, default)
    if detectable == AUTO:
        if supported is not None and supported > default.detectable_recall_difference:
            policy = replace(default, detectable_recall_difference=supported)
            choice = (f"auto: the smallest recall drop the frauds seen can detect at alpha {default.alpha}, "
                      f"power {default.power}")
        else:
            choice = "auto: the evidence supports the default"
    elif detectable is not None:
        policy = replace(default, detectable_recall_difference=float(detectable))
        choice = "given"
    # Flag rates: with offline flag rates (a replay of the holdout) the versions' expected ratio is
    # known; the ×2 tolerance applies around it, not around 1 (a canary that catches a new fraud
    # pattern flags more, as the holdout already showed). Each version's flag rate is also checked
    # against its own offline value.
    ratio_choice = "default"
    off_b, off_c = offline.get(baseline_version), offline.get(canary_version)
    if off_b is not None and off_c is not None and all(math.isfinite(x) and x > 0 for x in (off_b.flag_rate,
                                                                                           off_c.flag_rate)):
        expected = off_c.flag_rate / off_b.flag_rate
        widened = default.max_flag_rate_ratio * max(expected, 1 / expected)
        if widened > policy.max_flag_rate_ratio:
            policy = replace(policy, max_flag_rate_ratio=round(widened, 3))
            ratio_choice = (f"×{default.max_flag_rate_ratio:g} around the holdout's own ratio {expected:.3g} "
                            f"(offline flag rates {off_c.flag_rate:.4g} vs {off_b.flag_rate:.4g})")
    decided = recommend(online, offline, baseline_version=baseline_version, canary_version=canary_version,
                        policy=policy)
    # what the default evidence requirement says (same flag-rate tolerance: it is not about evidence)
    evidence_default = replace(policy, detectable_recall_difference=default.detectable_recall_difference)
    by_default = decided if policy == evidence_default else recommend(
        online, offline, baseline_version=baseline_version, canary_version=canary_version, policy=evidence_default)
    result = decided.to_dict()
    result["policy"] = {**policy.__dict__, "detectable_recall_difference_choice": choice,
                        "supported_recall_drop": supported, "max_flag_rate_ratio_choice": ratio_choice}
    result["default_policy"] = {"action": by_default.action,
                                "detectable_recall_difference": default.detectable_recall_difference,
                                "evidence": by_default.evidence.message if by_default.evidence else None,
                                "requests_remaining": (by_default.evidence.requests_remaining
                                                       if by_default.evidence else None)}
    result["online"] = {v: m.to_dict() for v, m in online.items()}
    result["offline"] = {v: m.__dict__ for v, m in offline.items()}
    return result


def format_analysis(analysis: dict) -> str:
    policy = analysis["policy"]
    lines = [f"canary analysis: {analysis['canary_version']} (canary) vs {analysis['baseline_version']} (rolled out)",
             f"  policy: detect a recall drop of {policy['detectable_recall_difference']:.2f} at alpha {policy['alpha']}, "
             f"power {policy['power']} ({policy['detectable_recall_difference_choice']}); error rate ≤ "
             f"{policy['max_error_rate']}, p99 ≤ {policy['max_p99_latency_ms']:g} ms, canary share "
             f"{policy['target_canary_percent']:g} ± {policy['canary_percent_tolerance']:g} %; flag-rate ratio "
             f"within ×{policy['max_flag_rate_ratio']:g} ({policy['max_flag_rate_ratio_choice']})"]
    for reason in analysis["reasons"]:
        lines.append(f"  {reason}")
    default = analysis["default_policy"]
    if policy["detectable_recall_difference"] != default["detectable_recall_difference"]:
        remaining = default["requests_remaining"]
        lines.append(f"  default policy (recall drop {default['detectable_recall_difference']:.2f}) would say "
                     f"{default['action'].upper()}"
                     + (f": ≈ {remaining:,} more requests needed" if remaining else ""))
    lines.append(f"RECOMMENDATION: {analysis['action'].upper()}")
    return "\n".join(lines)
