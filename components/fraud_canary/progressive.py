"""The rollout's decision at every look: advance, promote, hold, roll back, or stop inconclusive.

DESIGN decision 18. The rollout looks at the canary once per window, through every step and hold,
and the evidence of each window adds to the rollout's `Ledger`:

- **Rollback** only through the anytime-valid tests of `ROLLBACK_RULES` (`fraud_canary.sequential`
  e-processes), the policy's α split evenly among them (Bonferroni over the family): a canary that
  meets every null (as good as the baseline and its own holdout) is rolled back with probability at
  most `RolloutPolicy.alpha` over the *whole* rollout, however many windows and holds it takes.
- **Hold** on point checks that say the evidence is not fit to judge yet (the split off target,
  answers nobody can attribute, the baseline unhealthy, either version above the latency
  objective, too few canary requests). A hold never rolls back.
- **Advance** an intermediate step when nothing rejected and no hold check failed (the fast gate:
  no labels needed).
- **Promote** from the last step below 100 only with promotion evidence (`promotion_evidence`): the
  paired recall test found the canary better, or its labelled recall is non-inferior to its
  holdout recall (a confidence sequence's lower end within the margin), or, without labels, the
  paired CBPE of the recall difference on every shadow pair of the rollout is non-inferior within
  the margin, each version's calibration judging the rows it alone flags
  (`fraud_canary.paired_scores.own_flags_difference`; its lower bound at 1 − α / the last step's
  looks, Bonferroni over the looks); and the canary's error rate is shown to be under the objective.
- **Inconclusive** when a step has held `max_holds` windows, or the last step lacks promotion
  evidence: the rollout pauses at the current percent and says what is missing; it rolls back
  only if the policy asks to fail closed.
- **Error** (unreadable evidence) is the controller's: it is counted, never a statistical verdict.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

from fraud.score_profile import ScoreProfile

from fraud_canary.counts import finite, ratio
from fraud_canary.metrics import UNATTRIBUTED, VersionMetrics
from fraud_canary.paired import PairedOutcomes
from fraud_canary.paired_scores import PairedScores, own_flags_difference
from fraud_canary.policy import CanaryPolicy, OfflineMetrics
from fraud_canary.sequential import (
    ABOVE,
    BELOW,
    EProcess,
    Side,
    bernoulli_log_lr,
    lower_bound,
    rate_ratio_log_lr,
    upper_bound,
)
from fraud_canary.served import MaturedLabels

StepAction = Literal["advance", "hold", "rollback", "promote", "inconclusive", "error"]
ADVANCE: Final = "advance"
HOLD: Final = "hold"
ROLLBACK: Final = "rollback"
PROMOTE: Final = "promote"
INCONCLUSIVE: Final = "inconclusive"
ERROR: Final = "error"
VERDICTS: tuple[str, ...] = (ADVANCE, PROMOTE, HOLD, ROLLBACK, INCONCLUSIVE, ERROR)

#: The checks that can roll back, each an e-process at alpha / len(ROLLBACK_RULES). The family is
#: fixed before the rollout starts (a check without its evidence, e.g. labels, keeps its share).
ROLLBACK_RULES: tuple[str, ...] = (
    "canary.error_rate",  # above the error-rate objective
    "canary.latency_vs_baseline",  # more requests above the baseline's p99 than the allowed ratio
    "canary.flag_rate_high",  # flags more than max_flag_rate_ratio × the holdout's ratio
    "canary.flag_rate_low",  # flags less than the holdout's ratio / max_flag_rate_ratio
    "paired.disagreement",  # decides differently from the baseline on more paired rows than allowed
    "paired.recall",  # McNemar: on paired frauds, caught only by the baseline more often than only by the canary
    "canary.recall_vs_offline",  # labelled recall below the holdout's by more than the margin
)
#: Baseline answers needed before its p99 bound is trusted as the latency test's threshold.
MIN_LATENCY_ROWS = 200


@dataclass(frozen=True)
class RolloutPolicy:
    """The steps of a progressive rollout, its error budget, and what to do when evidence is thin."""

    #: `canaryTrafficPercent` per step; the last is 100 (promoted).
    plan: tuple[int, ...] = (5, 20, 50, 100)
    #: Windows a step may hold before the rollout stops inconclusive.
    max_holds: int = 3
    #: The whole rollout's false-rollback probability for a canary that meets every null.
    alpha: float = 0.05
    #: Roll back instead of pausing when a step stays inconclusive.
    fail_closed: bool = False
    #: Unreadable windows in a row (Prometheus down, a scrape gap) before the rollout stops.
    max_consecutive_errors: int = 4
    #: A canary's slow-request rate (above the baseline's p99) may be this many times the baseline's.
    max_latency_tail_ratio: float = 2.0
    #: Thresholds shared with the one-shot analysis (error objective, tolerances, the recall margin
    #: `detectable_recall_difference`); its `target_canary_percent` is set per step.
    canary: CanaryPolicy = field(default_factory=CanaryPolicy)

    def __post_init__(self) -> None:
        plan = self.plan
        if not plan or not all(isinstance(p, int) and 0 < p <= 100 for p in plan):
            raise ValueError(f"plan must be whole percentages in (0, 100], got {plan}")
        if any(a >= b for a, b in zip(plan, plan[1:])) or plan[-1] != 100:
            raise ValueError(f"plan must increase strictly and end at 100, got {plan}")
        if not (isinstance(self.max_holds, int) and self.max_holds >= 0):
            raise ValueError(f"max_holds must be a whole number ≥ 0, got {self.max_holds}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if not (isinstance(self.max_consecutive_errors, int) and self.max_consecutive_errors >= 1):
            raise ValueError(f"max_consecutive_errors must be a whole number ≥ 1, got {self.max_consecutive_errors}")
        if not self.max_latency_tail_ratio >= 1:
            raise ValueError(f"max_latency_tail_ratio must be ≥ 1, got {self.max_latency_tail_ratio}")

    @property
    def check_alpha(self) -> float:
        """Each rollback check's share of alpha."""
        return self.alpha / len(ROLLBACK_RULES)

    def next_step(self, percent: int) -> int:
        """The step after `percent`, which must be a step of the plan below 100."""
        if percent not in self.plan[:-1]:
            raise ValueError(f"{percent} % is not a step of the plan below 100: {self.plan}")
        return self.plan[self.plan.index(percent) + 1]

    def to_dict(self) -> dict[str, Any]:
        return {"plan": list(self.plan), "max_holds": self.max_holds, "alpha": self.alpha,
                "fail_closed": self.fail_closed, "max_consecutive_errors": self.max_consecutive_errors,
                "check_alpha": self.check_alpha, "rollback_rules": list(ROLLBACK_RULES)}


