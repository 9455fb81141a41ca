"""The prediction-log sink: receives KServe's payload-logger CloudEvents over HTTP and records them in
the prediction store (DESIGN 15).

`POST /` takes one event in binary mode (KServe's agent: `ce-*` headers, the raw v2 body) or
structured mode (`application/cloudevents+json`), or a list of structured events
(`application/cloudevents-batch+json`, what the local runtime's poster sends). A request is answered
200 `{"accepted": n, "duplicates": d}` only once its events are committed; a bad event is a 400
`{"error": …}` and rejects its whole request (nothing half written); a store failure is a 503 (the
poster retries; KServe's agent does not). `GET /healthz` is 200 while the store answers,
`GET /metrics` is Prometheus text: the sink's own metrics and, given the models it logs (`--model`,
their artifact roots), the label-free feedback signals of the served rows of the last
`--feedback-window` (`fraud_control.prediction_log.feedback_metrics`: flag rate, score shift and CBPE precision
and recall per version, drift per feature; the alerts of manifests/monitoring read them). Instead of
`--model`, `--models-file` names a JSON list of artifact roots that someone else rewrites (the local
runtime, on a new canary, a promote or a rollback): the sink re-reads it when it changes, without
a restart. Besides
KServe's two event types it takes the transformer's shadow pairs (`fraud.inference_log.PAIR_EVENT`).

Group commit: the handlers queue their events; one writer thread takes all that are waiting and
commits them in one transaction (SQLite: one fsync for all of them), then answers each request.

Feedback signals read the window from the store on a connection of their own (not the writer's),
in a worker thread, at most once every `FEEDBACK_CACHE_S` seconds: concurrent scrapes share one
computation and its result. A scrape waits for it at most `--scrape-wait` seconds (0.5), then answers
with the signals computed before (none yet after a start or a change of models); a busy window
never times a scrape out.

    python -m fraud_control.prediction_log.sink --store URL --port P [--host 127.0.0.1] [--retention-days D]
        [--model ROOT ... | --models-file FILE] [--feedback-window 1h] [--scrape-wait 0.5]
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import json
import logging
import math
import queue
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import uvicorn
from cloudevents.exceptions import GenericException
from cloudevents.http import CloudEvent, from_dict, from_http
from fraud.durations import parse_duration
from fraud.inference_log import EVENT_TYPES, LogEvent, log_event
from fraud.processes import LOOPBACK, port_holder
from fraud.settings import Settings
from fraud_canary.feedback import FeedbackSignals
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fraud_control.prediction_log.feedback import MonitoredModels, monitored_models, store_signals
from fraud_control.prediction_log.feedback_metrics import FeedbackCollector
from fraud_control.prediction_log.store import PredictionStore, RecordResult, StoreError, open_store

BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
#: The store URL when --store is not given (a pod reads it from a Secret).
STORE_ENV = "PREDICTION_LOG_STORE_URL"  # a field of fraud.settings.Settings
DEFAULT_RETENTION_DAYS = 90
RETENTION_INTERVAL_S = 3600.0
DEFAULT_FEEDBACK_WINDOW = "1h"
#: Feedback signals are recomputed at most this often: a window of 100k rows takes ≈ 0.8 s here
#: (SQLite), and Prometheus replicas or a person refreshing must not each recompute it.
FEEDBACK_CACHE_S = 10.0
#: A scrape waits at most this long for a recomputation, then answers with the last signals: a window
#: of 350k rows takes ≈ 5 s to compute here, and Prometheus gives up on a scrape after 10 s.
SCRAPE_WAIT_S = 0.5
#: Short names for the metrics' event_type label (a ce-type is free text: unbounded label values).

log = logging.getLogger(__name__)


class BadEvent(ValueError):
    """An event the sink refuses (400); the message names it and what is wrong."""


class SinkMetrics:
    """The sink's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter("fraud_sink_events_total", "CloudEvents received, by type and outcome "
                              "(accepted | duplicate | rejected; a refused HTTP request counts once, type unknown)", ["event_type", "outcome"], registry=self.registry)
        self.rows = Counter("fraud_sink_rows_total", "Prediction rows written (request and response rows each count)",
                            registry=self.registry)
        self.commit_seconds = Histogram("fraud_sink_commit_seconds", "Time to commit one group of events",
                                        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
                                        registry=self.registry)
        self.store_errors = Counter("fraud_sink_store_errors_total", "Groups of events the store failed to commit "
                                    "(their requests got 503)", registry=self.registry)
        self.feedback_errors = Counter("fraud_sink_feedback_errors_total", "Feedback computations the store failed "
                                       "(their scrapes had no feedback signals)", registry=self.registry)


