"""The fraud-detector InferenceService kept in a local state dir, with KServe's canary semantics.

The local runtime's "API server + KServe controller": `create`, `get`, `patch_merge` and
`patch_json` behave like the Kubernetes calls on an `inferenceservices` object, and after every
write the status is reconciled the way KServe's controller does in Knative mode (DESIGN
"KServe canary semantics to mirror"):

- only a change to the predictor spec (other than `canaryTrafficPercent`) makes a new predictor
  revision `<name>-predictor-0000N`;
- a revision is ready when its artifact can be served from this machine (a local directory
  holding an exported model); `latestReadyRevision` is the newest ready one;
- the first rolled-out revision gets 100 %; with `canaryTrafficPercent: P` the latest ready
  revision gets P and `latestRolledoutRevision` gets 100-P (tag `prev`);
- when the latest ready revision receives 100 % it becomes `latestRolledoutRevision` and the old one
  `previousRolledoutRevision`; when the rolled-out revision is then given less (a rollback),
  `latestRolledoutRevision` returns to `previousRolledoutRevision`;
- in Standard/RawDeployment mode `canaryTrafficPercent` is ignored, as KServe does (kserve #5335).

Files: `inferenceservice.json` (the object as `kubectl get -o json` shows it) and
`revisions.json` (what each predictor revision serves; Knative keeps these as Revision objects).
Writes are atomic and serialised with a lock file, so `serve` can read while the CLI patches.

No kserve or TensorFlow imports: the pipeline's deploy step uses this module for its `local` target.
"""
from __future__ import annotations

import copy
import fcntl
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fraud.export import SAVEDMODEL_DIR, find_version_dir
from fraud.files import write_json

from fraud_control.inferenceservice import isvc

STATE_FILE = "inferenceservice.json"
REVISIONS_FILE = "revisions.json"
LOCK_FILE = ".lock"
DEFAULT_STATE_DIR = Path(".fraud-rollout") / "serving"
TAG_ROUTING_ANNOTATION = "serving.kserve.io/enable-tag-routing"


class StateError(ValueError):
    """A request the API server would refuse (409 exists, 422 invalid patch)."""


class NotFound(FileNotFoundError):
    """No InferenceService in this state dir (the API server's 404)."""


def local_artifact_path(storage_uri: str) -> Path | None:
    """The local directory a storage URI points at, or None if it is not a local path."""
    if storage_uri.startswith("file://"):
        return Path(storage_uri[len("file://"):])
    if "://" in storage_uri or not storage_uri:
        return None
    return Path(storage_uri)


def artifact_is_servable(storage_uri: str) -> bool:
    """A predictor revision can become ready here only if its exported model is on this machine."""
    path = local_artifact_path(storage_uri)
    if path is None:
        return False
    try:
        return (find_version_dir(path) / SAVEDMODEL_DIR).is_dir()
    except FileNotFoundError:
        return False


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _revision_template(predictor: dict) -> dict:
    """What makes a Knative revision: the predictor spec without the traffic split."""
    template = copy.deepcopy(predictor)
    template.pop("canaryTrafficPercent", None)
    return template


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: a small function, no library needed."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(document: Any, operations: list[dict]) -> Any:
    """RFC 6902 through `jsonpatch`; a missing path or a failed test is a StateError, as kubectl
    reports it (the API server answers 422)."""
    import jsonpatch
    import jsonpointer

    if not isinstance(operations, list):
        raise StateError("a JSON patch is a list of operations")
    if any(isinstance(op, dict) and op.get("path") == "" for op in operations):
        raise StateError("JSON patch on the whole object is not allowed")
    try:
        return jsonpatch.apply_patch(document, operations)  # a copy: `document` is left as it was
    except jsonpatch.JsonPatchTestFailed as error:
        raise StateError(f"JSON patch test failed: {error}") from None
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as error:
        raise StateError(f"JSON patch path does not exist or is invalid: {error}") from None


def _predictor_traffic(percent: int | None, latest_ready: str | None, rolled_out: str | None,
                       canary_mode: bool, tag_routing: bool) -> list[dict]:
    if latest_ready is None:
        return []
    latest = {"latestRevision": True, "revisionName": latest_ready}
    if tag_routing:
        latest["tag"] = "latest"
    if percent is None or not canary_mode or rolled_out is None or rolled_out == latest_ready:
        return [{**latest, "percent": 100}]
    entries = [{**latest, "percent": percent}]
    if percent < 100:
        entries.append({"latestRevision": False, "revisionName": rolled_out, "percent": 100 - percent,
                        "tag": "prev"})
    return entries