@dataclass(frozen=True)
class Ledger:
    """Everything the rollout has seen so far: one e-process per check, running totals, and the
    baseline's latency histogram from earlier windows (the latency test's threshold must be fixed
    before the window it judges)."""

    tests: Mapping[str, EProcess]
    #: The baseline's answered rows at or under each latency bound (ms), over earlier windows.
    baseline_latency: tuple[tuple[float, int], ...] = ()
    baseline_answered: int = 0
    canary_requests: int = 0
    canary_errors: int = 0
    canary_tp: int = 0
    canary_frauds: int = 0
    pairs: int = 0
    looks: int = 0
    #: Every shadow pair of the rollout by decision cell and score bucket (label-free paired CBPE).
    paired_scores: PairedScores | None = None

    @classmethod
    def start(cls, policy: RolloutPolicy) -> Ledger:
        alpha = policy.check_alpha
        sides = {"canary.error_rate": ABOVE, "canary.latency_vs_baseline": ABOVE, "canary.flag_rate_high": ABOVE,
                 "canary.flag_rate_low": BELOW, "paired.disagreement": ABOVE, "paired.recall": BELOW,
                 "canary.recall_vs_offline": BELOW}
        tests = {rule: EProcess(rule, alpha, sides[rule], math.nan) for rule in ROLLBACK_RULES}  # type: ignore[arg-type]
        tests["paired.recall_better"] = EProcess("paired.recall_better", policy.alpha, ABOVE, 0.5)
        return cls(tests)

    def to_dict(self) -> dict[str, Any]:
        return {"looks": self.looks, "canary_requests": self.canary_requests, "canary_errors": self.canary_errors,
                "canary_frauds": self.canary_frauds, "canary_tp": self.canary_tp, "pairs": self.pairs,
                "tests": {rule: t.to_dict() for rule, t in self.tests.items()}}


@dataclass(frozen=True)
class Observation:
    """One window of evidence: per-version metrics of this window only, its paired rows, and the holdout."""

    online: Mapping[str, VersionMetrics]
    baseline_version: str
    canary_version: str
    offline: Mapping[str, OfflineMetrics] = field(default_factory=dict)
    paired: PairedOutcomes | None = None
    paired_scores: PairedScores | None = None
    #: Each version's offline score profile (its calibration), for label-free paired CBPE.
    profiles: Mapping[str, ScoreProfile] = field(default_factory=dict)
    #: Late labels matured since the previous look (the prediction store's), beside this window's.
    labels: MaturedLabels | None = None

    @property
    def baseline(self) -> VersionMetrics:
        return self.online.get(self.baseline_version, VersionMetrics.empty(self.baseline_version))

    @property
    def canary(self) -> VersionMetrics:
        return self.online.get(self.canary_version, VersionMetrics.empty(self.canary_version))

    @property
    def unattributed(self) -> VersionMetrics:
        return self.online.get(UNATTRIBUTED, VersionMetrics.empty(UNATTRIBUTED))


