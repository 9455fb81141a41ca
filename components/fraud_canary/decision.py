"""Promote, hold or roll back the canary: every check of `fraud_canary.checks`, combined.

The shape of `fraud.gate`: a frozen policy (`CanaryPolicy`), the rules as data (`RULES`), every
reason kept, and it fails closed: a missing or non-finite number never promotes.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fraud_canary.checks import (
    HOLD,
    PROMOTE,
    ROLLBACK,
    Action,
    Check,
    Observations,
    check_error_rates,
    check_evidence,
    check_flag_rate_vs_baseline,
    check_latency,
    check_offline_agreement,
    check_paired_disagreement,
    check_paired_false_alarms,
    check_paired_flag_rate,
    check_paired_recall,
    check_precision_vs_baseline,
    check_recall_vs_baseline,
    check_traffic,
    observe,
    recall_evidence,
)
from fraud_canary.evidence import EvidenceStatus
from fraud_canary.metrics import VersionMetrics
from fraud_canary.paired import PairedOutcomes
from fraud_canary.policy import CanaryPolicy, OfflineMetrics

#: The checks that need nothing but the observations, in the order they are reported: health
#: (errors, latency), traffic, online vs offline. The comparisons with the baseline follow, after
#: the evidence they depend on.
RULES: tuple[Callable[[Observations, CanaryPolicy], list[Check]], ...] = (
    check_error_rates, check_latency, check_traffic, check_offline_agreement)

#: The checks on paired (shadow-scored) rows, when there are any: label-free first (disagreement,
#: flag-rate shift), then the labelled ones (recall, false alarms), which are told whether the
#: unpaired evidence plan is met.
PAIRED_RULES: tuple[Callable[[PairedOutcomes, CanaryPolicy], Check], ...] = (
    check_paired_disagreement, check_paired_flag_rate)
PAIRED_LABELLED_RULES: tuple[Callable[[PairedOutcomes, CanaryPolicy, bool], Check], ...] = (
    check_paired_recall, check_paired_false_alarms)

_ORDER = {"fail": 0, "insufficient": 1, "pass": 2}


@dataclass(frozen=True)
class Recommendation:
    action: Action
    baseline_version: str
    canary_version: str
    checks: tuple[Check, ...]
    evidence: EvidenceStatus | None = None

    @property
    def comparisons(self) -> dict[str, dict[str, Any]]:
        """The test or interval behind each check that computed one, by rule."""
        return {c.rule: dict(c.comparison) for c in self.checks if c.comparison is not None}

    @property
    def reasons(self) -> list[str]:
        """Every check as one line, failures first."""
        return [f"{c.status.upper()} {c.rule}: {c.detail}" + (f" → {c.on_failure}" if c.status == "fail" else "")
                for c in sorted(self.checks, key=lambda c: _ORDER[c.status])]

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "baseline_version": self.baseline_version,
                "canary_version": self.canary_version, "reasons": self.reasons,
                "checks": [c.to_dict() for c in self.checks],
                "evidence": self.evidence.to_dict() if self.evidence else None,
                "comparisons": self.comparisons}


def action_of(checks: Sequence[Check]) -> Action:
    """Rollback if any failure demands it; promote only when every check passed; else hold."""
    if any(c.status == "fail" and c.on_failure == ROLLBACK for c in checks):
        return ROLLBACK
    return PROMOTE if all(c.passed for c in checks) else HOLD


def recommend(
    online: Mapping[str, VersionMetrics],
    offline: Mapping[str, OfflineMetrics],
    *,
    baseline_version: str,
    canary_version: str,
    policy: CanaryPolicy = CanaryPolicy(),
    paired: PairedOutcomes | None = None,
) -> Recommendation:
    """Promote, hold or roll back the canary, with every reason.

    Rollback when the canary's error rate is above the objective, its recall is significantly
    below the baseline's or below its own offline interval, or its p99 breaks the objective
    while the baseline's does not. Hold on any other failed check (baseline unhealthy, traffic
    share off target, precision/flag rate out of line, unattributed answers) and whenever
    evidence is insufficient (too few frauds for the planned power, missing or non-finite
    metrics). Promote only when every check passes.

    Args:
        online: `version_metrics` output (or metrics built from Prometheus counters).
        offline: holdout metrics per version; a version missing here cannot be promoted.
        baseline_version: the rolled-out version (v1).
        canary_version: the version under test (v2).
        paired: both versions' decisions on the same (shadow-scored) rows. Adds the `paired.*`
            checks; disagreement beyond `max_paired_disagreement` rolls back and a significant
            paired recall test (McNemar) satisfies the evidence requirement either way.
    """
    if baseline_version == canary_version:
        raise ValueError("baseline_version and canary_version must differ")
    if paired is not None and (paired.baseline_version, paired.canary_version) != (baseline_version, canary_version):
        raise ValueError(f"paired outcomes are for {paired.canary_version} vs {paired.baseline_version}, "
                         f"not {canary_version} vs {baseline_version}")
    o = observe(online, offline, baseline_version, canary_version)
    checks = [check for rule in RULES for check in rule(o, policy)]
    evidence = recall_evidence(o, policy)
    status = evidence if isinstance(evidence, EvidenceStatus) else None
    checks += [check_evidence(evidence, policy, paired), check_recall_vs_baseline(o, status, policy, paired),
               check_precision_vs_baseline(o, policy), check_flag_rate_vs_baseline(o, policy)]
    if paired is not None:
        planned = status is not None and status.sufficient
        checks += [rule(paired, policy) for rule in PAIRED_RULES]
        checks += [rule(paired, policy, planned) for rule in PAIRED_LABELLED_RULES]
    return Recommendation(action=action_of(checks), baseline_version=baseline_version,
                          canary_version=canary_version, checks=tuple(checks), evidence=status)
