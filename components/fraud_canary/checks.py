"""The canary's checks, one small function per rule: each returns its `Check`s, every reason kept.

A check passes, fails (demanding `on_failure`: rollback or hold) or is insufficient (hold: a
missing or non-finite number never passes). `fraud_canary.decision.recommend` combines them.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from scipy import stats

from fraud_canary.agreement import agreement_with_offline
from fraud_canary.counts import finite, ratio
from fraud_canary.evidence import EvidenceStatus, evidence_status, plan_recall_evidence
from fraud_canary.metrics import UNATTRIBUTED, VersionMetrics
from fraud_canary.paired import Discordant, PairedOutcomes
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


def paired_recall_decided(paired: PairedOutcomes | None, policy: CanaryPolicy) -> Discordant | None:
    """The paired recall table when McNemar's test on it is significant (decisive either way), else None."""
    frauds = paired.frauds if paired is not None else None
    return frauds if frauds is not None and _significant(frauds, policy) else None


def check_evidence(evidence: EvidenceStatus | str, policy: CanaryPolicy,
                   paired: PairedOutcomes | None = None) -> Check:
    """The unpaired sample-size plan met, or a significant paired recall test (which needs no plan:
    its p-value already says the evidence decided)."""
    rule = "evidence.sample_size"
    planned = f" (to detect a recall drop of {policy.detectable_recall_difference} at alpha {policy.alpha}, " \
              f"power {policy.power})"
    unpaired = evidence if isinstance(evidence, str) else evidence.message + planned
    if not isinstance(evidence, str) and evidence.sufficient:
        return Check(rule, "pass", HOLD, unpaired if paired is None else f"unpaired plan met: {unpaired}")
    decided = paired_recall_decided(paired, policy)
    if decided is not None:
        return Check(rule, "pass", HOLD, f"paired recall test decided (McNemar exact p={fmt(decided.p_value, 3)} "
                     f"< alpha {policy.alpha} on {decided.discordant} discordant frauds); unpaired: {unpaired}")
    return Check(rule, "insufficient", HOLD, unpaired)


def check_recall_vs_baseline(o: Observations, evidence: EvidenceStatus | None, policy: CanaryPolicy,
                             paired: PairedOutcomes | None = None) -> Check:
    """Significantly worse recall rolls back; passing needs significance, the planned power, or a
    paired recall test that found the canary significantly better."""
    rule, cc, bc = "canary.recall_vs_baseline", o.canary.confusion, o.baseline.confusion
    if cc is None or bc is None:
        return Check(rule, "insufficient", HOLD, "labels unknown")
    t = compare_proportions(bc.tp, bc.frauds, cc.tp, cc.frauds, alpha=policy.alpha)
    detail = (f"recall canary {fmt(t.candidate_proportion)} ({cc.tp}/{cc.frauds}) vs baseline "
              f"{fmt(t.baseline_proportion)} ({bc.tp}/{bc.frauds}), {t.method} p={fmt(t.p_value, 3)}")
    if t.significant and t.difference < 0:
        return Check(rule, "fail", ROLLBACK, detail + ": significantly worse", t.to_dict())
    decided = paired_recall_decided(paired, policy)
    if decided is not None and decided.canary_only > decided.baseline_only:
        return Check(rule, "pass", ROLLBACK, detail + f": the paired test decided (canary significantly better, "
                     f"McNemar exact p={fmt(decided.p_value, 3)})", t.to_dict())
    if t.method == "undefined":
        return Check(rule, "insufficient", HOLD, detail, t.to_dict())
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
    flag_ratio = rate_ratio(p_c, p_b)
    detail = (f"flag rate canary {fmt(p_c)} vs baseline {fmt(p_b)} (ratio {fmt(flag_ratio, 3)}), {t.method} "
              f"p={fmt(t.p_value, 3)}, allowed ratio ×{policy.max_flag_rate_ratio}")
    if t.method == "undefined":
        return Check(rule, "insufficient", HOLD, detail, t.to_dict())
    diverged = t.significant and not within_ratio(flag_ratio, policy.max_flag_rate_ratio)
    return Check(rule, "fail" if diverged else "pass", HOLD, detail, t.to_dict())


def rate_ratio(canary: float, baseline: float) -> float:
    """canary / baseline rate: inf when only the baseline's is 0; NaN when neither has any (or no data)."""
    return canary / baseline if baseline else (math.inf if canary else math.nan)


def within_ratio(value: float, max_ratio: float) -> bool:
    """Within ×max_ratio either way (NaN is not within: it never passes a significant difference)."""
    return 1 / max_ratio <= value <= max_ratio


def _significant(d: Discordant, policy: CanaryPolicy) -> bool:
    return finite(d.p_value) and d.p_value < policy.alpha


def _split(d: Discordant, paired: PairedOutcomes, what: str) -> str:
    c, b = paired.canary_version, paired.baseline_version
    return (f"{c} {what} {d.canary_only} {b} did not, {b} {d.baseline_only} {c} did not, of {d.pairs} pairs, "
            f"McNemar exact p={fmt(d.p_value, 3)}")


