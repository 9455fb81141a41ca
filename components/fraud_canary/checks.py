"""The canary's checks, one small function per rule: each returns its `Check`s, every reason kept.

A check passes, fails (demanding `on_failure`: rollback or hold) or is insufficient (hold: a
missing or non-finite number never passes). `fraud_canary.decision.recommend` combines them.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from fraud_canary.agreement import agreement_with_offline
from fraud_canary.counts import finite, ratio
from fraud_canary.evidence import EvidenceStatus, evidence_status, plan_recall_evidence
from fraud_canary.metrics import UNATTRIBUTED, VersionMetrics
from fraud_canary.policy import CanaryPolicy, OfflineMetrics
from fraud_canary.proportions import compare_proportions

Action = Literal["promote", "hold", "rollback"]
PROMOTE: Final = "promote"
HOLD: Final = "hold"
ROLLBACK: Final = "rollback"
CheckStatus = Literal["pass", "fail", "insufficient"]


@dataclass(frozen=True)
class Check:
    """One reason: `status` pass / fail / insufficient, and what a failure demands."""

    rule: str
    status: CheckStatus
    on_failure: Action  # rollback or hold; insufficient always means hold
    detail: str
    #: The test or interval behind the check (the report's `comparisons`); not part of the reason.
    comparison: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def to_dict(self) -> dict[str, str]:
        return {"rule": self.rule, "status": self.status, "on_failure": self.on_failure, "detail": self.detail}


@dataclass(frozen=True)
class Observations:
    """What the checks look at: both versions online and offline, and traffic nobody can attribute."""

    baseline: VersionMetrics
    canary: VersionMetrics
    unattributed: VersionMetrics
    other_versions: dict[str, int]  # rows served by versions that are neither baseline nor canary
    offline_baseline: OfflineMetrics
    offline_canary: OfflineMetrics


def observe(online: Mapping[str, VersionMetrics], offline: Mapping[str, OfflineMetrics],
            baseline_version: str, canary_version: str) -> Observations:
    """A version missing online received nothing; one missing offline has NaN metrics (never promotes)."""
    missing = OfflineMetrics(math.nan, math.nan)
    others = {v: m.requests for v, m in online.items() if v not in (baseline_version, canary_version, UNATTRIBUTED)}
    return Observations(
        baseline=online.get(baseline_version, VersionMetrics.empty(baseline_version)),
        canary=online.get(canary_version, VersionMetrics.empty(canary_version)),
        unattributed=online.get(UNATTRIBUTED, VersionMetrics.empty(UNATTRIBUTED)), other_versions=others,
        offline_baseline=offline.get(baseline_version, missing), offline_canary=offline.get(canary_version, missing))


def fmt(x: float, digits: int = 4) -> str:
    return f"{x:.{digits}g}" if finite(x) else "n/a"


def _status(value: float, within: bool) -> CheckStatus:
    return "insufficient" if not finite(value) else "pass" if within else "fail"


def check_error_rates(o: Observations, policy: CanaryPolicy) -> list[Check]:
    """Error rate per version against the objective; failures nobody can attribute count against
    the canary (the baseline has a rolled-out track record, the canary does not)."""
    errors, requests, note = o.canary.errors, o.canary.requests, ""
    if policy.unattributed_errors_against_canary and o.unattributed.errors:
        errors, requests = errors + o.unattributed.errors, requests + o.unattributed.errors
        note = f" (incl. {o.unattributed.errors} unattributed failures)"
    rules: tuple[tuple[str, float, int, Action, str], ...] = (
        ("canary", ratio(errors, requests), requests, ROLLBACK, note),
        ("baseline", o.baseline.error_rate, o.baseline.requests, HOLD, ""))
    return [Check(f"{name}.error_rate", _status(rate, rate <= policy.max_error_rate), action,
                  f"error rate {fmt(rate)} of {n} requests, objective ≤ {policy.max_error_rate}{suffix}")
            for name, rate, n, action, suffix in rules]


def check_latency(o: Observations, policy: CanaryPolicy) -> list[Check]:
    """p99 per version; a slow canary rolls back only beside a baseline that meets the objective
    (both slow points at the platform, not the model)."""
    limit = policy.max_p99_latency_ms
    baseline_ok = finite(o.baseline.latency_p99_ms) and o.baseline.latency_p99_ms <= limit
    rules: tuple[tuple[str, VersionMetrics, Action], ...] = (
        ("canary", o.canary, ROLLBACK if baseline_ok else HOLD), ("baseline", o.baseline, HOLD))
    return [Check(f"{name}.latency_p99", _status(m.latency_p99_ms, m.latency_p99_ms <= limit), action,
                  f"p99 {fmt(m.latency_p99_ms)} ms, objective ≤ {limit} ms")
            for name, m, action in rules]


def check_traffic(o: Observations, policy: CanaryPolicy) -> list[Check]:
    """The canary's share against `canaryTrafficPercent`, and answers nobody can attribute."""
    share_pct = 100 * o.canary.traffic_share
    low = policy.target_canary_percent - policy.canary_percent_tolerance
    high = policy.target_canary_percent + policy.canary_percent_tolerance
    seen = o.baseline.requests + o.canary.requests > 0
    share = Check("traffic.canary_share", _status(share_pct if seen else math.nan, low <= share_pct <= high), HOLD,
                  f"canary share {fmt(share_pct)} %, target {policy.target_canary_percent} ± "
                  f"{policy.canary_percent_tolerance} %")
    others = o.other_versions
    attributed = o.unattributed.answered == 0 and not any(others.values())
    attribution = Check("traffic.attribution", "pass" if attributed else "fail", HOLD,
                        f"{o.unattributed.answered} answered rows without model_version; "
                        f"rows of other versions: {others or 'none'}")
    return [share, attribution]


