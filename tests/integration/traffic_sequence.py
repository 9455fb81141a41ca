"""One rollout sequence, run on any InferenceService store: first deploy, a 20 % canary, a canary
that never gets ready, a new canary, promote, rollback after promote, another canary. Each step
records the traffic and rolled-out fields `canary status` shows; KServe's real controller's record
is the golden one (tests/golden/traffic-sequence.json), and the local runtime must match it."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from fraud_control.canary import operations as canary
from fraud_control.inferenceservice.isvc import IsvcSpec
from fraud_control.inferenceservice.store import InferenceServiceStore, RolloutTimeout
from fraud_control.inferenceservice.traffic import conditions_of, spec_observed

FIELDS = ("canaryTrafficPercent", "latestCreatedRevision", "latestReadyRevision", "latestRolledoutRevision",
          "previousRolledoutRevision", "modelVersion")


@dataclass(frozen=True)
class Models:
    """Specs of one target: `v1`..`v4` servable, `broken` never resolves (its revision never gets Ready)."""

    v1: IsvcSpec
    v2: IsvcSpec
    v3: IsvcSpec
    v4: IsvcSpec
    broken: IsvcSpec


def observed(status: dict, outcome: str) -> dict:
    traffic = sorted(({k: t[k] for k in ("revisionName", "percent", "tag", "latestRevision") if k in t}
                      for t in status["traffic"]), key=lambda t: (not t.get("latestRevision"), t.get("revisionName")))
    return {"outcome": outcome, **{k: status[k] for k in FIELDS}, "ready": status["ready"], "traffic": traffic}


def settle(store: InferenceServiceStore, poll_s: float, timeout_s: float = 60.0) -> None:
    """Until the controller has acted on the latest spec and decided on the predictor (its
    PredictorReady condition True or False, not Unknown)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        obj = store.get() or {}
        decided = [c for c in conditions_of(obj) if c["type"] == "PredictorReady" and c["status"] in ("True", "False")]
        if spec_observed(obj) and decided:
            return
        time.sleep(poll_s)
    raise AssertionError(f"the controller did not settle in {timeout_s} s: {conditions_of(obj)}")


def run_sequence(store: InferenceServiceStore, models: Models, timeout_s: float, poll_s: float,
                 never_ready_timeout_s: float) -> list[dict]:
    fast = {"timeout_s": timeout_s, "poll_s": poll_s}
    steps: list[tuple[str, Callable[[], canary.Rollout]]] = [
        ("first deploy", lambda: canary.deploy_canary(store, models.v1, models.v1, **fast)),
        ("20 % canary", lambda: canary.deploy_canary(store, models.v2, models.v1, **fast)),
        ("a canary that never gets ready", lambda: canary.deploy_canary(
            store, models.broken, models.v1, supersede=True, timeout_s=never_ready_timeout_s, poll_s=poll_s)),
        ("a new canary", lambda: canary.deploy_canary(store, models.v3, models.v1, supersede=True, **fast)),
        ("promote", lambda: canary.promote(store, **fast)),
        ("rollback after promote", lambda: canary.rollback(store, **fast)),
        ("another canary", lambda: canary.deploy_canary(store, models.v4, models.v1, supersede=True, **fast)),
    ]
    record = []
    for name, step in steps:
        try:
            outcome = step().action
        except RolloutTimeout:
            outcome = "timeout: not Ready"
            settle(store, poll_s)
        record.append({"step": name, **observed(canary.status(store), outcome)})
    return record