#: Why an undecided paired test passes: pairs add evidence, they never block what the unpaired
#: tests decided with the planned power.
DEFERS = "; the unpaired plan is met, so the unpaired tests decide"


def check_paired_recall(paired: PairedOutcomes, policy: CanaryPolicy, unpaired_sufficient: bool = False) -> Check:
    """McNemar on the labelled frauds both versions scored: significantly worse rolls back,
    significantly better passes; anything else (labels unknown, not significant) is insufficient,
    unless the unpaired evidence plan is met (`unpaired_sufficient`)."""
    rule, d = "paired.recall", paired.frauds
    undecided: CheckStatus = "pass" if unpaired_sufficient else "insufficient"
    if d is None:
        return Check(rule, undecided, HOLD, "labels unknown" + (DEFERS if unpaired_sufficient else ""))
    c, b = paired.canary_version, paired.baseline_version
    detail = (f"{c} caught {d.canary_only} frauds {b} missed, {b} caught {d.baseline_only} {c} missed, "
              f"of {d.pairs} paired frauds, McNemar exact p={fmt(d.p_value, 3)}")
    if not _significant(d, policy):
        return Check(rule, undecided, ROLLBACK, detail + f": not significant at alpha {policy.alpha}"
                     + (DEFERS if unpaired_sufficient else ""), d.to_dict())
    worse = d.canary_only < d.baseline_only
    return Check(rule, "fail" if worse else "pass", ROLLBACK,
                 detail + (": canary significantly worse" if worse else ": canary significantly better"), d.to_dict())


def _paired_rate_check(rule: str, d: Discordant, paired: PairedOutcomes, what: str, policy: CanaryPolicy,
                       *, only_canary_worse: bool) -> Check:
    """Fail (hold) when McNemar is significant and the paired rates' ratio is beyond the flag-rate
    tolerance (`max_flag_rate_ratio`, widened like the unpaired check's); both directions unless
    `only_canary_worse`."""
    r = policy.max_flag_rate_ratio
    rates = rate_ratio(d.canary_rate, d.baseline_rate)
    detail = (_split(d, paired, what) + f"; rates {fmt(d.canary_rate)} vs {fmt(d.baseline_rate)} "
              f"(ratio {fmt(rates, 3)}), allowed ratio ×{r}")
    if d.pairs == 0:
        return Check(rule, "insufficient", HOLD, "no paired rows", d.to_dict())
    if not _significant(d, policy) or (only_canary_worse and d.canary_only < d.baseline_only):
        return Check(rule, "pass", HOLD, detail, d.to_dict())
    if d.both is None:
        return Check(rule, "insufficient", HOLD, detail + ": significant, but the rows both versions flag were "
                     "not counted, so the ratio is unknown", d.to_dict())
    return Check(rule, "pass" if within_ratio(rates, r) else "fail", HOLD, detail, d.to_dict())


def check_paired_false_alarms(paired: PairedOutcomes, policy: CanaryPolicy, unpaired_sufficient: bool = False) -> Check:
    """The canary's extra false alarms on paired legitimate rows, significant and beyond the ratio:
    hold. Without labels insufficient, unless the unpaired evidence plan is met."""
    if paired.legit is None:
        return Check("paired.false_alarms", "pass" if unpaired_sufficient else "insufficient", HOLD,
                     "labels unknown" + (DEFERS if unpaired_sufficient else ""))
    return _paired_rate_check("paired.false_alarms", paired.legit, paired, "falsely flagged", policy,
                              only_canary_worse=True)


def check_paired_flag_rate(paired: PairedOutcomes, policy: CanaryPolicy) -> Check:
    """Paired flag-rate shift (no labels): McNemar on rows flagged by one version only."""
    return _paired_rate_check("paired.flag_rate", paired.decisions, paired, "flagged", policy,
                              only_canary_worse=False)


def check_paired_disagreement(paired: PairedOutcomes, policy: CanaryPolicy) -> Check:
    """Share of paired rows the versions decide differently, against `max_paired_disagreement`.
    Above it by chance alone is held (insufficient); significantly above it (one-sided binomial
    test) rolls back: the canary is not the model that was gated."""
    rule, d, limit = "paired.disagreement", paired.decisions, policy.max_paired_disagreement
    if d.pairs == 0:
        return Check(rule, "insufficient", HOLD, "no paired rows")
    detail = f"versions disagree on {d.discordant} of {d.pairs} paired rows ({fmt(d.rate)}), tolerance ≤ {limit}"
    if d.rate <= limit:
        return Check(rule, "pass", ROLLBACK, detail, d.to_dict())
    p = float(stats.binomtest(d.discordant, d.pairs, limit, alternative="greater").pvalue)
    detail += f", one-sided binomial p={fmt(p, 3)}"
    if p < policy.alpha:
        return Check(rule, "fail", ROLLBACK, detail, d.to_dict())
    return Check(rule, "insufficient", ROLLBACK, detail + ": above the tolerance, not significantly", d.to_dict())
