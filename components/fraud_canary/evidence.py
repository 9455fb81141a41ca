"""How much labelled evidence the recall comparison needs, and how much there is.

At a 0.17 % fraud rate and a 20 % canary, detecting a recall drop of 0.10 with 80 % power takes
≈ 500,000–700,000 requests: "no significant difference" means nothing before that.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from fraud_canary.proportions import two_proportion_sample_size


@dataclass(frozen=True)
class EvidencePlan:
    """How much online evidence the recall comparison needs (see `plan_recall_evidence`)."""

    baseline_recall: float
    candidate_recall: float  # the alternative the test must detect
    alpha: float
    power: float
    canary_share: float
    fraud_rate: float
    candidate_frauds_needed: int
    baseline_frauds_needed: int
    requests_needed: int | None  # None while the fraud rate is unknown (no fraud seen yet)


def plan_recall_evidence(
    baseline_recall: float, detectable_difference: float, *, fraud_rate: float, canary_share: float,
    alpha: float = 0.05, power: float = 0.8,
) -> EvidencePlan:
    """Frauds each version must see, and requests in total, to detect a recall drop of
    `detectable_difference` (absolute) from `baseline_recall` with the given power.

    The canary sees `canary_share` of requests and a fraction `fraud_rate` of those are frauds, so
    it meets `candidate_frauds_needed` after that many / (fraud_rate · canary_share) requests (the
    baseline, with ratio (1 − share)/share, needs the same number). If a drop is impossible
    (baseline_recall − difference < 0) the plan targets an increase of the same size instead.
    """
    if not (0 < canary_share < 1):
        raise ValueError(f"canary_share {canary_share} must be in (0, 1)")
    if not (math.isfinite(detectable_difference) and 0 < detectable_difference < 1):
        raise ValueError(f"detectable_difference {detectable_difference} must be in (0, 1)")
    candidate_recall = baseline_recall - detectable_difference
    if candidate_recall < 0:
        candidate_recall = baseline_recall + detectable_difference
    ratio = (1 - canary_share) / canary_share
    n_candidate, n_baseline = two_proportion_sample_size(baseline_recall, candidate_recall,
                                                         alpha=alpha, power=power, ratio=ratio)
    requests = None
    if math.isfinite(fraud_rate) and 0 < fraud_rate <= 1:
        requests = max(math.ceil(n_candidate / (fraud_rate * canary_share)),
                       math.ceil(n_baseline / (fraud_rate * (1 - canary_share))))
    return EvidencePlan(baseline_recall=baseline_recall, candidate_recall=candidate_recall, alpha=alpha,
                        power=power, canary_share=canary_share, fraud_rate=fraud_rate,
                        candidate_frauds_needed=n_candidate, baseline_frauds_needed=n_baseline,
                        requests_needed=requests)


@dataclass(frozen=True)
class EvidenceStatus:
    plan: EvidencePlan
    candidate_frauds: int
    baseline_frauds: int
    requests: int

    @property
    def sufficient(self) -> bool:
        return (self.candidate_frauds >= self.plan.candidate_frauds_needed
                and self.baseline_frauds >= self.plan.baseline_frauds_needed)

    @property
    def requests_remaining(self) -> int | None:
        """Estimated further requests until both versions have seen enough frauds (0 when
        sufficient; None while the fraud rate is unknown)."""
        if self.sufficient:
            return 0
        p = self.plan
        if p.requests_needed is None:
            return None
        short_c = max(0, p.candidate_frauds_needed - self.candidate_frauds)
        short_b = max(0, p.baseline_frauds_needed - self.baseline_frauds)
        return max(math.ceil(short_c / (p.fraud_rate * p.canary_share)),
                   math.ceil(short_b / (p.fraud_rate * (1 - p.canary_share))))

    @property
    def message(self) -> str:
        p = self.plan
        if self.sufficient:
            return (f"sufficient evidence: canary saw {self.candidate_frauds} frauds (≥ {p.candidate_frauds_needed}), "
                    f"baseline {self.baseline_frauds} (≥ {p.baseline_frauds_needed})")
        remaining = ("unknown (no fraud seen yet)" if self.requests_remaining is None
                     else f"≈ {self.requests_remaining:,}")
        return (f"insufficient evidence: canary saw {self.candidate_frauds}/{p.candidate_frauds_needed} frauds, "
                f"baseline {self.baseline_frauds}/{p.baseline_frauds_needed}; requests still needed {remaining}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sufficient": self.sufficient, "requests_remaining": self.requests_remaining,
                "message": self.message}


def evidence_status(plan: EvidencePlan, *, candidate_frauds: int, baseline_frauds: int, requests: int) -> EvidenceStatus:
    """Compare the frauds each version has seen so far with `plan`."""
    return EvidenceStatus(plan=plan, candidate_frauds=int(candidate_frauds), baseline_frauds=int(baseline_frauds),
                          requests=int(requests))