def check_agreement(rule: str, counts: tuple[int, int] | None, offline_value: float, action_below: Action,
                    policy: CanaryPolicy) -> Check:
    """An online proportion (successes, trials) inside the acceptance interval around its offline
    value; below it demands `action_below`, above it holds (better than offline is still skew)."""
    if counts is None:
        return Check(rule, "insufficient", HOLD, "labels unknown")
    if not finite(offline_value):
        return Check(rule, "insufficient", HOLD, "offline value missing or non-finite")
    successes, trials = counts
    a = agreement_with_offline(successes, trials, offline_value, policy.confidence, policy.interval_method)
    detail = (f"online {fmt(a.online)} ({successes}/{trials}), offline {fmt(offline_value)}, "
              f"{policy.confidence:.0%} acceptance interval [{fmt(a.interval.low)}, {fmt(a.interval.high)}]")
    if a.direction == "unknown":
        return Check(rule, "insufficient", HOLD, detail, a.to_dict())
    action = action_below if a.direction == "below" else HOLD
    return Check(rule, "pass" if a.agrees else "fail", action, detail, a.to_dict())


def check_offline_agreement(o: Observations, policy: CanaryPolicy) -> list[Check]:
    """Per version, online vs offline: recall (frauds seen), precision (flags), flag rate (answers;
    only with an offline flag rate, i.e. traffic drawn like the holdout)."""
    versions: tuple[tuple[str, VersionMetrics, OfflineMetrics, Action], ...] = (
        ("canary", o.canary, o.offline_canary, ROLLBACK), ("baseline", o.baseline, o.offline_baseline, HOLD))
    checks = []
    for name, m, off, recall_action in versions:
        c = m.confusion
        recall, precision = (None, None) if c is None else ((c.tp, c.frauds), (c.tp, c.tp + c.fp))
        checks.append(check_agreement(f"{name}.recall_vs_offline", recall, off.recall, recall_action, policy))
        checks.append(check_agreement(f"{name}.precision_vs_offline", precision, off.precision, HOLD, policy))
        if finite(off.flag_rate):
            checks.append(check_agreement(f"{name}.flag_rate_vs_offline", (m.flagged, m.answered), off.flag_rate,
                                          HOLD, policy))
    return checks


def recall_evidence(o: Observations, policy: CanaryPolicy) -> EvidenceStatus | str:
    """The frauds each version saw against the planned sample size, or why it cannot be judged."""
    cc, bc = o.canary.confusion, o.baseline.confusion
    baseline_recall = o.offline_baseline.recall if finite(o.offline_baseline.recall) else o.baseline.recall
    fraud_rate = ratio((cc.frauds if cc else 0) + (bc.frauds if bc else 0), o.canary.answered + o.baseline.answered)
    try:
        plan = plan_recall_evidence(baseline_recall, policy.detectable_recall_difference,
                                    fraud_rate=fraud_rate, canary_share=policy.target_canary_percent / 100,
                                    alpha=policy.alpha, power=policy.power)
    except ValueError as exc:
        return f"cannot plan the sample size: {exc}"
    if cc is None or bc is None:
        return "labels unknown"
    return evidence_status(plan, candidate_frauds=cc.frauds, baseline_frauds=bc.frauds,
                           requests=o.canary.requests + o.baseline.requests + o.unattributed.requests)


