"""Where a rollout's state lives, so `rollout status` and `rollout abort` work from another process.

- local target: `rollout.json` in the state dir (written atomically), and `rollout-abort.json`
  beside it for an abort request; the controller runs while its pid is alive.
- kserve target: the ConfigMap `<isvc>-rollout` in the InferenceService's namespace, keys `state`
  and `abort`, each written by merge patch so the controller and `abort` never overwrite each
  other's key. Not an annotation on the InferenceService: any spec change makes a Knative revision,
  and a metadata annotation rolls the transformer too (found in issue 9). The controller runs while
  its heartbeat (renewed at every poll) is younger than `lease_s`.
"""
from __future__ import annotations

import json
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fraud.files import read_json, write_json

from fraud_control.inferenceservice.kube_store import REQUEST_TIMEOUT_S, MissingPermission, server_message
from fraud_control.inferenceservice.store import RolloutError
from fraud_control.local_runtime.runtime import pid_alive

if TYPE_CHECKING:
    from kubernetes import client

STATE_FILE = "rollout.json"
ABORT_FILE = "rollout-abort.json"
#: A controller renews its heartbeat at every poll of a window (2 s); older than this, it is gone
#: (a killed pod). During a step's wait for Ready it does not poll, so it writes `busy_until`
#: (the wait's deadline) first.
DEFAULT_LEASE_S = 60.0


def _abort_body(reason: str) -> dict[str, Any]:
    return {"reason": reason, "requested": datetime.now(UTC).isoformat(timespec="seconds"),
            "host": socket.gethostname()}


def _describe_abort(body: Mapping[str, Any] | None) -> str:
    if not body:
        return ""
    return f"{body.get('reason') or 'no reason given'} (asked at {body.get('requested')} on {body.get('host')})"


class LocalRolloutState:
    """The rollout of the InferenceService in a local state dir."""

    def __init__(self, state_dir: str | Path) -> None:
        self.state_dir = Path(state_dir)
        self.path, self.abort_path = self.state_dir / STATE_FILE, self.state_dir / ABORT_FILE
        self.where = str(self.path)

    def read(self) -> dict | None:
        try:
            body = read_json(self.path)
        except FileNotFoundError:
            return None
        return body if isinstance(body, dict) else None

    def write(self, state: Mapping[str, Any]) -> None:
        write_json(self.path, dict(state))

    def is_running(self, state: Mapping[str, Any]) -> bool:
        return state.get("host") == socket.gethostname() and pid_alive(state.get("pid"))

    def request_abort(self, reason: str) -> None:
        write_json(self.abort_path, _abort_body(reason))

    def abort_request(self) -> str:
        try:
            return _describe_abort(read_json(self.abort_path))
        except FileNotFoundError:
            return ""

    def clear_abort(self) -> None:
        self.abort_path.unlink(missing_ok=True)


class ConfigMapRolloutState:
    """The rollout of InferenceService `namespace/name`, in the ConfigMap `<name>-rollout`."""

    def __init__(self, api_client: client.ApiClient, namespace: str, name: str,
                 lease_s: float = DEFAULT_LEASE_S) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.namespace, self.config_map = namespace, f"{name}-rollout"
        self.lease_s = lease_s
        self.where = f"ConfigMap {namespace}/{self.config_map}"

    def _call(self, verb: str, request, missing_ok: bool = False):
        from kubernetes.client.exceptions import ApiException

        try:
            return request()
        except ApiException as error:
            if error.status == 403:
                raise MissingPermission(verb, self.namespace, server_message(error), resource="configmaps",
                                        group="") from None
            if error.status == 404 and missing_ok:
                return None
            raise RolloutError(f"{verb} {self.where} failed: HTTP {error.status} {error.reason}: "
                               f"{server_message(error)}") from None

    def _data(self) -> dict[str, str] | None:
        found = self._call("get", lambda: self.core.read_namespaced_config_map(
            self.config_map, self.namespace, _request_timeout=REQUEST_TIMEOUT_S), missing_ok=True)
        return None if found is None else dict(found.data or {})

    def _merge(self, data: dict[str, str | None]) -> None:
        """Merge-patch `data` (None deletes a key); creates the ConfigMap on first write."""
        patched = self._call("patch", lambda: self.core.patch_namespaced_config_map(
            self.config_map, self.namespace, {"data": data}, _request_timeout=REQUEST_TIMEOUT_S), missing_ok=True)
        if patched is None:
            body = {"metadata": {"name": self.config_map, "labels": {"app.kubernetes.io/part-of": "fraud-rollout"}},
                    "data": {k: v for k, v in data.items() if v is not None}}
            self._call("create", lambda: self.core.create_namespaced_config_map(
                self.namespace, body, _request_timeout=REQUEST_TIMEOUT_S))

    def read(self) -> dict | None:
        data = self._data()
        if not data or not data.get("state"):
            return None
        try:
            body = json.loads(data["state"])
        except ValueError:  # edited by hand: no state to trust
            return None
        return body if isinstance(body, dict) else None

    def write(self, state: Mapping[str, Any]) -> None:
        from fraud.files import json_safe

        self._merge({"state": json.dumps(json_safe(dict(state)), allow_nan=False)})

    def is_running(self, state: Mapping[str, Any]) -> bool:
        try:
            beat = datetime.fromisoformat(str(state.get("heartbeat")))
        except ValueError:
            return False
        now = datetime.now(UTC)
        try:
            busy_until = datetime.fromisoformat(str(state.get("busy_until")))
        except ValueError:
            busy_until = beat
        return (now - beat).total_seconds() < self.lease_s or now < busy_until

    def request_abort(self, reason: str) -> None:
        self._merge({"abort": json.dumps(_abort_body(reason))})

    def abort_request(self) -> str:
        data = self._data() or {}
        try:
            return _describe_abort(json.loads(data["abort"])) if data.get("abort") else ""
        except ValueError:
            return "abort requested (unreadable request)"

    def clear_abort(self) -> None:
        if (self._data() or {}).get("abort"):
            self._merge({"abort": None})
