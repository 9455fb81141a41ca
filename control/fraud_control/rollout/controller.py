"""The rollout controller: `canaryTrafficPercent` through a plan (5 → 20 → 50 → 100), written once
over an `InferenceServiceStore` (issue 10, DESIGN decisions 13 and 18).

At each step below 100: `canary.set_canary_percent` (waits for the new generation), then windows
of evidence from an `EvidenceSource`, each one new (windows do not overlap), judged by
`fraud_canary.progressive.judge` with everything the rollout has seen (its `Ledger` of
anytime-valid tests): advance to the next step, promote (`canary.promote`, which moves MLflow's
aliases), roll back (`canary.rollback`) when a rollback test rejects, hold for another window, or
stop inconclusive after `max_holds` holds (the canary stays where it is; `fail_closed` rolls back
instead). A window whose evidence cannot be read is an error verdict: counted, retried after
`error_backoff_s`, and only `max_consecutive_errors` in a row roll back. Every look is recorded as
a step record (percent, window, evidence summary, verdict, reasons, e-values), in the rollout's
state (so `status` and `abort` work from another process) and by each `StepRecorder` (JSON lines,
Kubernetes Events, MLflow tags).

An abort asked for by another process (`RolloutStateStore.request_abort`) is noticed at the next
poll of the evidence wait and rolls the canary back.
"""
from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from fraud.schema import DataError
from fraud.score_profile import ScoreProfile
from fraud.waiting import poll
from fraud_canary.metrics import VersionMetrics
from fraud_canary.paired import PairedOutcomes
from fraud_canary.paired_scores import PairedScores
from fraud_canary.policy import OfflineMetrics
from fraud_canary.progressive import (
    ERROR,
    HOLD,
    INCONCLUSIVE,
    PROMOTE,
    ROLLBACK,
    Ledger,
    Look,
    Observation,
    RolloutPolicy,
    judge,
)
from fraud_canary.served import MaturedLabels

from fraud_control.canary import operations as canary
from fraud_control.inferenceservice.store import InferenceServiceStore, RolloutError, RolloutRefused

log = logging.getLogger(__name__)

RUNNING, PROMOTED, ROLLED_BACK, ABORTED, FAILED = "running", "promoted", "rolled_back", "aborted", "failed"
#: Stopped at a step without a decision: the canary stays at its percent for a person to decide.
PAUSED = "inconclusive"


class RolloutAborted(RolloutError):
    """Another process asked this rollout to stop (`rollout abort`); the canary is rolled back."""


