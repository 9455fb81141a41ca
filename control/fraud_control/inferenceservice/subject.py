"""What an analysis saw: the InferenceService's generation, revisions, canary percent and the model
(version and storage URI) of its rolled-out and canary revisions. Evidence carries it, so that
`--apply` acts only on the deployment the evidence is about. Model versions are "v1"/"v2" in every
run, hence the storage URIs, and the object's uid tells a recreated InferenceService apart.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from fraud_control.inferenceservice import isvc
from fraud_control.inferenceservice.store import InferenceServiceStore


@dataclass(frozen=True)
class Subject:
    where: str
    uid: str
    generation: int
    latest_rolled_out_revision: str
    latest_ready_revision: str
    latest_created_revision: str
    canary_percent: int | None
    rolled_out_model: dict
    canary_model: dict | None

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        canary = self.canary_model or {}
        return (f"generation {self.generation}, rolled out {self.latest_rolled_out_revision or '-'} "
                f"({_model(self.rolled_out_model)}), canary {self.latest_ready_revision or '-'} ({_model(canary)}) "
                f"at {self.canary_percent if self.canary_percent is not None else 'no'} %")


def _model(model: dict) -> str:
    return f"{model.get('modelVersion') or '?'} {model.get('storageUri') or '?'}" if model else "none"


def spec_model(obj: dict) -> dict:
    return {"modelVersion": isvc.predictor_model_version(obj), "storageUri": isvc.predictor_storage_uri(obj)}


def revision_model(obj: dict, revision: str) -> dict:
    """What `revision` serves: the spec's model for the latest created revision, the recorded one
    (isvc.ROLLED_OUT_ANNOTATION) for the revision rolled out when the canary opened, else unknown."""
    predictor = obj.get("status", {}).get("components", {}).get("predictor", {})
    if revision and revision == predictor.get("latestCreatedRevision"):
        return spec_model(obj)
    recorded = obj.get("spec", {}).get("predictor", {}).get("annotations", {}).get(isvc.ROLLED_OUT_ANNOTATION, "")
    try:
        record = json.loads(recorded) if recorded else {}
    except ValueError:  # edited by hand: treat as unknown
        record = {}
    if revision and record.get("revision") == revision:
        return {"modelVersion": record.get("modelVersion", ""), "storageUri": record.get("storageUri", "")}
    return {"modelVersion": "", "storageUri": ""}


def subject_of(obj: dict, where: str) -> Subject:
    predictor = obj.get("status", {}).get("components", {}).get("predictor", {})
    rolled_out = predictor.get("latestRolledoutRevision", "")
    latest = predictor.get("latestReadyRevision", "") or predictor.get("latestCreatedRevision", "")
    percent = obj.get("spec", {}).get("predictor", {}).get("canaryTrafficPercent")
    canary = revision_model(obj, latest) if percent is not None and latest != rolled_out else None
    return Subject(where=where, uid=obj.get("metadata", {}).get("uid", ""),
                   generation=int(obj.get("metadata", {}).get("generation", 0)),
                   latest_rolled_out_revision=rolled_out, latest_ready_revision=latest,
                   latest_created_revision=predictor.get("latestCreatedRevision", ""),
                   canary_percent=percent, rolled_out_model=revision_model(obj, rolled_out), canary_model=canary)


def read_subject(store: InferenceServiceStore) -> Subject | None:
    """The subject deployed in `store` now, or None if nothing is deployed there."""
    obj = store.get()
    return None if obj is None else subject_of(obj, store.where)


def mismatch(evidence: dict | None, current: Subject | None) -> str | None:
    """Why evidence about `evidence` must not be applied to `current`, or None when it may.
    `where` is not compared: the same InferenceService can be reached under another name."""
    if evidence is None:
        return ("the evidence records no InferenceService it was gathered against (an older replay, or "
                "replayed with nothing deployed); replay again against the current canary")
    if current is None:
        return "nothing is deployed to apply it to; deploy the canary, then replay again against it"
    now = {k: v for k, v in current.to_dict().items() if k != "where"}
    then = {k: evidence.get(k) for k in now}
    if then == now:
        return None
    fields = ", ".join(k for k in now if then[k] != now[k])
    return (f"the evidence was gathered against {_describe(evidence)}, but {current.where} now has "
            f"{current.describe()} (differs in {fields}); replay again against the current canary")


def _describe(evidence: dict) -> str:
    recorded = Subject(
        where=str(evidence.get("where", "?")), uid=str(evidence.get("uid", "")),
        generation=int(evidence.get("generation") or 0),
        latest_rolled_out_revision=str(evidence.get("latest_rolled_out_revision") or ""),
        latest_ready_revision=str(evidence.get("latest_ready_revision") or ""),
        latest_created_revision=str(evidence.get("latest_created_revision") or ""),
        canary_percent=evidence.get("canary_percent"), rolled_out_model=evidence.get("rolled_out_model") or {},
        canary_model=evidence.get("canary_model"))
    return f"{recorded.where}: {recorded.describe()}"