def check_evidence(evidence: EvidenceStatus | str, policy: CanaryPolicy) -> Check:
    if isinstance(evidence, str):
        return Check("evidence.sample_size", "insufficient", HOLD, evidence)
    return Check("evidence.sample_size", "pass" if evidence.sufficient else "insufficient", HOLD,
                 evidence.message + f" (to detect a recall drop of {policy.detectable_recall_difference} "
                 f"at alpha {policy.alpha}, power {policy.power})")


def check_recall_vs_baseline(o: Observations, evidence: EvidenceStatus | None, policy: CanaryPolicy) -> Check:
    """Significantly worse recall rolls back; passing needs significance or the planned power."""
    rule, cc, bc = "canary.recall_vs_baseline", o.canary.confusion, o.baseline.confusion
    if cc is None or bc is None:
        return Check(rule, "insufficient", HOLD, "labels unknown")
    t = compare_proportions(bc.tp, bc.frauds, cc.tp, cc.frauds, alpha=policy.alpha)
    detail = (f"recall canary {fmt(t.candidate_proportion)} ({cc.tp}/{cc.frauds}) vs baseline "
              f"{fmt(t.baseline_proportion)} ({bc.tp}/{bc.frauds}), {t.method} p={fmt(t.p_value, 3)}")
    if t.method == "undefined":
        return Check(rule, "insufficient", HOLD, detail, t.to_dict())
    if t.significant and t.difference < 0:
        return Check(rule, "fail", ROLLBACK, detail + ": significantly worse", t.to_dict())
    if t.significant or (evidence is not None and evidence.sufficient):
        verdict = ": significantly better" if t.significant else ": no significant difference at planned power"
        return Check(rule, "pass", ROLLBACK, detail + verdict, t.to_dict())
    return Check(rule, "insufficient", ROLLBACK,
                 detail + ": not significant and too few frauds to rule out the detectable drop", t.to_dict())


def check_precision_vs_baseline(o: Observations, policy: CanaryPolicy) -> Check:
    """The canary may lose at most `max_precision_drop` of precision, when the loss is significant."""
    rule, cc, bc = "canary.precision_vs_baseline", o.canary.confusion, o.baseline.confusion
    if cc is None or bc is None:
        return Check(rule, "insufficient", HOLD, "labels unknown")
    t = compare_proportions(bc.tp, bc.tp + bc.fp, cc.tp, cc.tp + cc.fp, alpha=policy.alpha)
    detail = (f"precision canary {fmt(t.candidate_proportion)} vs baseline {fmt(t.baseline_proportion)}, "
              f"{t.method} p={fmt(t.p_value, 3)}, allowed drop {policy.max_precision_drop}")
    if t.method == "undefined":
        return Check(rule, "insufficient", HOLD, detail, t.to_dict())
    worse = t.significant and -t.difference > policy.max_precision_drop
    return Check(rule, "fail" if worse else "pass", HOLD, detail, t.to_dict())


def check_flag_rate_vs_baseline(o: Observations, policy: CanaryPolicy) -> Check:
    """Flag rates within ×`max_flag_rate_ratio` of each other either way, when the difference is significant."""
    rule, base, canary = "canary.flag_rate_vs_baseline", o.baseline, o.canary
    t = compare_proportions(base.flagged, base.answered, canary.flagged, canary.answered, alpha=policy.alpha)
    p_c, p_b = t.candidate_proportion, t.baseline_proportion
    # inf when only the baseline flags nothing; NaN when neither flags (equal: fine) or no data.
    flag_ratio = p_c / p_b if p_b else (math.inf if p_c else math.nan)
    detail = (f"flag rate canary {fmt(p_c)} vs baseline {fmt(p_b)} (ratio {fmt(flag_ratio, 3)}), {t.method} "
              f"p={fmt(t.p_value, 3)}, allowed ratio ×{policy.max_flag_rate_ratio}")
    if t.method == "undefined":
        return Check(rule, "insufficient", HOLD, detail, t.to_dict())
    r = policy.max_flag_rate_ratio
    diverged = t.significant and not (1 / r <= flag_ratio <= r)
    return Check(rule, "fail" if diverged else "pass", HOLD, detail, t.to_dict())