@dataclass(frozen=True)
class Look:
    """The verdict of one look, every reason, and the ledger after it."""

    action: StepAction
    percent: int
    next_percent: int | None
    reasons: tuple[str, ...]
    ledger: Ledger
    checks: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "percent": self.percent, "next_percent": self.next_percent,
                "reasons": list(self.reasons), "checks": list(self.checks), "ledger": self.ledger.to_dict()}


def _exceeding(metrics: VersionMetrics, bound: float) -> int:
    """Answered rows slower than `bound` (ms), from the cumulative histogram."""
    at_or_under = dict(metrics.latency_histogram or ())
    return max(0, metrics.answered - at_or_under.get(bound, 0))


def _tail_bound(histogram: tuple[tuple[float, int], ...], answered: int) -> float | None:
    """The smallest latency bound with at least 99 % of the baseline's answers at or under it."""
    if answered < MIN_LATENCY_ROWS:
        return None
    for bound, count in sorted(histogram):
        if count >= 0.99 * answered and math.isfinite(bound):
            return bound
    return None


def _add_histogram(total: tuple[tuple[float, int], ...], more: tuple[tuple[float, int], ...] | None
                   ) -> tuple[tuple[float, int], ...]:
    merged = dict(total)
    for bound, count in more or ():
        merged[bound] = merged.get(bound, 0) + count
    return tuple(sorted(merged.items()))


def _offline_flag_ratio(o: Observation) -> float:
    base = o.offline.get(o.baseline_version)
    cand = o.offline.get(o.canary_version)
    if base is None or cand is None or not (finite(base.flag_rate) and finite(cand.flag_rate)) or base.flag_rate <= 0 \
            or cand.flag_rate <= 0:
        return 1.0
    return cand.flag_rate / base.flag_rate


def update(ledger: Ledger, o: Observation, policy: RolloutPolicy) -> Ledger:
    """The ledger after one window: every e-process updated with this window's counts."""
    t, cp = dict(ledger.tests), policy.canary
    canary, baseline, unknown = o.canary, o.baseline, o.unattributed
    errors, requests = canary.errors, canary.requests
    if cp.unattributed_errors_against_canary:
        errors, requests = errors + unknown.errors, requests + unknown.errors

    def add(rule: str, null: float, log_lr) -> None:
        t[rule] = replace(t[rule].add(log_lr), null=null)

    add("canary.error_rate", cp.max_error_rate, bernoulli_log_lr(errors, requests, cp.max_error_rate, ABOVE))
    bound = _tail_bound(ledger.baseline_latency, ledger.baseline_answered)
    if bound is not None and canary.latency_histogram and baseline.latency_histogram:
        add("canary.latency_vs_baseline", policy.max_latency_tail_ratio, rate_ratio_log_lr(
            _exceeding(canary, bound), canary.answered, _exceeding(baseline, bound), baseline.answered,
            policy.max_latency_tail_ratio, ABOVE))
    flag_ratio = _offline_flag_ratio(o)
    sides: tuple[tuple[str, float, Side], ...] = (
        ("canary.flag_rate_high", flag_ratio * cp.max_flag_rate_ratio, ABOVE),
        ("canary.flag_rate_low", flag_ratio / cp.max_flag_rate_ratio, BELOW))
    for rule, theta0, side in sides:
        add(rule, theta0, rate_ratio_log_lr(canary.flagged, canary.answered, baseline.flagged, baseline.answered,
                                            theta0, side))
    late = o.labels
    confusions = [c for c in (canary.confusion, late.canary if late and late.canary.labelled else None) if c is not None]
    tp, frauds = sum(c.tp for c in confusions), sum(c.frauds for c in confusions)
    if confusions:
        offline = o.offline.get(o.canary_version)
        floor = (offline.recall - cp.detectable_recall_difference) if offline is not None else math.nan
        if finite(floor) and 0 < floor < 1:
            add("canary.recall_vs_offline", floor, bernoulli_log_lr(tp, frauds, floor, BELOW))
    pairs = 0
    if o.paired is not None:
        d = o.paired.decisions
        pairs = d.pairs
        add("paired.disagreement", cp.max_paired_disagreement,
            bernoulli_log_lr(d.discordant, d.pairs, cp.max_paired_disagreement, ABOVE))
    paired_frauds = [f for f in (o.paired.frauds if o.paired else None, late.frauds if late and late.frauds.pairs else None)
                     if f is not None]
    if paired_frauds:
        caught_alone, discordant = sum(f.canary_only for f in paired_frauds), sum(f.discordant for f in paired_frauds)
        add("paired.recall", 0.5, bernoulli_log_lr(caught_alone, discordant, 0.5, BELOW))
        add("paired.recall_better", 0.5, bernoulli_log_lr(caught_alone, discordant, 0.5, ABOVE))
    scores = ledger.paired_scores
    if o.paired_scores is not None:
        scores = o.paired_scores if scores is None else scores + o.paired_scores
    return Ledger(t, _add_histogram(ledger.baseline_latency, baseline.latency_histogram),
                  ledger.baseline_answered + (baseline.answered if baseline.latency_histogram else 0),
                  ledger.canary_requests + requests,
                  ledger.canary_errors + errors, ledger.canary_tp + tp, ledger.canary_frauds + frauds,
                  ledger.pairs + pairs, ledger.looks + 1, scores)


