"""The fraud-detector canary: deploy, status, promote, roll back, written once against an
`InferenceServiceStore` (the Kubernetes API or the local state dir), with KServe's Knative-mode
semantics (DESIGN decisions 6 and 12):

- deploy: if the InferenceService is absent, create it with the champion (v1) and wait until
  Ready (the first revision always gets 100 %); then merge-patch the predictor to the candidate
  (v2) with `canaryTrafficPercent` and wait until `status.observedGeneration` reaches the new
  `metadata.generation` *and* Ready is True. (KServeClient.wait_isvc_ready reports the previous
  generation's Ready, hence our own wait.)
- promote: JSON patch removing `canaryTrafficPercent`; roll back: merge patch setting it to 0; a
  rollout step (`set_canary_percent`): merge patch setting it to the step's percent.
- refusals, each with the reason: Standard/RawDeployment mode (KServe ignores
  `canaryTrafficPercent` there), a feature contract different from the deployed transformer's,
  another candidate's canary still running (unless `supersede`), promoting a canary that is not
  Ready, rolling back with nothing to roll back to.
- promote and rollback move MLflow's aliases when given a tracking URI (`registry_aliases`).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from fraud.canary_percent import DEFAULT_CANARY_PERCENT, splits_traffic
from fraud.canary_percent import canary_percent as check_canary_percent
from fraud.waiting import poll

from fraud_control.canary import registry_aliases
from fraud_control.inferenceservice import isvc
from fraud_control.inferenceservice.isvc import CANARY_MODES, CONTRACT_ANNOTATION, IsvcSpec
from fraud_control.inferenceservice.store import (
    InferenceServiceStore,
    RolloutError,
    RolloutRefused,
    RolloutTimeout,
    require,
)
from fraud_control.inferenceservice.subject import revision_model, subject_of
from fraud_control.inferenceservice.traffic import (
    conditions_of,
    describe_conditions,
    is_true,
    render_markdown,
    spec_observed,
    traffic_status,
)

log = logging.getLogger(__name__)

#: Knative pulls the image and the storage initializer the model: minutes on a cold node.
DEFAULT_TIMEOUT_S = 600.0
DEFAULT_POLL_S = 2.0


@dataclass(frozen=True)
class Rollout:
    """What an operation did (`action`), the traffic status it left (`status`) and how MLflow's
    aliases followed (`registry`, '' when not asked to)."""

    action: str
    status: dict
    registry: str = ""

    @property
    def unchanged(self) -> bool:
        return self.action.startswith("unchanged")

    @property
    def markdown(self) -> str:
        return render_markdown(self.status, self.action)


def wait_ready(store: InferenceServiceStore, generation: int, timeout_s: float = DEFAULT_TIMEOUT_S,
               poll_s: float = DEFAULT_POLL_S, created_before: str | None = None) -> dict:
    """Poll until the controller has acted on the spec (`traffic.spec_observed`) and Ready is True;
    returns the object. Raises RolloutTimeout with the InferenceService's conditions when
    `timeout_s` passes."""
    return _wait(store, generation, lambda obj: is_true(obj, "Ready"), "Ready", timeout_s, poll_s, created_before)


def _rolled_out_takes_all(obj: dict) -> bool:
    predictor = obj.get("status", {}).get("components", {}).get("predictor", {})
    rolled_out = predictor.get("latestRolledoutRevision")
    return bool(rolled_out) and sum(t.get("percent", 0) for t in predictor.get("traffic", [])
                                    if t.get("revisionName") == rolled_out) == 100


def _wait(store: InferenceServiceStore, generation: int, done: Callable[[dict], bool], what: str,
          timeout_s: float, poll_s: float, created_before: str | None = None) -> dict:
    """Poll (a readiness check, every `poll_s`) until the controller has acted on `generation`'s
    spec and `done(obj)`; RolloutTimeout with the conditions after `timeout_s` (at once on a store
    whose writes reconcile the status, where waiting changes nothing)."""
    seen: list[dict] = [{}]  # the object as the last check saw it

    def acted_on() -> dict | None:
        obj = store.get()
        if obj is None:
            raise RolloutError(f"InferenceService {store.where} disappeared while waiting for it to be {what}")
        seen[0] = obj
        done_now = obj["metadata"]["generation"] >= generation and spec_observed(obj, created_before) and done(obj)
        return obj if done_now else None

    found = poll(acted_on, timeout_s=0.0 if store.reconciles_on_write else timeout_s, poll_s=poll_s)
    if found is not None:
        return found
    waited = "" if store.reconciles_on_write else f" after {timeout_s:g} s"
    last = seen[0]
    observed = last.get("status", {}).get("observedGeneration", 0)
    raise RolloutTimeout(
        f"InferenceService {store.where} was not {what} at generation {generation}{waited} "
        f"(observedGeneration {observed}). Conditions: {describe_conditions(conditions_of(last))}",
        conditions_of(last))


def check_canary_mode(obj: dict, where: str) -> None:
    """Refuse unless KServe runs this InferenceService in Knative mode."""
    mode = isvc.deployment_mode(obj)
    if mode in CANARY_MODES:
        return
    shown = f"in {mode} mode" if mode else "with no deployment mode reported (KServe 0.21 defaults to Standard)"
    raise RolloutRefused(
        f"InferenceService {where} runs {shown}: KServe ignores canaryTrafficPercent there "
        f"(kserve #5335), so a canary would silently take 100 % of traffic. Recreate it with the "
        f"annotation {isvc.DEPLOYMENT_MODE_ANNOTATION}: Knative on a cluster with Knative Serving.")


def check_contract(obj: dict, candidate: IsvcSpec, where: str) -> None:
    """Refuse a candidate trained on another feature contract than the deployed transformer's:
    KServe splits transformer and predictor independently (kserve #1669), so the transformer
    must not change during a canary."""
    deployed = obj["metadata"].get("annotations", {}).get(CONTRACT_ANNOTATION, "")
    if deployed != candidate.contract_id:
        raise RolloutRefused(
            f"candidate {candidate.model_version} was trained with feature contract {candidate.contract_id!r}, "
            f"but the deployed transformer of {where} uses "
            f"{deployed or 'none (no ' + CONTRACT_ANNOTATION + ' annotation)'!s}. A canary cannot change the "
            f"transformer: retrain the candidate with the deployed contract, or roll out a new "
            f"InferenceService for the new contract.")


def canary_percent_of(obj: dict) -> int | None:
    return obj.get("spec", {}).get("predictor", {}).get("canaryTrafficPercent")


def _create_champion(store: InferenceServiceStore, candidate: IsvcSpec, champion: IsvcSpec,
                     timeout_s: float, poll_s: float) -> dict:
    if champion.contract_id != candidate.contract_id:
        raise RolloutRefused(
            f"champion {champion.model_version} (feature contract {champion.contract_id!r}) and candidate "
            f"{candidate.model_version} ({candidate.contract_id!r}) use different feature contracts; one "
            f"transformer cannot serve both during a canary")
    created = store.create(isvc.inference_service(replace(champion, canary_percent=None)))
    log.info("created InferenceService %s with %s; waiting for Ready", store.where, champion.model_version)
    return wait_ready(store, created["metadata"]["generation"], timeout_s, poll_s)


def running_canary(current: dict | None) -> tuple[str, int] | None:
    """("v2 (its storage URI)", 20) while a canary splits traffic (1..99 %), else None:
    what a new candidate's deploy is refused for unless it supersedes it."""
    running = canary_percent_of(current) if current else None
    if current is None or not splits_traffic(running):
        return None
    return f"{isvc.predictor_model_version(current) or '?'} ({isvc.predictor_storage_uri(current)})", running


def _check_no_other_canary(current: dict, candidate: IsvcSpec, where: str, supersede: bool) -> str:
    """'' if no other canary runs; the action's note if `supersede`; RolloutRefused otherwise."""
    running = running_canary(current)
    if running is None:
        return ""
    if not supersede:
        model, percent = running
        raise RolloutRefused(
            f"a canary of {model} is already running at {percent} % on {where}; promote it or roll it back "
            f"first, or supersede it with {candidate.model_version} (supersede=True, CLI --supersede)")
    return f"superseded canary {isvc.predictor_model_version(current) or isvc.predictor_storage_uri(current)}"


def deploy_canary(store: InferenceServiceStore, candidate: IsvcSpec, champion: IsvcSpec, *,
                  canary_percent: int = DEFAULT_CANARY_PERCENT, supersede: bool = False,
                  timeout_s: float = DEFAULT_TIMEOUT_S, poll_s: float = DEFAULT_POLL_S) -> Rollout:
    """Roll `candidate` out as a canary of `canary_percent` % on the store's InferenceService,
    creating it with `champion` first if it is absent.

    Idempotent: the same candidate (storage URI and model version) again changes nothing, whatever
    traffic an operator has set since. Another candidate's canary still running (1..99 %)
    is refused unless `supersede`. Raises RolloutRefused, RolloutTimeout (both RolloutError).
    """
    canary_percent = check_canary_percent(canary_percent, "canary percent")
    actions = []
    current = store.get()
    if current is None:
        current = _create_champion(store, candidate, champion, timeout_s, poll_s)
        actions.append(f"created with {champion.model_version}")
    check_canary_mode(current, store.where)
    check_contract(current, candidate, store.where)

    if (isvc.predictor_storage_uri(current), isvc.predictor_model_version(current)) == (
            candidate.storage_uri, candidate.model_version):
        current = wait_ready(store, current["metadata"]["generation"], timeout_s, poll_s)
        percent = canary_percent_of(current)
        where = "fully rolled out" if percent is None else f"at {percent} %"
        actions.append(f"unchanged: {candidate.model_version} is already deployed ({where})")
        return Rollout("; ".join(actions), traffic_status(current))
    actions += [note for note in [_check_no_other_canary(current, candidate, store.where, supersede)] if note]

    rolled_out = subject_of(current, store.where).latest_rolled_out_revision
    record = {"revision": rolled_out, **revision_model(current, rolled_out)} if rolled_out else None
    created_before = current.get("status", {}).get("components", {}).get("predictor", {}).get("latestCreatedRevision")
    patched = store.merge_patch(isvc.canary_patch(candidate, canary_percent, record))
    log.info("patched %s: canary %s at %d %% (generation %s); waiting for Ready", store.where,
             candidate.model_version, canary_percent, patched["metadata"]["generation"])
    current = wait_ready(store, patched["metadata"]["generation"], timeout_s, poll_s, created_before or "")
    actions.append(f"canary {candidate.model_version} at {canary_percent} %")
    return Rollout("; ".join(actions), traffic_status(current))


def status(store: InferenceServiceStore) -> dict:
    """The traffic status (see `traffic_status`); NotDeployed if the InferenceService is absent."""
    return traffic_status(require(store))


def set_canary_percent(store: InferenceServiceStore, percent: int, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                       poll_s: float = DEFAULT_POLL_S) -> Rollout:
    """Move a running canary to `percent` % (1..99; 100 is `promote`, 0 is `rollback`): merge patch of
    `canaryTrafficPercent` only, which changes traffic, not the predictor's revision; waits for the new
    generation to be Ready. The refusals of `promote`: Standard mode, no canary, a canary not Ready."""
    percent = check_canary_percent(percent, "canary percent")
    current = require(store)
    check_canary_mode(current, store.where)
    running = canary_percent_of(current)
    if running is None:
        raise RolloutRefused(f"{store.where} has no canary (canaryTrafficPercent absent: "
                             f"{isvc.predictor_model_version(current)} takes 100 %); deploy a candidate first")
    if running == percent:
        current = wait_ready(store, current["metadata"]["generation"], timeout_s, poll_s)
        return Rollout(f"unchanged: the canary is already at {percent} %", traffic_status(current))
    if not traffic_status(current)["ready"]:
        raise RolloutRefused(
            f"the canary {isvc.predictor_model_version(current)} of {store.where} is not Ready at generation "
            f"{current['metadata'].get('generation')}; roll it back instead. "
            f"Conditions: {describe_conditions(conditions_of(current))}")
    patched = store.merge_patch(isvc.canary_percent_patch(percent))
    current = wait_ready(store, patched["metadata"]["generation"], timeout_s, poll_s)
    return Rollout(f"canary {isvc.predictor_model_version(current)} at {percent} %", traffic_status(current))


def promote(store: InferenceServiceStore, *, tracking_uri: str = "", timeout_s: float = DEFAULT_TIMEOUT_S,
            poll_s: float = DEFAULT_POLL_S) -> Rollout:
    """Give the canary 100 %: JSON patch removing `canaryTrafficPercent` (as the README's kubectl
    command does); KServe then records it as `latestRolledoutRevision`. With `tracking_uri`,
    champion = the canary's registered version and challenger cleared."""
    current = require(store)
    check_canary_mode(current, store.where)
    if canary_percent_of(current) is None:
        current = wait_ready(store, current["metadata"]["generation"], timeout_s, poll_s)
        return Rollout(f"unchanged: {isvc.predictor_model_version(current)} already takes 100 %",
                       traffic_status(current))
    if not traffic_status(current)["ready"]:
        raise RolloutRefused(
            f"the canary {isvc.predictor_model_version(current)} of {store.where} is not Ready at generation "
            f"{current['metadata'].get('generation')}, so promoting would give 100 % to an older ready revision; "
            f"roll it back instead. Conditions: {describe_conditions(conditions_of(current))}")
    canary = revision_model(current, current["status"]["components"]["predictor"].get("latestCreatedRevision", ""))
    patched = store.json_patch(isvc.promote_patch())
    current = wait_ready(store, patched["metadata"]["generation"], timeout_s, poll_s)
    note = registry_aliases.after_promote(tracking_uri, canary) if tracking_uri else ""
    return Rollout(f"promoted {isvc.predictor_model_version(current)} to 100 %", traffic_status(current), note)


def rollback(store: InferenceServiceStore, *, tracking_uri: str = "", timeout_s: float = DEFAULT_TIMEOUT_S,
             poll_s: float = DEFAULT_POLL_S) -> Rollout:
    """Pin the canary to 0 % (merge patch): the rolled-out revision takes 100 % again; the
    candidate's spec stays in place (re-deploy the champion's storage URI to replace it). With
    `tracking_uri`, challenger cleared and champion = the registered version now rolled out.

    Done when the controller reports the rolled-out revision at 100 %, not when Ready: a canary
    that failed keeps Ready False (its revision is the latest created) after its traffic is gone.
    """
    current = require(store)
    check_canary_mode(current, store.where)
    if canary_percent_of(current) == 0:
        current = wait_ready(store, current["metadata"]["generation"], timeout_s, poll_s)
        return Rollout("unchanged: the canary is already at 0 %", traffic_status(current))
    predictor = current.get("status", {}).get("components", {}).get("predictor", {})
    rolled_out, latest = predictor.get("latestRolledoutRevision"), predictor.get("latestReadyRevision")
    if canary_percent_of(current) is None and rolled_out == latest and not predictor.get("previousRolledoutRevision"):
        raise RolloutRefused(f"{store.where} has a single rolled-out revision ({rolled_out}): "
                             "there is nothing to roll back to")
    patched = store.merge_patch(isvc.rollback_patch())
    current = _wait(store, patched["metadata"]["generation"], _rolled_out_takes_all,
                    "back on its rolled-out revision", timeout_s, poll_s)
    action = f"rolled back: canary {isvc.predictor_model_version(current)} at 0 %"
    if not is_true(current, "Ready"):
        action += f" (still not Ready: {describe_conditions(conditions_of(current))})"
    subject = subject_of(current, store.where)
    note = registry_aliases.after_rollback(tracking_uri, subject.rolled_out_model) if tracking_uri else ""
    return Rollout(action, traffic_status(current), note)