def reconcile(manifest: dict, revisions: dict[str, dict]) -> tuple[dict, dict[str, dict]]:
    """Status (and new revisions) for `manifest`, as KServe's controller would report them."""
    manifest, revisions = copy.deepcopy(manifest), copy.deepcopy(revisions)
    name = manifest["metadata"]["name"]
    predictor = manifest.get("spec", {}).get("predictor", {})
    template = _revision_template(predictor)
    status = manifest.setdefault("status", {})
    component = status.setdefault("components", {}).setdefault("predictor", {})

    latest_created = component.get("latestCreatedRevision")
    if latest_created is None or revisions[latest_created]["template"] != template:
        latest_created = f"{name}-predictor-{len(revisions) + 1:05d}"
        storage_uri = isvc.predictor_storage_uri({"spec": {"predictor": predictor}})
        revisions[latest_created] = {
            "template": template,
            "storageUri": storage_uri,
            "modelVersion": isvc.predictor_model_version({"spec": {"predictor": predictor}}),
            "generation": manifest["metadata"]["generation"],
            "created": _now(),
        }
    for record in revisions.values():
        record["ready"] = artifact_is_servable(record["storageUri"])
    ready = [revision for revision in revisions if revisions[revision]["ready"]]
    latest_ready = ready[-1] if ready else None

    # No annotation means KServe 0.21's default, Standard, where canaryTrafficPercent is ignored.
    mode = isvc.deployment_mode({"metadata": manifest["metadata"]}) or "Standard"
    canary_mode = mode in isvc.CANARY_MODES
    percent = predictor.get("canaryTrafficPercent")
    percent = None if percent is None else int(percent)
    effective = 100 if percent is None or not canary_mode else percent
    rolled_out = component.get("latestRolledoutRevision")
    previous = component.get("previousRolledoutRevision")
    settled = latest_ready is not None and latest_ready == latest_created
    if settled and effective < 100 and rolled_out == latest_ready and previous is not None:
        rolled_out = previous  # the rolled-out revision was pinned below 100 %: roll back
    tag_routing = str(manifest["metadata"].get("annotations", {}).get(TAG_ROUTING_ANNOTATION, "")) == "true"
    traffic = _predictor_traffic(effective, latest_ready, rolled_out, canary_mode, tag_routing)
    latest_share = sum(entry["percent"] for entry in traffic if entry["revisionName"] == latest_ready)
    if settled and latest_share == 100 and rolled_out != latest_ready:
        previous, rolled_out = rolled_out, latest_ready

    component.update({"latestCreatedRevision": latest_created, "traffic": traffic})
    for key, value in (("latestReadyRevision", latest_ready), ("latestRolledoutRevision", rolled_out),
                       ("previousRolledoutRevision", previous)):
        if value is None:
            component.pop(key, None)
        else:
            component[key] = value

    status["conditions"] = _keep_transition_times(
        status.get("conditions", []), _conditions(manifest, latest_created, latest_ready, revisions))
    status["deploymentMode"] = mode
    status["observedGeneration"] = manifest["metadata"]["generation"]
    return manifest, revisions


def _conditions(manifest: dict, latest_created: str, latest_ready: str | None, revisions: dict[str, dict]) -> list[dict]:
    """Ready, PredictorReady and TransformerReady; records the transformer's status in `manifest`."""
    predictor_ready = latest_ready is not None and latest_ready == latest_created
    conditions = [_condition("PredictorReady", predictor_ready,
                             "" if predictor_ready else f"revision {latest_created} has no servable artifact "
                             f"at {revisions[latest_created]['storageUri']!r}")]
    if "transformer" in manifest.get("spec", {}):
        transformer_ready = _transformer_servable(manifest)
        transformer_name = f"{manifest['metadata']['name']}-transformer-00001"
        manifest["status"]["components"]["transformer"] = {
            "latestCreatedRevision": transformer_name,
            **({"latestReadyRevision": transformer_name} if transformer_ready else {}),
            "traffic": [{"latestRevision": True, "revisionName": transformer_name, "percent": 100}],
        }
        conditions.append(_condition("TransformerReady", transformer_ready,
                                     "" if transformer_ready else "no feature_contract.json at the "
                                     "transformer's STORAGE_URI"))
    all_ready = all(c["status"] == "True" for c in conditions)
    conditions.insert(0, _condition("Ready", all_ready, "" if all_ready else "a component is not ready"))
    return conditions


def _transformer_servable(manifest: dict) -> bool:
    for container in manifest["spec"]["transformer"].get("containers", []):
        for env in container.get("env", []):
            if env.get("name") == "STORAGE_URI":
                path = local_artifact_path(env.get("value", ""))
                if path is None:
                    return False
                from fraud.export import read_contract
                try:
                    read_contract(path)
                    return True
                except (FileNotFoundError, ValueError, KeyError):  # absent or malformed
                    return False
    return False


def _condition(kind: str, ok: bool, message: str) -> dict:
    condition = {"type": kind, "status": "True" if ok else "False", "lastTransitionTime": _now()}
    if message:
        condition["message"] = message
    return condition