def _fmt(x: float) -> str:
    return f"{x:.4g}" if finite(x) else "n/a"


def hold_checks(o: Observation, percent: int, policy: RolloutPolicy) -> list[dict[str, Any]]:
    """Point checks of this window that hold (never roll back): is the evidence fit to judge?"""
    cp = policy.canary
    canary, baseline = o.canary, o.baseline
    total = canary.requests + baseline.requests
    share = 100 * ratio(canary.requests, total)
    others = {v: m.requests for v, m in o.online.items() if v not in (o.baseline_version, o.canary_version, UNATTRIBUTED)}
    limit = cp.max_p99_latency_ms
    checks = [
        ("traffic.canary_requests", canary.requests > 0, f"{canary.requests} canary requests in the window"),
        ("traffic.canary_share", finite(share) and abs(share - percent) <= cp.canary_percent_tolerance,
         f"canary share {_fmt(share)} %, target {percent} ± {cp.canary_percent_tolerance} %"),
        ("traffic.attribution", o.unattributed.answered == 0 and not any(others.values()),
         f"{o.unattributed.answered} answered rows without model_version; rows of other versions: {others or 'none'}"),
        ("baseline.error_rate", not baseline.requests or baseline.error_rate <= cp.max_error_rate,
         f"baseline error rate {_fmt(baseline.error_rate)} of {baseline.requests} requests, objective ≤ "
         f"{cp.max_error_rate}"),
        ("baseline.latency_p99", not finite(baseline.latency_p99_ms) or baseline.latency_p99_ms <= limit,
         f"baseline p99 {_fmt(baseline.latency_p99_ms)} ms, objective ≤ {limit} ms"),
        ("canary.latency_p99", not finite(canary.latency_p99_ms) or canary.latency_p99_ms <= limit,
         f"canary p99 {_fmt(canary.latency_p99_ms)} ms, objective ≤ {limit} ms"),
    ]
    return [{"rule": rule, "status": "pass" if ok else "fail", "on_failure": HOLD, "detail": detail}
            for rule, ok, detail in checks]


def _test_line(t: EProcess) -> str:
    return f"{t.rule}: e-value {_fmt(t.e_value)} (threshold {_fmt(t.threshold)}, null {_fmt(t.null)}, {t.looks} looks)"


def label_free_evidence(ledger: Ledger, o: Observation, policy: RolloutPolicy) -> tuple[bool, str]:
    """Paired CBPE of the recall difference, each version's calibration judging the rows it alone
    flags (`own_flags_difference`): non-inferior within the margin, and the line that says so (or
    what is missing)."""
    margin = policy.canary.detectable_recall_difference
    scores = ledger.paired_scores
    missing = [v for v in (o.baseline_version, o.canary_version) if v not in o.profiles]
    if scores is None or scores.pairs == 0:
        return False, "WAIT paired.recall_estimate: no shadow pairs with scores yet"
    if missing:
        return False, f"WAIT paired.recall_estimate: no score profile (calibration) for {', '.join(missing)}"
    level = label_free_level(policy)
    e = own_flags_difference(scores, o.profiles, level=level)
    ok = e.lower >= -margin
    return ok, (f"{'PASS' if ok else 'WAIT'} paired.recall_estimate: recall {o.canary_version} − {o.baseline_version} "
                f"on {scores.pairs} shadow pairs, no labels, each version's calibration on the rows it alone flags: "
                f"{_fmt(e.estimate)} (≥ {_fmt(e.lower)} at {level:.4g}); non-inferior needs ≥ −{margin}")