class FeedbackCache:
    """The latest feedback signals, recomputed by `compute` in a worker thread when older than
    `ttl_s` or when `models_stamp` changed (the monitored models did: signals of the old ones would
    read as current, so they are dropped at once); concurrent callers share one computation, and
    each waits for it at most `wait_s` (None: to its end), then takes the signals it has. A store
    failure counts as an error and leaves no signals (stale ones would read as current) until the
    next computation."""

    def __init__(self, compute: Callable[[], FeedbackSignals | None], metrics: SinkMetrics,
                 ttl_s: float = FEEDBACK_CACHE_S, clock: Callable[[], float] = time.monotonic,
                 models_stamp: Callable[[], object] = lambda: None, wait_s: float | None = SCRAPE_WAIT_S) -> None:
        self._compute, self._metrics, self._ttl_s, self._clock = compute, metrics, ttl_s, clock
        self._models_stamp, self._wait_s = models_stamp, wait_s
        self._running: asyncio.Future | None = None
        self._computed_at: float | None = None
        self._computed_for: object = None
        self.latest: FeedbackSignals | None = None

    async def refresh(self) -> FeedbackSignals | None:
        stamp = self._models_stamp()
        if self._running is None and (self._computed_at is None or stamp != self._computed_for
                                      or self._clock() - self._computed_at >= self._ttl_s):
            if stamp != self._computed_for:
                self.latest = None
            self._computed_for = stamp
            self._running = asyncio.ensure_future(self._recompute())
        if self._running is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._running), self._wait_s)
        return self.latest

    async def _recompute(self) -> None:
        try:
            self.latest = await run_in_threadpool(self._compute)
        except StoreError as error:
            self._metrics.feedback_errors.inc()
            log.warning("feedback signals: %s", error)
            self.latest = None
        finally:
            self._computed_at = self._clock()
            self._running = None


@dataclass
class _Pending:
    events: Sequence[LogEvent]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future = field(repr=False)

    def resolve(self, outcome: RecordResult | StoreError) -> None:
        self.loop.call_soon_threadsafe(_settle, self.future, outcome)


def _settle(future: asyncio.Future, outcome: RecordResult | StoreError) -> None:
    if future.done():  # the client went away; its events are committed anyway (a retry is a duplicate)
        return
    if isinstance(outcome, StoreError):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


class GroupCommit:
    """One writer thread committing every waiting request's events in one transaction."""

    def __init__(self, store: PredictionStore, metrics: SinkMetrics) -> None:
        self._store = store
        self._metrics = metrics
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="prediction-sink-writer", daemon=True)
        self._thread.start()

    async def record(self, events: Sequence[LogEvent]) -> RecordResult:
        """The result of `events` once committed; raises StoreError when the commit failed."""
        loop = asyncio.get_running_loop()
        pending = _Pending(events, loop, loop.create_future())
        self._queue.put(pending)
        return await pending.future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            while True:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True  # commit what came before the stop, then end
                    break
                group.append(more)
            self._commit(group)

    def _commit(self, group: list[_Pending]) -> None:
        events = [event for pending in group for event in pending.events]
        start = time.perf_counter()
        try:
            result = self._store.record(events)
        except StoreError as error:
            self._metrics.store_errors.inc()
            log.warning("store failed on %d events: %s", len(events), error)
            for pending in group:
                pending.resolve(error)
            return
        self._metrics.commit_seconds.observe(time.perf_counter() - start)
        offset = 0
        for pending in group:
            recorded = result.recorded[offset:offset + len(pending.events)]
            offset += len(pending.events)
            rows = sum(event.rows for event, new in zip(pending.events, recorded) if new)
            pending.resolve(RecordResult(recorded, rows))
        self._metrics.rows.inc(result.rows)


