"""Where every rollout step is recorded besides the rollout's state: a JSON-lines log, Kubernetes
Events on the InferenceService (kserve target), tags on the candidate's MLflow model version."""
from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from fraud import registry
from fraud.files import json_safe

from fraud_control.canary.registry_aliases import registered_version
from fraud_control.inferenceservice.isvc import GROUP, VERSION
from fraud_control.inferenceservice.kube_store import REQUEST_TIMEOUT_S, MissingPermission, server_message
from fraud_control.inferenceservice.store import RolloutError

if TYPE_CHECKING:
    from kubernetes import client

#: Event reason per decision (`kubectl get events --field-selector reason=RolloutHold`).
REASONS = {"advance": "RolloutStep", "hold": "RolloutHold", "rollback": "RolloutRollback",
           "promote": "RolloutPromote", "abort": "RolloutRollback", "inconclusive": "RolloutInconclusive",
           "error": "RolloutEvidenceError"}
#: Kubernetes caps an Event's message at 1 KiB.
MESSAGE_LIMIT = 1024


def step_line(step: Mapping[str, Any]) -> str:
    """One line per step: percent, decision, the first reason."""
    reasons = step.get("reasons") or [""]
    window = step.get("window") or {}
    requests = f", {window['requests']} requests in {window['seconds']:g} s" if window else ""
    return f"{step['decision']} at {step['percent']} %{requests}: {reasons[0]}"


class JsonLinesLog:
    """Each step as one JSON line, appended to `path` (or written to `stream`)."""

    def __init__(self, path: str | Path | None = None, stream: TextIO | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.stream = stream or sys.stdout

    def record(self, step: Mapping[str, Any]) -> None:
        line = json.dumps(json_safe(dict(step)), allow_nan=False)
        if self.path is None:
            print(line, file=self.stream, flush=True)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as log:
            log.write(line + "\n")


class KubeEvents:
    """core/v1 Events with involvedObject = the InferenceService (reasons in REASONS)."""

    def __init__(self, api_client: client.ApiClient, namespace: str, name: str, uid: str) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.namespace, self.name, self.uid = namespace, name, uid

    def record(self, step: Mapping[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        now = datetime.now(UTC)
        body = {"metadata": {"generateName": f"{self.name}-rollout-"},
                "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": "InferenceService",
                                   "name": self.name, "namespace": self.namespace, "uid": self.uid},
                "reason": REASONS.get(str(step["decision"]), "RolloutStep"),
                "message": step_line(step)[:MESSAGE_LIMIT],
                "type": "Normal" if step["decision"] in ("advance", "hold", "promote") else "Warning",
                "source": {"component": "fraud-rollout"}, "count": 1,
                "firstTimestamp": now, "lastTimestamp": now}
        try:
            self.core.create_namespaced_event(self.namespace, body, _request_timeout=REQUEST_TIMEOUT_S)
        except ApiException as error:
            if error.status == 403:
                raise MissingPermission("create", self.namespace, server_message(error), resource="events",
                                        group="") from None
            raise RolloutError(f"create Event for InferenceService {self.namespace}/{self.name} failed: "
                               f"HTTP {error.status} {error.reason}: {server_message(error)}") from None


class MlflowStepTags:
    """`rollout.step.<percent> = <decision>` (and `rollout.result`) on the candidate's registered version."""

    def __init__(self, tracking_uri: str, candidate: Mapping[str, str]) -> None:
        self.tracking_uri = tracking_uri
        self.version = registered_version(tracking_uri, dict(candidate))

    def record(self, step: Mapping[str, Any]) -> None:
        if self.version is None:  # not registered here: nothing to tag
            return
        tags = {f"rollout.step.{step['percent']}": str(step["decision"])}
        if step["decision"] in ("promote", "rollback", "abort", "inconclusive"):
            tags["rollout.result"] = str(step["decision"])
        registry.set_version_tags(self.tracking_uri, self.version, tags)