def label_free_level(policy: RolloutPolicy) -> float:
    """The label-free bound's one-sided level: α over every look the last step may take (Bonferroni)."""
    return 1 - policy.alpha / (policy.max_holds + 1)


def promotion_evidence(ledger: Ledger, o: Observation, policy: RolloutPolicy) -> tuple[bool, list[str]]:
    """Whether the rollout has what promotion needs, and what it has or lacks, in words."""
    cp = policy.canary
    health = upper_bound(ledger.canary_errors, ledger.canary_requests, policy.alpha)
    healthy = health <= cp.max_error_rate
    lines = [f"{'PASS' if healthy else 'WAIT'} canary.error_rate_bound: error rate ≤ {_fmt(health)} "
             f"({ledger.canary_errors}/{ledger.canary_requests}, {1 - policy.alpha:.0%} confidence sequence), "
             f"objective ≤ {cp.max_error_rate}"]
    better = ledger.tests["paired.recall_better"]
    offline = o.offline.get(o.canary_version)
    floor = (offline.recall - cp.detectable_recall_difference) if offline is not None else math.nan
    recall_low = lower_bound(ledger.canary_tp, ledger.canary_frauds, policy.alpha)
    non_inferior = ledger.canary_frauds > 0 and finite(floor) and recall_low >= floor
    if better.rejected:
        lines.append(f"PASS paired.recall_better: the canary catches more of the paired frauds; {_test_line(better)}")
    elif non_inferior:
        lines.append(f"PASS canary.recall_non_inferior: recall ≥ {_fmt(recall_low)} ({ledger.canary_tp}/"
                     f"{ledger.canary_frauds} frauds), holdout {_fmt(offline.recall if offline else math.nan)} − margin "
                     f"{cp.detectable_recall_difference}")
    else:
        label_free, line = label_free_evidence(ledger, o, policy)
        if label_free:
            lines.append(line)
            return healthy, lines
        if ledger.canary_frauds == 0 and better.looks == 0:
            lines.append("WAIT labels: no labelled frauds yet; promotion needs the paired recall test or labelled "
                         "recall (waiting for labels)")
        else:
            lines.append(f"WAIT labels: {_test_line(better)}; labelled recall ≥ {_fmt(recall_low)} of "
                         f"{ledger.canary_frauds} frauds, needs ≥ {_fmt(floor)} (waiting for more labelled frauds)")
        lines.append(line)
    return healthy and (better.rejected or non_inferior), lines


def judge(ledger: Ledger, o: Observation, *, percent: int, policy: RolloutPolicy, holds: int) -> Look:
    """Update the ledger with one window and decide the step at `percent` (a step of the plan below 100)."""
    next_percent = policy.next_step(percent)
    if holds < 0:
        raise ValueError(f"holds must be ≥ 0, got {holds}")
    after = update(ledger, o, policy)
    rejected = [after.tests[r] for r in ROLLBACK_RULES if after.tests[r].rejected]
    if rejected:
        return Look(ROLLBACK, percent, 0, tuple(f"FAIL {_test_line(t)} → rollback" for t in rejected), after)
    checks = hold_checks(o, percent, policy)
    failed = [f"FAIL {c['rule']}: {c['detail']} → hold" for c in checks if c["status"] == "fail"]
    final = next_percent == 100
    ready, evidence = promotion_evidence(after, o, policy) if final else (True, [])
    if not failed and ready:
        if final:
            return Look(PROMOTE, percent, 100, (f"promote to 100 % from {percent} %", *evidence), after, tuple(checks))
        return Look(ADVANCE, percent, next_percent, (
            f"no rollback test rejected and every hold check passed at {percent} %: advance to {next_percent} %",),
            after, tuple(checks))
    waiting = failed + [line for line in evidence if line.startswith("WAIT")]
    if holds >= policy.max_holds:
        if policy.fail_closed:
            return Look(ROLLBACK, percent, 0, (f"no decision after {holds + 1} windows at {percent} % and the policy "
                                               "fails closed", *waiting), after, tuple(checks))
        return Look(INCONCLUSIVE, percent, None, (f"inconclusive after {holds + 1} windows at {percent} %: paused "
                                                  "here, waiting for a person", *waiting), after, tuple(checks))
    return Look(HOLD, percent, None, (f"hold at {percent} % (hold {holds + 1} of {policy.max_holds} allowed)",
                                      *waiting), after, tuple(checks))
