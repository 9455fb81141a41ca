"""FAKE KServe controller: computes `status` of an InferenceService the way KServe does.

Written from KServe's controller source (ksvc reconciler traffic targets and
`InferenceServiceStatus.PropagateStatus`) and Knative's revision model, independently of the
project's production code, so tests compare two readings of KServe rather than one with itself:

- Knative mode. A change to a component's template (its spec without `canaryTrafficPercent`)
  creates a revision `<isvc>-<component>-0000N`. Traffic targets are built from the *observed*
  `canaryTrafficPercent` P and the current `latestRolledoutRevision`:
  P set and a rolled-out revision known → `[{latestRevision: true, percent: P},
  {revisionName: <rolled out>, percent: 100-P, tag: prev}]` (the second only when P < 100);
  otherwise `[{latestRevision: true, percent: 100}]`. Knative resolves `latestRevision: true` to
  the latest *ready* revision.
- Rolled-out tracking (PropagateStatus): when the latest ready revision gets 100 %,
  previous ← latest rolled out, latest rolled out ← latest ready; when the latest rolled-out
  revision is the latest ready one and gets < 100 % while the whole 100 % sits on it, latest
  rolled out ← previous (a pin / rollback after a promote). The controller reconciles until the
  status stops changing, as KServe's requeues do.
- Timing. A spec change is observed `observe_delay` s later (observedGeneration, new revision,
  Ready Unknown); a new revision becomes ready `ready_delay` s after that (Ready True), or never
  while `never_ready` is set (Ready False, reason RevisionFailed).
- Standard (RawDeployment) mode: no revisions, no traffic split; `canaryTrafficPercent` is ignored
  without an error (kserve #5335); `status.deploymentMode` says which mode runs.
"""
from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
TAG_ROUTING_ANNOTATION = "serving.kserve.io/enable-tag-routing"
KNATIVE_MODES = ("Knative", "Serverless")
COMPONENTS = ("predictor", "transformer")


def _now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Revision:
    name: str
    template: dict
    created_at: float
    ready_at: float | None  # None: never becomes ready

    def ready(self, now: float) -> bool:
        return self.ready_at is not None and now >= self.ready_at

    def failed(self, now: float, ready_delay: float) -> bool:
        return self.ready_at is None and now >= self.created_at + ready_delay


@dataclass
class ComponentState:
    revisions: list[Revision] = field(default_factory=list)
    latest_rolled_out: str = ""
    previous_rolled_out: str = ""


@dataclass
class ControllerState:
    """What the fake controller remembers about one InferenceService beyond its stored object."""

    spec_changed_at: float
    observed_generation: int = 0
    observed_spec: dict | None = None
    observed_mode: str = ""
    components: dict[str, ComponentState] = field(default_factory=dict)
    transitions: dict[str, tuple[str, str]] = field(default_factory=dict)  # condition → (status, time)


