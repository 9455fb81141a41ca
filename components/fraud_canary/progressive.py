"""The rollout's step policy: advance, hold, roll back or promote one step of a progressive canary.

DESIGN decision 13, two speeds of evidence. Labels arrive weeks late, so at an intermediate step
(the next step is below 100 %) the controller advances on the fast gate alone: health, traffic and
the label-free comparisons (flag rates, paired disagreement). Going to 100 % needs what `recommend`
needs to promote: the slow gate (labels, with power) or decisive paired evidence. A failure that
demands a rollback rolls back at any step. The policy fails closed: a step that cannot decide
within `max_holds` windows rolls back rather than leaving part of the traffic on an unjudged model.

`analysis` is the dict `fraud_canary.analysis.analyze` returns (or `Recommendation.to_dict()`): its
`action` and its `checks` (rule, status, on_failure, detail).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

StepAction = Literal["advance", "hold", "rollback", "promote"]
ADVANCE: Final = "advance"
HOLD: Final = "hold"
ROLLBACK: Final = "rollback"
PROMOTE: Final = "promote"

#: Label-free checks, known minutes into a step: they alone gate an intermediate step.
FAST_RULES: frozenset[str] = frozenset({
    "canary.error_rate", "baseline.error_rate", "canary.latency_p99", "baseline.latency_p99",
    "traffic.canary_share", "traffic.attribution",
    "canary.flag_rate_vs_offline", "baseline.flag_rate_vs_offline", "canary.flag_rate_vs_baseline",
    "paired.disagreement", "paired.flag_rate"})
#: Checks that need labels: they may be insufficient at an intermediate step, never at the last.
SLOW_RULES: frozenset[str] = frozenset({
    "canary.recall_vs_offline", "baseline.recall_vs_offline", "canary.precision_vs_offline",
    "baseline.precision_vs_offline", "evidence.sample_size", "canary.recall_vs_baseline",
    "canary.precision_vs_baseline", "paired.recall", "paired.false_alarms"})
#: Fast checks an analysis must contain before a step can advance (health and traffic); the
#: others appear only with the evidence they need (offline flag rates, shadow-scored pairs).
REQUIRED_FAST_RULES: frozenset[str] = frozenset({
    "canary.error_rate", "baseline.error_rate", "canary.latency_p99", "baseline.latency_p99",
    "traffic.canary_share", "traffic.attribution", "canary.flag_rate_vs_baseline"})


@dataclass(frozen=True)
class RolloutPolicy:
    """The steps of a progressive rollout and how long a step may stay undecided."""

    #: `canaryTrafficPercent` per step; the last is 100 (promoted).
    plan: tuple[int, ...] = (5, 20, 50, 100)
    #: Windows a step may hold (any hold: insufficient evidence or a failed hold-check) before the
    #: rollout rolls back; fails closed.
    max_holds: int = 3

    def __post_init__(self) -> None:
        plan = self.plan
        if not plan or not all(isinstance(p, int) and 0 < p <= 100 for p in plan):
            raise ValueError(f"plan must be whole percentages in (0, 100], got {plan}")
        if any(a >= b for a, b in zip(plan, plan[1:])) or plan[-1] != 100:
            raise ValueError(f"plan must increase strictly and end at 100, got {plan}")
        if not (isinstance(self.max_holds, int) and self.max_holds >= 0):
            raise ValueError(f"max_holds must be a whole number ≥ 0, got {self.max_holds}")

    def next_step(self, percent: int) -> int:
        """The step after `percent`, which must be a step of the plan below 100."""
        if percent not in self.plan[:-1]:
            raise ValueError(f"{percent} % is not a step of the plan below 100: {self.plan}")
        return self.plan[self.plan.index(percent) + 1]


@dataclass(frozen=True)
class StepDecision:
    """What to do with the step at `percent`. `next_percent` is the `canaryTrafficPercent` to set:
    the next step on advance or promote (100), 0 on rollback, None on hold (nothing to patch)."""

    action: StepAction
    percent: int
    next_percent: int | None
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "percent": self.percent, "next_percent": self.next_percent,
                "reasons": list(self.reasons)}


def _line(check: Mapping[str, Any]) -> str:
    failed = check["status"] == "fail"
    return (f"{str(check['status']).upper()} {check['rule']}: {check.get('detail', '')}"
            + (f" → {check['on_failure']}" if failed else ""))


def _is_fast(rule: str) -> bool:
    # A rule nobody classified counts as fast: it must pass before any step advances (fails closed).
    return rule in FAST_RULES or rule not in SLOW_RULES


def _blocking(checks: Sequence[Mapping[str, Any]], final: bool, analysis_action: str) -> list[str]:
    """Why the step cannot move on: failed checks; at an intermediate step the fast checks that did
    not pass and the required ones missing; before 100 % every check that did not pass."""
    failed = [_line(c) for c in checks if c["status"] == "fail"]
    if final:
        waiting = [_line(c) for c in checks if c["status"] == "insufficient"]
        if not failed and not waiting and analysis_action != PROMOTE:
            waiting = [f"the analysis says {analysis_action}, not promote"]
        return failed + waiting
    waiting = [_line(c) for c in checks if c["status"] == "insufficient" and _is_fast(c["rule"])]
    missing = sorted(REQUIRED_FAST_RULES - {c["rule"] for c in checks})
    return failed + waiting + [f"MISSING {rule}: the fast gate needs it" for rule in missing]


def decide_step(analysis: Mapping[str, Any], *, percent: int, policy: RolloutPolicy, holds: int) -> StepDecision:
    """Advance, hold, roll back or promote the step at `percent`, with every reason.

    Rollback when a check failed that demands it. Otherwise, at an intermediate step advance when
    there is no failed check and every fast check passed (slow checks may be insufficient); before
    the last step promote only when the analysis itself says promote. Hold otherwise, and roll back
    instead once the step has held `policy.max_holds` windows.

    Args:
        analysis: `fraud_canary.analysis.analyze` output for this step's window(s), computed with
            `canary_percent=percent`.
        percent: the step's `canaryTrafficPercent`, a step of `policy.plan` below 100.
        policy: the plan and the number of holds allowed per step.
        holds: windows this step has already held.
    """
    next_percent = policy.next_step(percent)
    if holds < 0:
        raise ValueError(f"holds must be ≥ 0, got {holds}")
    target = analysis.get("policy", {}).get("target_canary_percent")
    if target is not None and float(target) != percent:
        raise ValueError(f"the analysis was computed for a {target:g} % canary, the step is at {percent} %")
    checks: Sequence[Mapping[str, Any]] = analysis["checks"]
    rollbacks = [_line(c) for c in checks if c["status"] == "fail" and c["on_failure"] == ROLLBACK]
    if rollbacks or analysis["action"] == ROLLBACK:
        return StepDecision(ROLLBACK, percent, 0, tuple(rollbacks or ["the analysis says rollback"]))
    final = next_percent == 100
    blocking = _blocking(checks, final, str(analysis["action"]))
    if not blocking:
        if final:
            return StepDecision(PROMOTE, percent, next_percent, (
                f"every check passed at {percent} %: promote to 100 %",))
        slow = [_line(c) for c in checks if not _is_fast(c["rule"]) and c["status"] != "pass"]
        fast = sum(1 for c in checks if _is_fast(c["rule"]))
        return StepDecision(ADVANCE, percent, next_percent, (
            f"all {fast} fast checks passed at {percent} %: advance to {next_percent} %", *slow))
    if holds >= policy.max_holds:
        return StepDecision(ROLLBACK, percent, 0, (f"no decision after {holds + 1} windows at {percent} %",
                                                   *blocking))
    return StepDecision(HOLD, percent, None, (
        f"hold at {percent} % (hold {holds + 1} of {policy.max_holds} allowed)", *blocking))