def events_of(content_type: str, headers: dict[str, str], body: bytes) -> list[LogEvent]:
    """The log events of one HTTP request (binary, structured or batch mode); BadEvent naming the first bad one.

    The SDK fills a missing id or time with a fresh one, which would defeat idempotency and date a
    prediction by its arrival: both are required here."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == BATCH_CONTENT_TYPE:
        batch = _json(body, "the batch")
        if not isinstance(batch, list):
            raise BadEvent("a batch must be a JSON list of structured CloudEvents")
        return [_log_event(_structured(item, f"batch event {i}")) for i, item in enumerate(batch)]
    if media_type == STRUCTURED_CONTENT_TYPE:
        return [_log_event(_structured(_json(body, "the event"), "the event"))]
    try:
        event = from_http(headers, body, data_unmarshaller=lambda data: data)
    except GenericException as error:
        raise BadEvent(f"not a CloudEvent: {_one_line(error)}") from None
    if "ce-time" not in headers:
        raise BadEvent(f"event {headers.get('ce-id', '')}: no ce-time header (when the request was served)")
    return [_log_event(event)]


def _json(body: bytes, what: str) -> object:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise BadEvent(f"{what} is not JSON ({error})") from None


def _structured(item: object, where: str) -> CloudEvent:
    if not isinstance(item, dict):
        raise BadEvent(f"{where} is not a structured CloudEvent (a JSON object)")
    missing = [name for name in ("specversion", "id", "source", "type", "time") if not item.get(name)]
    if missing:
        raise BadEvent(f"{where}: not a CloudEvent: missing {', '.join(missing)}")
    if "data_base64" in item:  # binary data in a structured event
        try:
            data: object = base64.b64decode(str(item["data_base64"]), validate=True)
        except binascii.Error:
            raise BadEvent(f"{where}: data_base64 is not base64") from None
        item = {**{k: v for k, v in item.items() if k != "data_base64"}, "data": data}
    try:
        return from_dict(item)
    except GenericException as error:
        raise BadEvent(f"{where}: not a CloudEvent: {_one_line(error)}") from None


def _log_event(event: CloudEvent) -> LogEvent:
    attributes = event.get_attributes()
    event_id, event_type, stamp = str(attributes.get("id") or ""), attributes.get("type"), attributes.get("time")
    if event_type not in EVENT_TYPES:
        raise BadEvent(f"event {event_id}: unknown type {event_type!r} (expected one of {', '.join(EVENT_TYPES)})")
    try:
        moment = datetime.fromisoformat(str(stamp))
        return log_event(event_id, event_type, moment, event.get_data())
    except ValueError as error:
        message = str(error) if str(error).startswith("event ") else f"event {event_id}: time {stamp!r}: {error}"
        raise BadEvent(message) from None


def build_app(store: PredictionStore, metrics: SinkMetrics | None = None,
              feedback: FeedbackCache | None = None) -> Starlette:
    """The sink's ASGI app over an open store (its writer thread runs from startup to shutdown);
    with `feedback`, /metrics also exports its signals."""
    metrics = metrics or SinkMetrics()
    writer: list[GroupCommit] = []
    if feedback is not None:
        metrics.registry.register(FeedbackCollector(lambda: feedback.latest))

    async def receive(request: Request) -> Response:
        body = await request.body()
        try:
            events = events_of(request.headers.get("content-type", ""), dict(request.headers), body)
        except BadEvent as error:
            metrics.events.labels("unknown", "rejected").inc()
            return JSONResponse({"error": str(error)}, status_code=400)
        try:
            result = await writer[0].record(events)
        except StoreError as error:
            return JSONResponse({"error": f"the prediction store failed, retry: {error}"}, status_code=503)
        for event, new in zip(events, result.recorded):
            metrics.events.labels(event.kind, "accepted" if new else "duplicate").inc()
        return JSONResponse({"accepted": result.accepted, "duplicates": result.duplicates})

    async def healthz(request: Request) -> Response:
        try:
            await run_in_threadpool(store.ping)
        except StoreError as error:
            return JSONResponse({"error": str(error)}, status_code=503)
        return JSONResponse({"status": "ok", "store": store.backend})

    async def prometheus(request: Request) -> Response:
        if feedback is not None:
            await feedback.refresh()
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        writer.append(GroupCommit(store, metrics))
        try:
            yield
        finally:
            await run_in_threadpool(writer.pop().close)  # commits and answers what is queued

    return Starlette(routes=[Route("/", receive, methods=["POST"]), Route("/healthz", healthz, methods=["GET"]),
                             Route("/metrics", prometheus, methods=["GET"])], lifespan=lifespan)


def window_signals(url: str, models: Callable[[], MonitoredModels | None],
                   window: timedelta) -> Callable[[], FeedbackSignals | None]:
    """A computation of the feedback signals of the rows served in the `window` before it runs, for
    the models `models()` returns then (None: no signals)."""
    def compute() -> FeedbackSignals | None:
        monitored = models()
        if monitored is None:
            return None
        return store_signals(url, monitored.profiles, monitored.feature_profile, since=datetime.now(UTC) - window)

    return compute


class ModelsFile:
    """The models to report on, as a JSON list of artifact roots (the rolled-out one first, whose
    feature profile the inputs are compared with) in a file another process replaces atomically.

    The local runtime rewrites it on a new canary, a promote or a rollback. The sink used to be
    restarted with new `--model` flags instead, and for the seconds it took to start again (imports,
    profiles; 2–6 s here) the transformer's posts were refused: the demo's `serve` stopped within
    that gap after its promote, and the responses of the requests in flight were lost while their
    requests were stored, as unattributed failures (issue 19). Re-read in place, the sink never
    stops listening."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._read_at: tuple[int, int, int] | None = None
        self._models: MonitoredModels | None = None

    def stamp(self) -> tuple[int, int, int] | None:
        """What changes when the file is replaced or rewritten (None: no file, so no models)."""
        try:
            status = self.path.stat()
        except FileNotFoundError:
            return None
        return status.st_ino, status.st_mtime_ns, status.st_size

    def current(self) -> MonitoredModels | None:
        """The models the file names now, re-read only when it changed; None when it names none or
        cannot be read (a warning: stale models' signals would read as current)."""
        stamp = self.stamp()
        if stamp != self._read_at:
            self._read_at, self._models = stamp, self._read() if stamp is not None else None
            if self._models is not None:
                log.info("feedback signals of %s (%s)", ", ".join(self._models.versions), self.path)
        return self._models

    def _read(self) -> MonitoredModels | None:
        try:
            roots = json.loads(self.path.read_text())
            if not isinstance(roots, list) or not all(isinstance(root, str) for root in roots):
                raise ValueError("not a JSON list of artifact roots")
            return monitored_models(roots) if roots else None
        except (OSError, ValueError) as error:  # JSONDecodeError is a ValueError
            log.warning("--models-file %s: %s; no feedback signals until it changes", self.path, _one_line(error))
            return None