class FakeKServeController:
    """Settings are plain attributes so a test can change them while the server runs."""

    def __init__(self, observe_delay: float = 0.1, ready_delay: float = 0.3,
                 default_deployment_mode: str = "Knative") -> None:
        self.observe_delay = observe_delay
        self.ready_delay = ready_delay
        #: Revisions created while this is set never become ready (a crashing canary).
        self.never_ready = False
        #: The cluster's default when an InferenceService has no deploymentMode annotation
        #: (KServe 0.21 ships "Standard").
        self.default_deployment_mode = default_deployment_mode
        self.lock = threading.RLock()

    def new_state(self, now: float) -> ControllerState:
        return ControllerState(spec_changed_at=now)

    def mode_of(self, obj: dict) -> str:
        return obj.get("metadata", {}).get("annotations", {}).get(MODE_ANNOTATION) or self.default_deployment_mode

    def reconcile(self, obj: dict, state: ControllerState, now: float) -> dict:
        """The status KServe would report at time `now` (the object is not modified)."""
        generation = obj["metadata"]["generation"]
        if state.observed_generation < generation and now >= state.spec_changed_at + self.observe_delay:
            self._observe(obj, state, now)
        if state.observed_spec is None:
            return copy.deepcopy(obj.get("status", {}))
        status: dict = {"observedGeneration": state.observed_generation,
                        "deploymentMode": state.observed_mode}
        name, namespace = obj["metadata"]["name"], obj["metadata"]["namespace"]
        host = f"{name}.{namespace}.example.com"
        if state.observed_mode in KNATIVE_MODES:
            status["components"] = {}
            for component, component_state in state.components.items():
                status["components"][component] = self._knative_component(
                    obj, component, component_state, state.observed_spec, now, host)
        else:
            status["components"] = {c: {"url": f"http://{name}-{c}.{namespace}.example.com"}
                                    for c in state.components}
        status["conditions"] = self._conditions(state, now)
        if self._all_ready(state, now):
            status["url"] = f"http://{host}"
            status["address"] = {"url": f"http://{name}.{namespace}.svc.cluster.local"}
        return status

    # -- observation of a new generation -------------------------------------------------------

    def _observe(self, obj: dict, state: ControllerState, now: float) -> None:
        spec = copy.deepcopy(obj.get("spec", {}))
        state.observed_generation = obj["metadata"]["generation"]
        state.observed_spec = spec
        state.observed_mode = self.mode_of(obj)
        for component in COMPONENTS:
            if component not in spec:
                state.components.pop(component, None)
                continue
            template = {k: v for k, v in spec[component].items() if k != "canaryTrafficPercent"}
            component_state = state.components.setdefault(component, ComponentState())
            revisions = component_state.revisions
            if state.observed_mode in KNATIVE_MODES:
                if not revisions or revisions[-1].template != template:
                    number = len(revisions) + 1
                    revisions.append(Revision(
                        name=f"{obj['metadata']['name']}-{component}-{number:05d}", template=template,
                        created_at=now, ready_at=None if self.never_ready else now + self.ready_delay))
            else:  # Standard: a Deployment rolls in place; keep one pseudo-revision for readiness
                if not revisions or revisions[-1].template != template:
                    revisions[:] = [Revision(name="", template=template, created_at=now,
                                             ready_at=None if self.never_ready else now + self.ready_delay)]

    # -- Knative traffic and rolled-out tracking -----------------------------------------------

    def _knative_component(self, obj: dict, component: str, cs: ComponentState, spec: dict,
                           now: float, host: str) -> dict:
        canary = spec.get(component, {}).get("canaryTrafficPercent")
        tagged = obj["metadata"].get("annotations", {}).get(TAG_ROUTING_ANNOTATION) == "true"
        latest_created = cs.revisions[-1].name if cs.revisions else ""
        ready = [r for r in cs.revisions if r.ready(now)]
        latest_ready = ready[-1].name if ready else ""
        traffic: list[dict] = []
        for _ in range(4):  # KServe requeues until the status stops changing
            traffic = self._traffic(canary, cs.latest_rolled_out, latest_ready, tagged)
            before = (cs.latest_rolled_out, cs.previous_rolled_out)
            self._propagate(cs, traffic, latest_ready, latest_created)
            if (cs.latest_rolled_out, cs.previous_rolled_out) == before:
                break
        out: dict = {"latestCreatedRevision": latest_created}
        if latest_ready:
            out["latestReadyRevision"] = latest_ready
        if cs.latest_rolled_out:
            out["latestRolledoutRevision"] = cs.latest_rolled_out
        if cs.previous_rolled_out:
            out["previousRolledoutRevision"] = cs.previous_rolled_out
        if traffic:
            out["traffic"] = traffic
            out["url"] = f"http://{obj['metadata']['name']}-{component}.{host.split('.', 1)[1]}"
        return out

    @staticmethod
    def _traffic(canary: int | None, rolled_out: str, latest_ready: str, tagged: bool) -> list[dict]:
        """Knative's status.traffic for the targets KServe's ksvc reconciler writes."""
        if not latest_ready:
            return []  # no ready revision: Knative routes nothing
        if canary is not None and rolled_out:
            latest = {"latestRevision": True, "percent": canary, "revisionName": latest_ready}
            if tagged:
                latest["tag"] = "latest"
            targets = [latest]
            if canary < 100:
                targets.append({"latestRevision": False, "percent": 100 - canary,
                                "revisionName": rolled_out, "tag": "prev"})
            return targets
        latest = {"latestRevision": True, "percent": 100, "revisionName": latest_ready}
        if tagged:
            latest["tag"] = "latest"
        return [latest]

    @staticmethod
    def _propagate(cs: ComponentState, traffic: list[dict], latest_ready: str, latest_created: str) -> None:
        """KServe's rolled-out bookkeeping (InferenceServiceStatus.PropagateStatus)."""
        per_revision: dict[str, int] = {}
        for target in traffic:
            per_revision[target["revisionName"]] = per_revision.get(target["revisionName"], 0) + target["percent"]
        for target in traffic:
            if target["revisionName"] != latest_ready or not target.get("latestRevision"):
                continue
            if cs.latest_rolled_out != latest_ready:
                if target["percent"] == 100:
                    cs.previous_rolled_out = cs.latest_rolled_out
                    cs.latest_rolled_out = latest_ready
            elif (latest_ready == latest_created and target["percent"] < 100
                  and per_revision.get(target["revisionName"]) == 100 and cs.previous_rolled_out):
                cs.latest_rolled_out = cs.previous_rolled_out

    # -- conditions ----------------------------------------------------------------------------

    def _component_condition(self, component: str, cs: ComponentState, now: float) -> tuple[str, str, str]:
        latest = cs.revisions[-1]
        if latest.ready(now):
            return "True", "", ""
        if latest.failed(now, self.ready_delay):
            what = f'Revision "{latest.name}"' if latest.name else f"Deployment of the {component}"
            return ("False", "RevisionFailed",
                    f"{what} failed with message: container kserve-container is not ready "
                    f"(fake controller: never_ready was set when it was created).")
        what = f'revision "{latest.name}"' if latest.name else f"the {component} Deployment"
        return "Unknown", "RevisionMissing", f"Waiting for {what} to become ready."

    def _all_ready(self, state: ControllerState, now: float) -> bool:
        return all(cs.revisions[-1].ready(now) for cs in state.components.values())

    def _conditions(self, state: ControllerState, now: float) -> list[dict]:
        per_component = {c: self._component_condition(c, cs, now) for c, cs in state.components.items()}
        conditions = []
        for component, (status, reason, message) in per_component.items():
            conditions.append(self._condition(state, f"{component.capitalize()}Ready", status, reason, message))
        statuses = [s for s, _, _ in per_component.values()]
        overall = "True" if all(s == "True" for s in statuses) else ("False" if "False" in statuses else "Unknown")
        first_bad = next(((r, m) for s, r, m in per_component.values() if s != "True"), ("", ""))
        conditions.append(self._condition(state, "Ready", overall, *first_bad))
        return sorted(conditions, key=lambda c: c["type"])

    @staticmethod
    def _condition(state: ControllerState, kind: str, status: str, reason: str, message: str) -> dict:
        previous = state.transitions.get(kind)
        if previous is None or previous[0] != status:
            state.transitions[kind] = (status, _now_rfc3339())
        condition = {"type": kind, "status": status, "lastTransitionTime": state.transitions[kind][1]}
        if reason:
            condition["reason"] = reason
        if message:
            condition["message"] = message
        return condition
