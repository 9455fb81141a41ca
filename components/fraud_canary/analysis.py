"""A canary analysis: the recommendation under the stated policy, and what the default policy says.

Online evidence is a replay report (labelled: confusion counts per version) or the transformer's
Prometheus counters (`fraud_control.rollout.prometheus`; no labels, so recall and precision stay
"insufficient" and the analysis can roll back on health but never promote). Offline evidence is
the pipeline report's holdout metrics per version. `recommend` decides.

The evidence policy. `recommend` holds until each version has seen enough frauds to detect a
recall drop of `detectable_recall_difference` (default 0.10) with 80 % power. At a 0.17 % fraud
rate and a 20 % canary that takes ≈ 500,000–700,000 requests; a replay of one holdout has far fewer.
`detectable="auto"` states instead the smallest drop the evidence at hand can detect
(`supported_recall_drop`), never less than the default, and the analysis reports both what the
default policy says and what was decided under the stated one. See README "Check the canary
online".

Flag rates. `recommend` holds when the two versions' flag rates differ by more than ×2 (the alert
rule's number, meant for unlabelled live traffic). When the online traffic is a replay of the
holdout, the offline flag rates already say how far apart the versions should be (a candidate that
catches a new fraud pattern flags more), and each version's online flag rate is checked against its
own offline value; the ×2 tolerance is then applied around the holdout's ratio.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, replace
from typing import Any

from fraud.canary_percent import DEFAULT_CANARY_PERCENT

from fraud_canary.decision import Recommendation, recommend
from fraud_canary.evidence import plan_recall_evidence
from fraud_canary.metrics import Confusion, VersionMetrics
from fraud_canary.paired import PairedOutcomes
from fraud_canary.policy import CanaryPolicy, OfflineMetrics

#: `detectable` value that asks for the smallest recall drop the evidence supports (the CLI's
#: `--detectable-recall-difference auto` passes this word through).
AUTO = "auto"
DIFFERENCE_STEP = 0.01

Online = Mapping[str, VersionMetrics]
Offline = Mapping[str, OfflineMetrics]


def _number(x: float | None) -> float:
    return math.nan if x is None else float(x)


def metrics_from_replay(report: Mapping[str, Any]) -> dict[str, VersionMetrics]:
    """VersionMetrics per version from a replay report's `versions` block."""
    out = {}
    for version, m in report["versions"].items():
        confusion = None if m.get("tp") is None else Confusion(tp=m["tp"], fp=m["fp"], fn=m["fn"], tn=m["tn"])
        out[version] = VersionMetrics(
            model_version=version, requests=int(m["requests"]), errors=int(m["errors"]), flagged=int(m["flagged"]),
            traffic_share=_number(m["traffic_share"]), latency_p50_ms=_number(m["latency_p50_ms"]),
            latency_p95_ms=_number(m["latency_p95_ms"]), latency_p99_ms=_number(m["latency_p99_ms"]),
            confusion=confusion, latency_histogram=tuple((float(b), int(n)) for b, n in m.get("latency_histogram") or ())
            or None)
    return out


def paired_from_replay(report: Mapping[str, Any], baseline_version: str, canary_version: str) -> PairedOutcomes | None:
    """A replay report's shadow pairs for this version pair (None without shadow scoring, or when
    the pairs are about other versions)."""
    shown = report.get("paired")
    if not shown or (shown.get("baseline_version"), shown.get("canary_version")) != (baseline_version, canary_version):
        return None
    return PairedOutcomes.from_dict(shown)


def offline_metrics(pipeline_report: Mapping[str, Any], with_flag_rate: bool) -> dict[str, OfflineMetrics]:
    """OfflineMetrics per model_version from the pipeline report's holdout metrics. The flag rate
    only when online traffic is drawn like the holdout (a replay of it)."""
    out = {}
    for name, model in pipeline_report["models"].items():
        metrics = OfflineMetrics.from_mapping(model["holdout"])
        out[str(model.get("version", name))] = metrics if with_flag_rate else replace(metrics, flag_rate=math.nan)
    return out