class Retention(threading.Thread):
    """Deletes what is older than `days` every hour (the first pass runs before the sink serves)."""

    def __init__(self, store: PredictionStore, days: int) -> None:
        super().__init__(name="prediction-sink-retention", daemon=True)
        self.store, self.days = store, days
        self._stop = threading.Event()

    def sweep(self) -> int:
        return self.store.delete_older_than(datetime.now(UTC) - timedelta(days=self.days))

    def run(self) -> None:
        while not self._stop.wait(RETENTION_INTERVAL_S):
            try:
                deleted = self.sweep()
            except StoreError as error:
                log.warning("retention failed (retried in an hour): %s", error)
                continue
            if deleted:
                log.info("retention: deleted %d predictions older than %d days", deleted, self.days)

    def stop(self) -> None:
        self._stop.set()


def _positive_days(text: str) -> int:
    try:
        days = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of days") from None
    if days < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1 day")
    return days


def _scrape_wait(text: str) -> float | None:
    """argparse type: seconds >= 0, or inf (None: wait for the computation to end)."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0 (or inf)")
    return None if math.isinf(seconds) else seconds


def _window(text: str) -> timedelta:
    """argparse type: a positive duration, `90s`, `30m`, `1h`, `7d`."""
    window = parse_duration(text)
    if window is None or window <= timedelta(0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive duration (90s, 30m, 1h, 7d)")
    return window


def _port(text: str) -> int:
    """argparse type: a TCP port to listen on, 0..65535 (0: a free one)."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (0..65535; 0 picks a free one)")
    return port


