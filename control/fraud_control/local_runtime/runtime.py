"""The local canary runtime behind `fraud-rollout serve`: Knative's part, on loopback.

It follows the InferenceService in the state dir (see `local_state`): one predictor process per
revision that takes traffic or may take it back at once (rolled-out, previous, latest ready), and
one transformer that splits each request at the transformer→predictor hop by the status's traffic
percents. On a manifest change it starts the predictors the new status needs and waits until they
are ready, then swaps the transformer's routes file (the transformer picks it up on its next
request); predictors no longer needed are stopped only after `drain_seconds`, so requests already
on their way finish. With a prediction-log store it also runs the sink the transformer posts to,
started again on the same port when it exits, as a crashed predictor is, and never otherwise: the
models its feedback signals are of go to it in a file it re-reads (`SINK_MODELS_FILE`); without one, the
transformer posts to the InferenceService's logger URL, if any. `runtime.json` in the state dir
reports the URLs and the applied generation.

One runtime owns a state dir (DESIGN 12): it holds an exclusive `flock` on `runtime.lock` for its
whole life, with its pid and URL written in it and in `runtime.json`. A second `serve` on the same
state dir fails before touching any file and names the owner. The kernel drops a flock when its
process dies, so a killed `serve` leaves no lock behind.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from fraud.files import write_json
from fraud.processes import LOOPBACK, PortInUse, ServerFailed, ServerProcess, stop_all
from fraud.routes import Backend, write_routes

from fraud_control.inferenceservice import isvc
from fraud_control.inferenceservice.local_state import LocalInferenceService, local_artifact_path
from fraud_control.local_runtime.servers import start_predictor, start_sink, start_transformer
from fraud_control.prediction_log.feedback import monitored_models
from fraud_control.prediction_log.store import redacted_url

logger = logging.getLogger(__name__)

ROUTES_FILE = "routes.json"
RUNTIME_FILE = "runtime.json"
LOCK_FILE = "runtime.lock"
#: The transformer's shadow pairs (one JSON line per shadowed request; `fraud-rollout replay` joins them).
PAIRS_FILE = "shadow-pairs.jsonl"
#: The prediction log's default store: a SQLite file in the state dir (one InferenceService, one log).
PREDICTION_LOG_FILE = "prediction-log.sqlite"
#: The artifact roots the runtime's sink reports feedback signals on (its `--models-file`).
SINK_MODELS_FILE = "sink-models.json"
#: At most one start of the runtime's prediction-log sink per this interval: a sink that cannot
#: start (its store down) is retried, not respawned on every pass of the follow loop.
SINK_RESTART_SECONDS = 5.0


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


def revision_artifact(revisions: dict[str, dict], name: str) -> Path:
    """The local artifact a predictor revision serves (the store marks only local ones ready)."""
    path = local_artifact_path(revisions[name]["storageUri"])
    if path is None:
        raise ServerFailed(f"revision {name}: {revisions[name]['storageUri']!r} is not a local artifact")
    return path


def needed_revisions(manifest: dict) -> list[str]:
    """Revisions to keep running: every one in the traffic block, plus rollback/promote targets."""
    predictor = manifest.get("status", {}).get("components", {}).get("predictor", {})
    names = [entry["revisionName"] for entry in predictor.get("traffic", [])]
    names += [predictor.get(key) for key in ("latestReadyRevision", "latestRolledoutRevision",
                                              "previousRolledoutRevision")]
    return list(dict.fromkeys(name for name in names if name))


def feedback_models(manifest: dict, revisions: dict[str, dict]) -> tuple[Path, ...]:
    """The artifacts of the revisions `manifest` keeps running, the rolled-out one first (the sink
    compares inputs with its feature profile), for the sink's feedback signals (`--model`); none,
    with a warning, when one is not a local artifact or lacks the profiles the signals need."""
    rolled_out = manifest.get("status", {}).get("components", {}).get("predictor", {}).get("latestRolledoutRevision")
    names = sorted(needed_revisions(manifest), key=lambda name: name != rolled_out)
    try:
        roots = tuple(dict.fromkeys(revision_artifact(revisions, name) for name in names))
        monitored_models(roots)
    except (ServerFailed, ValueError) as error:
        logger.warning("the prediction-log sink reports no feedback signals: %s", error)
        return ()
    return roots


def read_runtime(state_dir: Path) -> dict:
    """What a running `serve` reports (empty if none, or if its process is gone: a killed serve)."""
    try:
        body = json.loads((Path(state_dir) / RUNTIME_FILE).read_text())
    except FileNotFoundError:
        return {}
    return body if pid_alive(body.get("pid")) else {}


def pid_alive(pid: object) -> bool:
    """Whether process `pid` runs on this host."""
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


class StateDirBusy(ValueError):
    """Another `serve` owns this state dir (or it cannot be a directory); the message names it."""


@dataclass
class StateDirOwner:
    """This process's exclusive flock on `<state_dir>/runtime.lock` (see the module docstring)."""

    state_dir: Path
    url: str
    handle: IO[str]

    @property
    def owner(self) -> dict:
        return {"pid": os.getpid(), "url": self.url}

    def release(self) -> None:
        if not self.handle.closed:
            self.handle.close()  # closing the descriptor drops the flock