def supported_recall_drop(baseline_recall: float, candidate_frauds: int, baseline_frauds: int,
                          policy: CanaryPolicy) -> float | None:
    """The smallest recall drop (in steps of 0.01) that the frauds each version saw can detect at
    the policy's alpha and power (`plan_recall_evidence`); None if even 0.99 cannot."""
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


def supported_by(online: Online, offline: Offline, baseline_version: str, canary_version: str,
                 policy: CanaryPolicy) -> float | None:
    """`supported_recall_drop` for the frauds both versions saw; None without labels."""
    base, canary = online.get(baseline_version), online.get(canary_version)
    if base is None or canary is None or not base.confusion or not canary.confusion:
        return None
    off = offline.get(baseline_version)
    baseline_recall = off.recall if off is not None and math.isfinite(off.recall) else base.recall
    return supported_recall_drop(baseline_recall, canary.confusion.frauds, base.confusion.frauds, policy)


def evidence_policy(default: CanaryPolicy, detectable: float | str | None,
                    supported: float | None) -> tuple[CanaryPolicy, str]:
    """The policy's detectable recall difference: the default, a given one, or (AUTO) the supported
    one when it is larger than the default; and how it was chosen."""
    if detectable == AUTO:
        if supported is not None and supported > default.detectable_recall_difference:
            return (replace(default, detectable_recall_difference=supported),
                    f"auto: the smallest recall drop the frauds seen can detect at alpha {default.alpha}, "
                    f"power {default.power}")
        return default, "auto: the evidence supports the default"
    if detectable is not None:
        return replace(default, detectable_recall_difference=float(detectable)), "given"
    return default, "default"


def flag_rate_policy(policy: CanaryPolicy, default: CanaryPolicy, offline: Offline, baseline_version: str,
                     canary_version: str) -> tuple[CanaryPolicy, str]:
    """With offline flag rates (a replay of the holdout) the versions' expected ratio is known: the
    ×2 tolerance applies around it, not around 1 (a canary that catches a new fraud pattern flags
    more, as the holdout already showed). Each version's own flag rate is checked against its
    offline value besides."""
    off_b, off_c = offline.get(baseline_version), offline.get(canary_version)
    if off_b is None or off_c is None or not all(math.isfinite(x) and x > 0 for x in (off_b.flag_rate, off_c.flag_rate)):
        return policy, "default"
    expected = off_c.flag_rate / off_b.flag_rate
    widened = default.max_flag_rate_ratio * max(expected, 1 / expected)
    if widened <= policy.max_flag_rate_ratio:
        return policy, "default"
    return (replace(policy, max_flag_rate_ratio=round(widened, 3)),
            f"×{default.max_flag_rate_ratio:g} around the holdout's own ratio {expected:.3g} "
            f"(offline flag rates {off_c.flag_rate:.4g} vs {off_b.flag_rate:.4g})")


def _default_policy_says(by_default: Recommendation, default: CanaryPolicy) -> dict[str, Any]:
    evidence = by_default.evidence
    return {"action": by_default.action, "detectable_recall_difference": default.detectable_recall_difference,
            "evidence": evidence.message if evidence else None,
            "requests_remaining": evidence.requests_remaining if evidence else None}