def add_arguments(parser: argparse.ArgumentParser, port: Callable[[str], int] = _port) -> None:
    """The sink's flags (shared by `python -m fraud_control.prediction_log.sink` and `fraud-rollout sink serve`);
    `port` is the --port type (`fraud-rollout` passes its range-checked `args.listen_port`)."""
    parser.add_argument("--store", default=None,
                        help=f"a SQLite file (path or sqlite:///PATH) or postgresql://… URL (default ${STORE_ENV}, "
                             "which keeps a password off the command line)")
    parser.add_argument("--port", type=port, required=True, help="HTTP port (0: a free one, printed at start)")
    parser.add_argument("--host", default=LOOPBACK, help=f"address to listen on (default {LOOPBACK})")
    parser.add_argument("--retention-days", type=_positive_days, default=DEFAULT_RETENTION_DAYS,
                        help=f"delete predictions and labels older than this, at start and hourly "
                             f"(default {DEFAULT_RETENTION_DAYS})")
    models = parser.add_mutually_exclusive_group()
    models.add_argument("--model", dest="models", action="append", default=[], metavar="DIR",
                        help="a model artifact root whose served rows /metrics reports feedback signals on (its "
                             "version from its metadata); repeat for each version served, the first gives the "
                             "feature profile")
    models.add_argument("--models-file", type=Path, default=None, metavar="FILE",
                        help="a JSON list of such roots, re-read whenever it changes (what the local runtime "
                             "writes as its served models change); instead of --model")
    parser.add_argument("--feedback-window", type=_window, default=_window(DEFAULT_FEEDBACK_WINDOW),
                        metavar="DURATION", help=f"served rows the feedback signals are over: the last 90s, 30m, "
                                                 f"1h, 7d (default {DEFAULT_FEEDBACK_WINDOW}; with --model)")
    parser.add_argument("--scrape-wait", type=_scrape_wait, default=SCRAPE_WAIT_S, metavar="SECONDS",
                        help=f"how long a /metrics scrape waits for the feedback signals being recomputed before it "
                             f"answers with the last ones (default {SCRAPE_WAIT_S:g}; inf: until they are done)")


def serve(args: argparse.Namespace, settings: Settings, prog: str = "prediction-sink") -> int:
    """Run the sink until SIGINT/SIGTERM; exit 2 with one line when it cannot start."""
    store_url = args.store or settings.PREDICTION_LOG_STORE_URL
    if not store_url:
        print(f"{prog}: error: no store: give --store URL or set {STORE_ENV}", file=sys.stderr)
        return 2
    try:
        models = monitored_models(args.models) if args.models else None
    except ValueError as error:
        print(f"{prog}: error: --model {error}", file=sys.stderr)
        return 2
    try:
        listener = _listen(args.host, args.port)
    except ValueError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    try:
        store = open_store(store_url)
    except (ValueError, StoreError) as error:
        listener.close()
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    retention = Retention(store, args.retention_days)
    try:
        deleted = retention.sweep()
    except StoreError as error:
        listener.close()
        store.close()
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    host, port = listener.getsockname()[:2]
    metrics = SinkMetrics()
    feedback, watched = None, ""
    window = f" over the last {args.feedback_window.total_seconds():g} s"
    if args.models_file is not None:
        models_file = ModelsFile(args.models_file)
        feedback = FeedbackCache(window_signals(store_url, models_file.current, args.feedback_window), metrics,
                                 models_stamp=models_file.stamp, wait_s=args.scrape_wait)
        watched = f"; feedback signals of the models in {args.models_file}{window}"
    elif models is not None:
        feedback = FeedbackCache(window_signals(store_url, lambda: models, args.feedback_window), metrics,
                                 wait_s=args.scrape_wait)
        watched = f"; feedback signals of {', '.join(models.versions)}{window}"
    print(f"prediction sink on http://{host}:{port}/ → {store.url} ({store.backend}); retention {args.retention_days} "
          f"days ({deleted} old predictions deleted){watched}", flush=True)
    retention.start()
    app = build_app(store, metrics, feedback)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    try:
        server.run(sockets=[listener])
    finally:
        retention.stop()
        store.close()
        listener.close()
    return 0


def _listen(host: str, port: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as error:
        listener.close()
        holder = port_holder(port) if port else None
        held = f" (held by {holder})" if holder else ""
        raise ValueError(f"--host {host} --port {port}: cannot listen there: {error.strerror}{held}") from None
    listener.listen(2048)
    return listener


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="prediction-sink", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return serve(parser.parse_args(argv), Settings())


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main())