def claim_state_dir(state_dir: Path, url: str) -> StateDirOwner:
    """Own `state_dir` or raise StateDirBusy naming the `serve` that does. Touches no other file."""
    state_dir = Path(state_dir)
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        handle = open(state_dir / LOCK_FILE, "a+")
    except OSError as error:
        raise StateDirBusy(f"--state-dir {state_dir}: cannot be used ({error.strerror}); pass a directory "
                           "this user can write") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        text = handle.read()
        handle.close()
        try:
            running = json.loads(text)
        except ValueError:
            running = {}
        if not pid_alive(running.get("pid")):  # the owner has the lock but has not written itself in yet
            running = {}
        raise StateDirBusy(f"--state-dir {state_dir}: already served by `fraud-rollout serve` pid "
                           f"{running.get('pid', '?')} at {running.get('url', '?')}; stop it (kill "
                           f"{running.get('pid', 'it')}) or pass another --state-dir") from None
    owner = StateDirOwner(state_dir, url, handle)
    handle.truncate(0)
    handle.write(json.dumps(owner.owner))
    handle.flush()
    return owner


@dataclass
class LocalRuntime:
    service: LocalInferenceService
    http_port: int = 8080
    max_rows: int | None = None
    shadow_percent: float | None = None  # None: the transformer's default share; 0: off
    #: The store of a prediction-log sink the runtime starts, which the transformer posts to. None: the
    #: transformer posts to the InferenceService's own logger URL (`deploy --prediction-log-url`, a sink
    #: run by someone else, as in the cluster), or logs nothing when the manifest has no logger.
    prediction_log: str | None = None
    drain_seconds: float = 5.0
    poll_seconds: float = 0.2
    log_dir: Path | None = None
    predictors: dict[str, ServerProcess] = field(default_factory=dict)
    retiring: dict[str, tuple[ServerProcess, float]] = field(default_factory=dict)
    transformer: ServerProcess | None = None
    sink: ServerProcess | None = None
    logger_url: str | None = None  # where the transformer posts its CloudEvents (None: no prediction log)
    applied_generation: int = 0
    owner: StateDirOwner | None = None
    serving: bool = False  # the transformer answered ready: runtime.json names it only from then on
    _stamp: int | None = None
    _sink_started: float = field(default_factory=time.monotonic)
    _sink_models: tuple[Path, ...] = ()  # the artifacts the sink's feedback signals are of

    def __post_init__(self) -> None:
        self.state_dir = self.service.state_dir
        self.routes_file = self.state_dir / ROUTES_FILE
        self.logs: Path = self.log_dir or self.state_dir / "logs"
        self.pairs_log = self.state_dir / PAIRS_FILE
        self.sink_models_file = self.state_dir / SINK_MODELS_FILE

    def start(self) -> None:
        """Transformer and predictors start together; returns once the transformer is ready, which it
        reports only when its routes name a ready predictor."""
        if self.owner is None:
            self.owner = claim_state_dir(self.state_dir, f"http://{LOOPBACK}:{self.http_port}")
        try:
            manifest = self.service.get()
            self.routes_file.unlink(missing_ok=True)  # a stale file (a killed serve's) would name dead ports
            self._write_runtime()
            if self.prediction_log is not None:  # first: the transformer's first answer is logged
                self._write_sink_models(feedback_models(manifest, self.service.revisions()))
                self.sink = start_sink(self.prediction_log, self.logs,
                                       models_file=self.sink_models_file).wait_ready()
                self._sink_started = time.monotonic()
            self.logger_url = self.sink.url if self.sink else isvc.transformer_logger_url(manifest)
            self.transformer = start_transformer(transformer_contract_dir(manifest), self.logs,
                                                 routes_file=self.routes_file, max_rows=self.max_rows,
                                                 shadow_percent=self.shadow_percent, pairs_log=self.pairs_log,
                                                 logger_url=self.logger_url,
                                                 port=self.http_port, label="transformer",
                                                 port_option="--http-port")
            self.apply(manifest)
            self.transformer.wait_ready()
        except BaseException:
            self.stop()
            raise
        self.serving = True
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
                started.append(name)
                self.predictors[name] = start_predictor(revision_artifact(revisions, name), self.logs, label=name)
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
        self._follow_models(manifest, revisions)
        self._write_runtime()

    def _follow_models(self, manifest: dict, revisions: dict[str, dict]) -> None:
        """A new canary, a promote or a rollback changes the models the sink reports on: their roots
        are rewritten to its models file, which it re-reads on its next scrape.

        Not a restart: the sink was once started again with them, and during the seconds that took
        (2–6 s here) it refused the transformer's posts; the events queued meanwhile were lost when
        `serve` stopped within that gap (the demo stops it right after its promote), leaving request
        events whose responses never came (issue 19). A handover to a second sink would need its
        own port and a transformer told of it; one sink that never stops has no gap to cover."""
        if self.sink is None or self.prediction_log is None:
            return
        models = feedback_models(manifest, revisions)
        if models == self._sink_models:
            return
        logger.info("prediction-log sink now reports the feedback signals of %s",
                    ", ".join(map(str, models)) or "no model")
        self._write_sink_models(models)

    def _write_sink_models(self, models: tuple[Path, ...]) -> None:
        """The sink's models file, replaced atomically (the sink never reads half of it)."""
        write_json(self.sink_models_file, [str(root) for root in models])
        self._sink_models = models

    def step(self) -> None:
        """One pass of the follow loop: apply a changed manifest, stop drained predictors, restart a dead sink."""
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
        self._restart_dead_sink(now)

    def _restart_dead_sink(self, now: float) -> None:
        """A sink this runtime runs that exited is started again on its port, the URL the transformer
        posts to, and its store; the transformer's payload logger keeps the events meanwhile (DESIGN 15)."""
        if self.sink is None or self.prediction_log is None or self.sink.alive():
            return
        if now < self._sink_started + SINK_RESTART_SECONDS:
            return
        logger.warning("prediction-log sink exited with %s; restarting it on port %d", self.sink.process.returncode,
                       self.sink.port)
        self._sink_started = now
        try:
            self.sink = start_sink(self.prediction_log, self.logs, port=self.sink.port,
                                   models_file=self.sink_models_file)
        except PortInUse as error:  # another process took the port: retried on a later pass
            logger.error("prediction-log sink not restarted: %s", error)

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
        if self.sink is not None:  # last: the transformer flushes its queued events on its way out
            self.sink.stop()
        if self.owner is not None:  # only the owner's files are ours to remove
            (self.state_dir / RUNTIME_FILE).unlink(missing_ok=True)
            self.routes_file.unlink(missing_ok=True)
            self.sink_models_file.unlink(missing_ok=True)
            self.owner.release()
            self.owner = None

    def _write_runtime(self) -> None:
        body = {
            **(self.owner.owner if self.owner else {"pid": os.getpid()}),
            "transformer": self.transformer.url if self.transformer and self.serving else None,
            "appliedGeneration": self.applied_generation,
            "predictors": {name: server.url for name, server in self.predictors.items()},
            "draining": sorted(self.retiring),
            "pairsLog": str(self.pairs_log),
            # never a password in a file: a PostgreSQL URL's is redacted
            "predictionLog": {"store": redacted_url(self.prediction_log) if self.prediction_log else None,
                              "sink": self.logger_url},
        }
        write_json(self.state_dir / RUNTIME_FILE, body)
