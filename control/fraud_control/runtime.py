"""The local canary runtime behind `fraud-rollout serve`: Knative's part, on loopback.

It follows the InferenceService in the state dir (see `local_state`): one predictor process per
revision that takes traffic or may take it back at once (rolled-out, previous, latest ready), and
one transformer that splits each request at the transformer→predictor hop by the status's traffic
percents. On a manifest change it starts the predictors the new status needs and waits until they
are ready, then swaps the transformer's routes file (the transformer picks it up on its next
request); predictors no longer needed are stopped only after `drain_seconds`, so requests already
on their way finish. `runtime.json` in the state dir reports the URLs and the applied generation.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from fraud.files import write_json
from fraud.routes import Backend, write_routes

from fraud_control import isvc
from fraud_control.local_state import LocalInferenceService, local_artifact_path
from fraud_control.processes import ServerFailed, ServerProcess, start_predictor, start_transformer, stop_all

logger = logging.getLogger(__name__)

ROUTES_FILE = "routes.json"
RUNTIME_FILE = "runtime.json"


def transformer_contract_dir(manifest: dict) -> Path:
    for container in manifest["spec"].get("transformer", {}).get("containers", []):
        for env in container.get("env", []):
            if env.get("name") == "STORAGE_URI":
                path = local_artifact_path(env.get("value", ""))
                if path is not None:
                    return path
    path = local_artifact_path(isvc.predictor_storage_uri(manifest))
    if path is None:
        raise ValueError("the InferenceService has no local artifact for the transformer's feature contract")
    return path


def needed_revisions(manifest: dict) -> list[str]:
    """Revisions to keep running: every one in the traffic block, plus rollback/promote targets."""
    predictor = manifest.get("status", {}).get("components", {}).get("predictor", {})
    names = [entry["revisionName"] for entry in predictor.get("traffic", [])]
    names += [predictor.get(key) for key in ("latestReadyRevision", "latestRolledoutRevision",
                                              "previousRolledoutRevision")]
    return list(dict.fromkeys(name for name in names if name))


def read_runtime(state_dir: Path) -> dict:
    """What a running `serve` reports (empty if none)."""
    try:
        return json.loads((Path(state_dir) / RUNTIME_FILE).read_text())
    except FileNotFoundError:
        return {}


@dataclass
class LocalRuntime:
    service: LocalInferenceService
    http_port: int = 8080
    max_rows: int | None = None
    drain_seconds: float = 5.0
    poll_seconds: float = 0.2
    log_dir: Path | None = None
    predictors: dict[str, ServerProcess] = field(default_factory=dict)
    retiring: dict[str, tuple[ServerProcess, float]] = field(default_factory=dict)
    transformer: ServerProcess | None = None
    applied_generation: int = 0
    _stamp: int | None = None

    def __post_init__(self) -> None:
        self.state_dir = self.service.state_dir
        self.routes_file = self.state_dir / ROUTES_FILE
        self.log_dir = self.log_dir or self.state_dir / "logs"

    def start(self) -> None:
        """Transformer and predictors start together; returns once the transformer is ready, which it
        reports only when its routes name a ready predictor."""
        manifest = self.service.get()
        self.routes_file.unlink(missing_ok=True)  # a stale file would name dead ports
        self.transformer = start_transformer(transformer_contract_dir(manifest), self.log_dir,
                                             routes_file=self.routes_file, max_rows=self.max_rows,
                                             port=self.http_port, label="transformer")
        try:
            self.apply(manifest)
            self.transformer.wait_ready()
        except BaseException:
            self.stop()
            raise
        self._write_runtime()

    def apply(self, manifest: dict) -> None:
        """Make the running predictors and the routes match `manifest`'s status."""
        revisions = self.service.revisions()
        needed = needed_revisions(manifest)
        started = []
        for name in needed:
            if name in self.retiring:
                self.predictors[name] = self.retiring.pop(name)[0]
            if name not in self.predictors or not self.predictors[name].alive():
                record = revisions[name]
                started.append(name)
                self.predictors[name] = start_predictor(local_artifact_path(record["storageUri"]), self.log_dir,
                                                        label=name)
        traffic = manifest["status"]["components"]["predictor"].get("traffic", [])
        # Routes change once every revision that will take traffic is ready. A revision kept at 0 %
        # (a rolled-back canary, perhaps restarting after a crash) starts alongside and must not
        # hold the rollback up.
        carrying = {entry["revisionName"] for entry in traffic if int(entry["percent"]) > 0}
        for name in needed:
            if name in carrying:
                self.predictors[name].wait_ready()
            if name in started:
                logger.info("predictor %s (%s) %s at %s", name, revisions[name]["modelVersion"],
                            "ready" if name in carrying else "starting (0 % of traffic)", self.predictors[name].url)
        backends = [Backend(self.predictors[entry["revisionName"]].url, entry["revisionName"],
                            revisions[entry["revisionName"]]["modelVersion"], int(entry["percent"]))
                    for entry in traffic]
        generation = int(manifest["metadata"]["generation"])
        write_routes(self.routes_file, backends, generation)
        now = time.monotonic()
        for name in [name for name in self.predictors if name not in needed]:
            self.retiring[name] = (self.predictors.pop(name), now + self.drain_seconds)
        self.applied_generation = generation
        logger.info("generation %d applied: %s", generation,
                    ", ".join(f"{b.revision} ({b.model_version}) {b.percent}%" for b in backends))
        self._write_runtime()

    def step(self) -> None:
        """One pass of the follow loop: apply a changed manifest, stop drained predictors."""
        try:
            stamp = os.stat(self.service.state_file).st_mtime_ns
        except FileNotFoundError:
            stamp = None
        if stamp is not None and stamp != self._stamp:
            self._stamp = stamp
            manifest = self.service.get()
            if manifest["metadata"]["generation"] != self.applied_generation or any(
                    name not in self.predictors or not self.predictors[name].alive()
                    for name in needed_revisions(manifest)):
                try:
                    self.apply(manifest)
                except ServerFailed as error:
                    # like a Knative revision that never turns ready: the old split keeps serving
                    logger.error("generation %s not applied, the previous split keeps serving: %s",
                                 manifest["metadata"]["generation"], error)
        now = time.monotonic()
        for name, (server, deadline) in list(self.retiring.items()):
            if now >= deadline:
                server.stop()
                del self.retiring[name]
                self._write_runtime()
        for name, server in list(self.predictors.items()):
            if not server.alive():
                logger.warning("predictor %s exited; restarting it", name)
                self._stamp = None  # re-apply on the next pass

    def follow(self, stop_after: float | None = None) -> None:
        """Follow manifest changes until interrupted (or `stop_after` seconds)."""
        end = None if stop_after is None else time.monotonic() + stop_after
        self._stamp = os.stat(self.service.state_file).st_mtime_ns
        while end is None or time.monotonic() < end:
            self.step()
            time.sleep(self.poll_seconds)  # the watch interval for manifest changes

    def stop(self) -> None:
        servers = list(self.predictors.values()) + [server for server, _ in self.retiring.values()]
        if self.transformer is not None:
            servers.append(self.transformer)
        stop_all(servers)
        (self.state_dir / RUNTIME_FILE).unlink(missing_ok=True)
        self.routes_file.unlink(missing_ok=True)

    def _write_runtime(self) -> None:
        body = {
            "pid": os.getpid(),
            "transformer": self.transformer.url if self.transformer else None,
            "appliedGeneration": self.applied_generation,
            "predictors": {name: server.url for name, server in self.predictors.items()},
            "draining": sorted(self.retiring),
        }
        write_json(self.state_dir / RUNTIME_FILE, body)