class RolloutRunning(RolloutRefused):
    """A rollout controller already runs on this InferenceService."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Window:
    """What one window of evidence covered."""

    start: str
    end: str
    seconds: float
    requests: int

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "seconds": round(self.seconds, 3), "requests": self.requests}


@dataclass(frozen=True)
class Evidence:
    """Online metrics per version over one window (this window only: windows do not overlap, so
    each look adds new evidence to the rollout's ledger), the window's paired (shadow-scored)
    decisions if any, and what the source was (e.g. "metrics http://…/metrics")."""

    online: Mapping[str, VersionMetrics]
    window: Window
    paired: PairedOutcomes | None = None
    source: str = ""
    #: The window's shadow pairs by decisions and each version's score bucket (label-free paired CBPE).
    paired_scores: PairedScores | None = None
    #: Late labels matured since the previous look (`store_evidence.WithStoreLabels`).
    labels: MaturedLabels | None = None

    def summary(self) -> dict[str, Any]:
        """What a step record keeps: counts and p99 per version, the paired table's counts."""
        versions = {v: {"requests": m.requests, "errors": m.errors, "flagged": m.flagged,
                        "traffic_share": None if math.isnan(m.traffic_share) else round(m.traffic_share, 4),
                        "latency_p99_ms": None if math.isnan(m.latency_p99_ms) else round(m.latency_p99_ms, 3),
                        "frauds": m.confusion.frauds if m.confusion else None}
                    for v, m in self.online.items()}
        paired = None
        if self.paired is not None:
            d = self.paired.decisions
            paired = {"pairs": d.pairs, "canary_only_flagged": d.canary_only, "baseline_only_flagged": d.baseline_only}
        labels = None if self.labels is None else self.labels.summary()
        return {"source": self.source, "versions": versions, "paired": paired, "late_labels": labels}


class EvidenceSource(Protocol):
    """Where a step's evidence comes from: the transformer's counters (`evidence`), or a
    labelled replay (`fraud_ops.rollout_replay`)."""

    def window(self, percent: int, stop: Callable[[], bool]) -> Evidence:
        """The next window's evidence for the step at `percent`, once it is full; it starts where
        the previous window ended. A source that waits polls `stop()` and raises RolloutAborted
        when it returns True; DataError when the evidence cannot be read."""
        ...


class StepRecorder(Protocol):
    """Somewhere every step record goes (a JSON-lines log, Kubernetes Events, MLflow tags)."""

    def record(self, step: Mapping[str, Any]) -> None: ...


class RolloutStateStore(Protocol):
    """The rollout's state where another process can read it, and its abort request."""

    where: str

    def read(self) -> dict | None: ...

    def write(self, state: Mapping[str, Any]) -> None: ...

    def is_running(self, state: Mapping[str, Any]) -> bool:
        """Whether the controller that wrote `state` still runs (a live pid, a fresh heartbeat)."""
        ...

    def request_abort(self, reason: str) -> None: ...

    def abort_request(self) -> str:
        """'' unless an abort was asked for; else who asked and why."""
        ...

    def clear_abort(self) -> None: ...


@dataclass(frozen=True)
class RolloutConfig:
    """What the controller compares and how long it waits."""

    baseline_version: str
    canary_version: str
    offline: Mapping[str, OfflineMetrics]
    policy: RolloutPolicy = field(default_factory=RolloutPolicy)
    #: The recall margin (labelled recall non-inferior to the holdout's within it; rolled back
    #: below it). None or "auto": the policy's `detectable_recall_difference`.
    detectable: float | str | None = None
    tracking_uri: str = ""
    timeout_s: float = canary.DEFAULT_TIMEOUT_S
    poll_s: float = canary.DEFAULT_POLL_S
    #: Wait after an unreadable window before reading the next (a scrape gap, Prometheus restarting).
    error_backoff_s: float = 10.0
    #: Each version's offline score profile (calibration): label-free promotion needs both.
    profiles: Mapping[str, ScoreProfile] = field(default_factory=dict)

    def rollout_policy(self) -> RolloutPolicy:
        if isinstance(self.detectable, (int, float)):
            return replace(self.policy, canary=replace(self.policy.canary,
                                                       detectable_recall_difference=float(self.detectable)))
        return self.policy


def running_rollout(states: RolloutStateStore) -> dict | None:
    """The state of a controller still running here, or None."""
    state = states.read()
    if state is not None and state.get("status") == RUNNING and states.is_running(state):
        return state
    return None


def describe(state: Mapping[str, Any]) -> str:
    last = state.get("last_decision") or {}
    return (f"rollout of {state.get('canary_version')} on {state.get('where')} ({state.get('status')}, started "
            f"{state.get('started')} by pid {state.get('pid')} on {state.get('host')}): step {state.get('percent')} %, "
            f"{state.get('holds', 0)} holds, last decision {last.get('decision', '-')}")


def step_record(percent: int, holds: int, evidence: Evidence | None, look: Look | None, decision: str,
                next_percent: int | None, reasons: Sequence[str], covered: Window | None = None) -> dict[str, Any]:
    """One look as the logs, Events and `rollout status` show it. `window` is what the step has
    covered so far (its windows together); `evidence` is this window's."""
    tests = {rule: {"e_value": t.e_value, "threshold": t.threshold, "rejected": t.rejected, "looks": t.looks}
             for rule, t in look.ledger.tests.items()} if look is not None else None
    return {"time": now_iso(), "percent": percent, "window": covered.to_dict() if covered else None,
            "evidence": evidence.summary() if evidence else None, "holds": holds, "decision": decision,
            "next_percent": next_percent, "reasons": list(reasons), "tests": tests}


class Controller:
    """One rollout: `run()` steps the plan; `state` is what `rollout status` shows."""

    def __init__(self, store: InferenceServiceStore, source: EvidenceSource, states: RolloutStateStore,
                 config: RolloutConfig, recorders: Sequence[StepRecorder] = (),
                 on_step: Callable[[Mapping[str, Any], Mapping[str, Any] | None], None] | None = None,
                 preflight: Callable[[], None] | None = None) -> None:
        self.store, self.source, self.states, self.config = store, source, states, config
        self.preflight = preflight
        self.policy = config.rollout_policy()
        self.ledger = Ledger.start(self.policy)
        self.recorders, self.on_step = list(recorders), on_step
        self.state: dict[str, Any] = {
            "where": store.where, "plan": list(config.policy.plan), "max_holds": config.policy.max_holds,
            "policy": self.policy.to_dict(),
            "baseline_version": config.baseline_version, "canary_version": config.canary_version,
            "status": RUNNING, "started": now_iso(), "heartbeat": now_iso(), "pid": os.getpid(),
            "host": socket.gethostname(), "percent": None, "holds": 0, "last_decision": None, "steps": [],
            "result": None}

    def begin(self) -> None:
        """Claim the InferenceService for this rollout: RolloutRunning if a controller runs already;
        whatever `preflight` raises if the live source does not answer."""
        running = running_rollout(self.states)
        if running is not None:
            raise RolloutRunning(f"a {describe(running)} is already running; abort it with `fraud-rollout rollout "
                                 f"abort` or wait for it to finish")
        if self.preflight is not None:  # the live source answers: else refused before anything is claimed or patched
            self.preflight()
        self.states.clear_abort()
        self._save()

    def _save(self) -> None:
        self.state["heartbeat"] = now_iso()
        self.states.write(self.state)

    def stop_requested(self) -> bool:
        """Polled by the evidence wait: renews the heartbeat, says whether an abort was asked for."""
        self._save()
        return bool(self.states.abort_request())

    def _check_abort(self) -> None:
        request = self.states.abort_request()
        if request:
            raise RolloutAborted(f"abort requested: {request}")

    def _record(self, step: dict[str, Any], analysis: Mapping[str, Any] | None = None) -> None:
        self.state["steps"].append(step)
        self.state["last_decision"] = {k: step[k] for k in ("percent", "decision", "next_percent", "reasons")}
        self._save()
        for recorder in self.recorders:
            recorder.record(step)
        if self.on_step is not None:
            self.on_step(step, analysis)

    def _busy(self) -> None:
        """Before a wait for Ready (which does not poll the state): the heartbeat holds until its deadline."""
        self.state["busy_until"] = datetime.fromtimestamp(time.time() + self.config.timeout_s, UTC).isoformat()
        self._save()

    def _look(self, percent: int, holds: int, errors: int) -> tuple[str, Look | None, Evidence | None, list[str]]:
        """One window: its verdict, the look (None on an error) and the evidence. An unreadable
        window is an error verdict; the ledger is untouched by it."""
        c = self.config
        try:
            evidence = self.source.window(percent, self.stop_requested)
        except DataError as error:
            return ERROR, None, None, [f"evidence unreadable ({errors + 1} of {self.policy.max_consecutive_errors} in a "
                                       f"row allowed): {error}"]
        self._check_abort()
        observation = Observation(evidence.online, c.baseline_version, c.canary_version, c.offline, evidence.paired,
                                  evidence.paired_scores, c.profiles, evidence.labels)
        look = judge(self.ledger, observation, percent=percent, policy=self.policy, holds=holds)
        self.ledger = look.ledger
        return look.action, look, evidence, list(look.reasons)

    def run_step(self, percent: int) -> tuple[str, list[str]]:
        """Set the step's percent, then windows until the verdict is not hold (or error)."""
        c = self.config
        self._check_abort()
        self._busy()
        moved = canary.set_canary_percent(self.store, percent, timeout_s=c.timeout_s, poll_s=c.poll_s)
        log.info("rollout %s: %s", self.store.where, moved.action)
        self.state.update(percent=percent, holds=0, busy_until=None)
        self._save()
        holds = errors = 0
        covered: Window | None = None
        while True:
            action, look, evidence, reasons = self._look(percent, holds, errors)
            if evidence is not None:
                covered = evidence.window if covered is None else Window(
                    covered.start, evidence.window.end, covered.seconds + evidence.window.seconds,
                    covered.requests + evidence.window.requests)
            next_percent = look.next_percent if look is not None else None
            errors = errors + 1 if action == ERROR else 0
            if errors >= self.policy.max_consecutive_errors:
                action, next_percent = ROLLBACK, 0
                reasons = [f"evidence unreadable {errors} windows in a row: stop and roll back", *reasons]
            log.info("rollout %s at %d %%: %s (%s)", self.store.where, percent, action, reasons[0])
            self._record(step_record(percent, holds, evidence, look, action, next_percent, reasons, covered),
                         look.to_dict() if look is not None else None)
            if action == ERROR and errors < self.policy.max_consecutive_errors:
                self._pause(c.error_backoff_s)
                continue
            if action != HOLD:
                return action, reasons
            holds += 1
            self.state["holds"] = holds

    def _pause(self, seconds: float) -> None:
        """Wait before reading the evidence again, noticing an abort request."""
        def aborted() -> None:
            if self.stop_requested():
                raise RolloutAborted("abort requested while waiting for readable evidence")

        poll(lambda: None, timeout_s=seconds, poll_s=self.config.poll_s, give_up=aborted)

    def _finish(self, status: str, outcome: canary.Rollout | None, note: str = "") -> dict[str, Any]:
        result: dict[str, Any] = {"status": status, "note": note}
        if outcome is not None:
            result.update(action=outcome.action, registry=outcome.registry, traffic=outcome.status)
        self.state.update(status=status, result=result, finished=now_iso())
        self._save()
        return self.state

    def run(self) -> dict[str, Any]:
        """The whole rollout; returns the final state (`steps[]` is the report's `rollout.steps`).
        Anything raised (RolloutError from a canary operation, DataError from the evidence) ends it
        with status failed, the canary left where it was, and is raised again."""
        c = self.config
        self.begin()
        try:
            for percent in c.policy.plan[:-1]:
                action, reasons = self.run_step(percent)
                if action == INCONCLUSIVE:
                    return self._finish(PAUSED, None, reasons[0])
                self._busy()
                if action == ROLLBACK:
                    outcome = canary.rollback(self.store, tracking_uri=c.tracking_uri, timeout_s=c.timeout_s,
                                              poll_s=c.poll_s)
                    return self._finish(ROLLED_BACK, outcome, reasons[0])
                if action == PROMOTE:
                    outcome = canary.promote(self.store, tracking_uri=c.tracking_uri, timeout_s=c.timeout_s,
                                             poll_s=c.poll_s)
                    return self._finish(PROMOTED, outcome, reasons[0])
            raise AssertionError("judge promotes, rolls back or stops inconclusive at the plan's last step below 100")
        except RolloutAborted as aborted:
            request = self.states.abort_request()
            reason = f"abort requested: {request}" if request else str(aborted)
            self._busy()
            outcome = canary.rollback(self.store, tracking_uri=c.tracking_uri, timeout_s=c.timeout_s,
                                      poll_s=c.poll_s)
            self._record(step_record(self.state["percent"], self.state["holds"], None, None, "abort", 0, [reason]))
            return self._finish(ABORTED, outcome, reason)
        except BaseException as error:  # a refusal, a timeout, unreachable metrics, Ctrl-C: say so, then raise
            self._finish(FAILED, None, f"{type(error).__name__}: {error}")
            raise