def analyze(online: Online, offline: Offline, *, baseline_version: str, canary_version: str,
            canary_percent: float = DEFAULT_CANARY_PERCENT, detectable: float | str | None = None,
            paired: PairedOutcomes | None = None) -> dict[str, Any]:
    """The recommendation under the stated policy, and what the default policy says.

    Returns a JSON-ready dict: action, reasons, checks, evidence, comparisons, the policy used
    (with how its detectable difference was chosen) and `default_policy` (action and evidence
    message of `CanaryPolicy()` at the same canary percent). With `paired` (shadow-scored rows)
    also `paired` (`PairedOutcomes.to_dict()`) and `without_pairs`: the action and evidence
    message of the same policy without them."""
    default = CanaryPolicy(target_canary_percent=canary_percent)
    supported = supported_by(online, offline, baseline_version, canary_version, default)
    policy, choice = evidence_policy(default, detectable, supported)
    policy, ratio_choice = flag_rate_policy(policy, default, offline, baseline_version, canary_version)

    def recommend_under(p: CanaryPolicy, pairs: PairedOutcomes | None = paired) -> Recommendation:
        return recommend(online, offline, baseline_version=baseline_version, canary_version=canary_version, policy=p,
                         paired=pairs)

    decided = recommend_under(policy)
    # What the default evidence requirement says (same flag-rate tolerance: that is not about evidence).
    evidence_default = replace(policy, detectable_recall_difference=default.detectable_recall_difference)
    by_default = decided if policy == evidence_default else recommend_under(evidence_default)
    with_pairs: dict[str, Any] = {}
    if paired is not None:
        unpaired = recommend_under(policy, None)
        with_pairs = {"paired": paired.to_dict(),
                      "without_pairs": {"action": unpaired.action,
                                        "evidence": unpaired.evidence.message if unpaired.evidence else None}}
    return {**decided.to_dict(),
            "policy": {**asdict(policy), "detectable_recall_difference_choice": choice,
                       "supported_recall_drop": supported, "max_flag_rate_ratio_choice": ratio_choice},
            "default_policy": _default_policy_says(by_default, default),
            **with_pairs,
            "online": {v: m.to_dict() for v, m in online.items()},
            "offline": {v: asdict(m) for v, m in offline.items()}}


def _paired_lines(analysis: Mapping[str, Any]) -> list[str]:
    paired, without = analysis.get("paired"), analysis.get("without_pairs")
    if paired is None:
        return []
    c, b = paired["canary_version"], paired["baseline_version"]
    decisions = paired["decisions"]
    p = paired["p_value"]
    if paired["frauds"] is None:
        recall = "frauds among them unknown (no labels)"
    else:
        recall = (f"frauds caught by one only: {c} {paired['canary_only_right']}, {b} "
                  f"{paired['baseline_only_right']}, McNemar exact p={p:.3g}" if p is not None and math.isfinite(p)
                  else "no fraud caught by one version only")
    lines = [f"  paired: {paired['pairs']:,} rows scored by both, decided differently on "
             f"{decisions['canary_only'] + decisions['baseline_only']:,}; {recall}"]
    if without is not None and without["action"] != analysis["action"]:
        lines.append(f"  without the pairs the same policy would say {without['action'].upper()}"
                     + (f": {without['evidence']}" if without["evidence"] else ""))
    return lines


def format_analysis(analysis: Mapping[str, Any]) -> str:
    """The analysis as the lines `canary analyze` prints, ending with the recommendation."""
    policy = analysis["policy"]
    lines = [f"canary analysis: {analysis['canary_version']} (canary) vs {analysis['baseline_version']} (rolled out)",
             f"  policy: detect a recall drop of {policy['detectable_recall_difference']:.2f} at alpha {policy['alpha']}, "
             f"power {policy['power']} ({policy['detectable_recall_difference_choice']}); error rate ≤ "
             f"{policy['max_error_rate']}, p99 ≤ {policy['max_p99_latency_ms']:g} ms, canary share "
             f"{policy['target_canary_percent']:g} ± {policy['canary_percent_tolerance']:g} %; flag-rate ratio "
             f"within ×{policy['max_flag_rate_ratio']:g} ({policy['max_flag_rate_ratio_choice']})"]
    lines += [f"  {reason}" for reason in analysis["reasons"]]
    default = analysis["default_policy"]
    if policy["detectable_recall_difference"] != default["detectable_recall_difference"]:
        remaining = default["requests_remaining"]
        lines.append(f"  default policy (recall drop {default['detectable_recall_difference']:.2f}) would say "
                     f"{default['action'].upper()}"
                     + (f": ≈ {remaining:,} more requests needed" if remaining else ""))
    lines += _paired_lines(analysis)
    lines.append(f"RECOMMENDATION: {analysis['action'].upper()}")
    return "\n".join(lines)