def _keep_transition_times(old: list[dict], new: list[dict]) -> list[dict]:
    previous = {c["type"]: c for c in old}
    for condition in new:
        before = previous.get(condition["type"])
        if before is not None and before["status"] == condition["status"]:
            condition["lastTransitionTime"] = before["lastTransitionTime"]
    return new


class LocalInferenceService:
    """The InferenceService in `state_dir`: create, get, merge patch, JSON patch."""

    def __init__(self, state_dir: str | Path = DEFAULT_STATE_DIR) -> None:
        self.state_dir = Path(state_dir)
        self.state_file = self.state_dir / STATE_FILE
        self.revisions_file = self.state_dir / REVISIONS_FILE

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def exists(self) -> bool:
        return self.state_file.exists()

    def get(self) -> dict:
        """The stored object, status included (NotFound if none was created)."""
        try:
            return json.loads(self.state_file.read_text())
        except FileNotFoundError:
            raise NotFound(f"no InferenceService in {self.state_dir} (create one with "
                           "`fraud-rollout serve --baseline … --candidate …` or the pipeline's deploy step)") from None

    def revisions(self) -> dict[str, dict]:
        """Predictor revisions by name, oldest first: storageUri, modelVersion, ready, generation."""
        try:
            return json.loads(self.revisions_file.read_text())
        except FileNotFoundError:
            return {}

    def create(self, manifest: dict) -> dict:
        with self._locked():
            if self.exists():
                raise StateError(f"InferenceService already exists in {self.state_dir}")
            _check_manifest(manifest)
            body = {key: copy.deepcopy(value) for key, value in manifest.items() if key != "status"}
            body["metadata"].update({"generation": 1, "creationTimestamp": _now(), "uid": str(uuid.uuid4())})
            return self._write(*reconcile(body, {}))

    def patch_merge(self, patch: dict) -> dict:
        """A merge patch (`kubectl patch --type merge`)."""
        if not isinstance(patch, dict):
            raise StateError("a merge patch is a JSON object")
        return self._patch(lambda current: merge_patch(current, patch))

    def patch_json(self, operations: list[dict]) -> dict:
        """A JSON patch (`kubectl patch --type json`)."""
        return self._patch(lambda current: json_patch(current, operations))

    def delete(self) -> None:
        with self._locked():
            for path in (self.state_file, self.revisions_file):
                path.unlink(missing_ok=True)

    def _patch(self, apply) -> dict:
        with self._locked():
            current = self.get()
            patched = apply(current)
            # status and the server-owned metadata are not writable through the main resource
            patched["status"] = current.get("status", {})
            for key in ("generation", "creationTimestamp", "name", "namespace", "uid"):
                if key in current["metadata"]:
                    patched.setdefault("metadata", {})[key] = current["metadata"][key]
            _check_manifest(patched)
            if patched.get("spec") != current.get("spec"):
                patched["metadata"]["generation"] = current["metadata"]["generation"] + 1
            return self._write(*reconcile(patched, self.revisions()))

    def _write(self, manifest: dict, revisions: dict) -> dict:
        write_json(self.revisions_file, revisions)
        write_json(self.state_file, manifest)
        return manifest


def _check_manifest(manifest: dict) -> None:
    if manifest.get("kind") != isvc.KIND or not manifest.get("metadata", {}).get("name"):
        raise StateError(f"not an {isvc.KIND} with a metadata.name")
    predictor = manifest.get("spec", {}).get("predictor")
    if not isinstance(predictor, dict):
        raise StateError("spec.predictor is required")
    percent = predictor.get("canaryTrafficPercent")
    if percent is not None and (not isinstance(percent, int) or isinstance(percent, bool)
                                or not 0 <= percent <= 100):
        raise StateError(f"spec.predictor.canaryTrafficPercent must be an integer within 0..100, got {percent!r}")


def revision_status(service: LocalInferenceService) -> dict:
    """`status.components.predictor` plus each revision's model version and artifact (for `canary status`)."""
    manifest = service.get()
    component = manifest.get("status", {}).get("components", {}).get("predictor", {})
    revisions = service.revisions()
    return {
        "name": manifest["metadata"]["name"],
        "generation": manifest["metadata"].get("generation"),
        "observedGeneration": manifest.get("status", {}).get("observedGeneration"),
        "canaryTrafficPercent": manifest["spec"]["predictor"].get("canaryTrafficPercent"),
        "conditions": {c["type"]: c["status"] for c in manifest.get("status", {}).get("conditions", [])},
        "predictor": component,
        "revisions": {name: {"modelVersion": record["modelVersion"], "storageUri": record["storageUri"],
                             "ready": record.get("ready", False)} for name, record in revisions.items()},
    }
