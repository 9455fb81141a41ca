"""The rollout controller: `canaryTrafficPercent` through a plan (5 → 20 → 50 → 100), one analysis
per step, written once over an `InferenceServiceStore` (issue 10, DESIGN decision 13).

At each step below 100: `canary.set_canary_percent` (waits for the new generation), then windows
of evidence from an `EvidenceSource` until `fraud_canary.progressive.decide_step` moves on:
advance to the next step, promote (`canary.promote`, which moves MLflow's aliases), roll back
(`canary.rollback`) on a failed check, or hold for another window, up to `max_holds`, after which
the policy rolls back (it fails closed). Every window is recorded as a step record (percent,
window, evidence summary, decision, reasons), in the rollout's state (so `status` and `abort` work
from another process) and by each `StepRecorder` (JSON lines, Kubernetes Events, MLflow tags).

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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from fraud_canary.analysis import analyze
from fraud_canary.metrics import VersionMetrics
from fraud_canary.paired import PairedOutcomes
from fraud_canary.policy import OfflineMetrics
from fraud_canary.progressive import HOLD, PROMOTE, ROLLBACK, RolloutPolicy, StepDecision, decide_step

from fraud_control import canary
from fraud_control.store import InferenceServiceStore, RolloutError, RolloutRefused

log = logging.getLogger(__name__)

RUNNING, PROMOTED, ROLLED_BACK, ABORTED, FAILED = "running", "promoted", "rolled_back", "aborted", "failed"


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
    """Online metrics per version over one window, the paired (shadow-scored) decisions if any,
    and what the source was (e.g. "metrics http://…/metrics")."""

    online: Mapping[str, VersionMetrics]
    window: Window
    paired: PairedOutcomes | None = None
    source: str = ""

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
        return {"source": self.source, "versions": versions, "paired": paired}


class EvidenceSource(Protocol):
    """Where a step's evidence comes from: the transformer's counters (`rollout_evidence`), or a
    labelled replay (`fraud_rollout.rollout_replay`)."""

    def window(self, percent: int, stop: Callable[[], bool]) -> Evidence:
        """Evidence for the step at `percent`, once the window is full. A source that waits polls
        `stop()` and raises RolloutAborted when it returns True."""
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
    #: `analyze`'s detectable recall difference (None: the default policy's; "auto").
    detectable: float | str | None = None
    tracking_uri: str = ""
    timeout_s: float = canary.DEFAULT_TIMEOUT_S
    poll_s: float = canary.DEFAULT_POLL_S


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


def step_record(percent: int, holds: int, evidence: Evidence, analysis: Mapping[str, Any],
                decision: StepDecision) -> dict[str, Any]:
    return {"time": now_iso(), "percent": percent, "window": evidence.window.to_dict(),
            "evidence": evidence.summary(), "analysis_action": analysis["action"], "holds": holds,
            "decision": decision.action, "next_percent": decision.next_percent, "reasons": list(decision.reasons)}


class Controller:
    """One rollout: `run()` steps the plan; `state` is what `rollout status` shows."""

    def __init__(self, store: InferenceServiceStore, source: EvidenceSource, states: RolloutStateStore,
                 config: RolloutConfig, recorders: Sequence[StepRecorder] = (),
                 on_step: Callable[[Mapping[str, Any], Mapping[str, Any] | None], None] | None = None) -> None:
        self.store, self.source, self.states, self.config = store, source, states, config
        self.recorders, self.on_step = list(recorders), on_step
        self.state: dict[str, Any] = {
            "where": store.where, "plan": list(config.policy.plan), "max_holds": config.policy.max_holds,
            "baseline_version": config.baseline_version, "canary_version": config.canary_version,
            "status": RUNNING, "started": now_iso(), "heartbeat": now_iso(), "pid": os.getpid(),
            "host": socket.gethostname(), "percent": None, "holds": 0, "last_decision": None, "steps": [],
            "result": None}

    def begin(self) -> None:
        """Claim the InferenceService for this rollout: RolloutRunning if a controller runs already."""
        running = running_rollout(self.states)
        if running is not None:
            raise RolloutRunning(f"a {describe(running)} is already running; abort it with `fraud-rollout rollout "
                                 f"abort` or wait for it to finish")
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

    def _analyze(self, evidence: Evidence, percent: int) -> dict[str, Any]:
        c = self.config
        # `paired=` only with shadow pairs: analyze takes it from issue 10's paired analysis on
        paired: dict[str, Any] = {"paired": evidence.paired} if evidence.paired is not None else {}
        return analyze(evidence.online, c.offline, baseline_version=c.baseline_version,
                       canary_version=c.canary_version, canary_percent=percent, detectable=c.detectable, **paired)

    def run_step(self, percent: int) -> StepDecision:
        """Set the step's percent, then windows until the decision is not hold."""
        c = self.config
        self._check_abort()
        self._busy()
        moved = canary.set_canary_percent(self.store, percent, timeout_s=c.timeout_s, poll_s=c.poll_s)
        log.info("rollout %s: %s", self.store.where, moved.action)
        self.state.update(percent=percent, holds=0, busy_until=None)
        self._save()
        holds = 0
        while True:
            evidence = self.source.window(percent, self.stop_requested)
            self._check_abort()
            analysis = self._analyze(evidence, percent)
            decision = decide_step(analysis, percent=percent, policy=c.policy, holds=holds)
            log.info("rollout %s at %d %%: %s (%s)", self.store.where, percent, decision.action, decision.reasons[0])
            self._record(step_record(percent, holds, evidence, analysis, decision), analysis)
            if decision.action != HOLD:
                return decision
            holds += 1
            self.state["holds"] = holds

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
                decision = self.run_step(percent)
                self._busy()
                if decision.action == ROLLBACK:
                    outcome = canary.rollback(self.store, tracking_uri=c.tracking_uri, timeout_s=c.timeout_s,
                                              poll_s=c.poll_s)
                    return self._finish(ROLLED_BACK, outcome, decision.reasons[0])
                if decision.action == PROMOTE:
                    outcome = canary.promote(self.store, tracking_uri=c.tracking_uri, timeout_s=c.timeout_s,
                                             poll_s=c.poll_s)
                    return self._finish(PROMOTED, outcome, decision.reasons[0])
            raise AssertionError("decide_step promotes or rolls back at the plan's last step below 100")
        except RolloutAborted as aborted:
            request = self.states.abort_request()
            reason = f"abort requested: {request}" if request else str(aborted)
            self._busy()
            outcome = canary.rollback(self.store, tracking_uri=c.tracking_uri, timeout_s=c.timeout_s,
                                      poll_s=c.poll_s)
            step = {"time": now_iso(), "percent": self.state["percent"], "decision": "abort", "next_percent": 0,
                    "reasons": [reason], "window": None, "evidence": None, "holds": self.state["holds"],
                    "analysis_action": None}
            self._record(step)
            return self._finish(ABORTED, outcome, reason)
        except BaseException as error:  # a refusal, a timeout, unreachable metrics, Ctrl-C: say so, then raise
            self._finish(FAILED, None, f"{type(error).__name__}: {error}")
            raise
