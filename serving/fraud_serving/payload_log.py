"""The transformer's payload logger: the CloudEvents KServe's agent sends, posted by the transformer.

KServe's agent (kserve@v0.20.0 pkg/logger/handler.go, worker.go) sends one event per request and,
when the answer is a 200, one per response: specversion 1.0, the id of the request's `Ce-Id`
header or a fresh UUID (the same for both events), type `org.kubeflow.serving.inference.request`
or `.response`, its own URI as source, the arrival (request) or answer (response) time, the
extensions `recordedtime`, `inferenceservicename`, `namespace`, `component`, `endpoint` and
`metadata` ("{}" without metadata headers), the request's Content-Type as data content type and
the raw body as data. The local runtime has no agent, so the transformer sends the same events
(DESIGN 15): local and cluster feed one sink.

Unlike the agent (a queue of 100 that blocks inference when full, no retry), this logger never
makes an answer wait: `log_request` / `log_response` only append to a bounded queue (the event is
built when it is posted); a full queue drops the event and counts it. A task posts whatever is queued (gathered for `LINGER_SECONDS` unless
a post is full), up to `BATCH_EVENTS` a post, as one `application/cloudevents-batch+json` list of
structured events, so there are few posts, under load and at low rates alike.
The structured JSON is built without re-serialising the body: a body known to be JSON is embedded
as `data` as it came; anything else (the binary tensor extension) goes as `data_base64`.

A connection error, a timeout or a 5xx keeps the events queued (they still count against the
bound) and the post is retried with capped exponential backoff; a 4xx is the sink refusing the
events: the batch is halved until the refused event is alone, which is dropped and counted.

Metrics (`fraud_payload_log_*`):
- `fraud_payload_log_events_total{event_type}`: events the sink acknowledged ("request", "response",
  "pair": a shadow pair, `log_pair`, which KServe's agent has no event for)
- `fraud_payload_log_dropped_total{reason}`: events dropped: "queue_full", "rejected" (a 4xx from
  the sink), "shutdown" (still queued when closing ran out of time)
- `fraud_payload_log_post_errors_total`: posts that failed (no connection, a timeout, a 5xx), retried
- `fraud_payload_log_queue`: events queued, sent or not yet acknowledged
"""
from __future__ import annotations

import asyncio
import base64
import collections
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice

import aiohttp
import orjson
from fraud.inference_log import EVENT_KINDS, PAIR_EVENT, REQUEST_EVENT, RESPONSE_EVENT
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

logger = logging.getLogger(__name__)
CE_ID_HEADER = "ce-id"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
DEFAULT_QUEUE_EVENTS = 10_000
BATCH_EVENTS = 500
POST_TIMEOUT_SECONDS = 10.0
BACKOFF_SECONDS = (0.05, 5.0)  # first retry, cap
#: How long the poster lets events gather before a post that would not be full. One post per
#: request cost +9 % p50 (0.81 → 0.87 ms) and +16 % transformer CPU per request at c=1 here (the
#: post's own work on the serving loop); gathered, a post carries the requests of this interval.
#: 100 ms rather than 20: a fifth of the posts (and of the sink's commits); 12 interleaved rounds
#: against the real sink measured a p50 cost of −1.9 % (and 5.5 % at 20 ms, on a slower minute).
LINGER_SECONDS = 0.1
CLOSE_SECONDS = 5.0
#: Data content types whose `data` is a JSON value in a structured event (CloudEvents JSON format
#: 3.1: a JSON media type, or none); any other type goes as data_base64.
JSON_MEDIA_TYPES = {"", "application/json"}


@dataclass(frozen=True)
class EventSource:
    """What KServe's agent is started with: the attributes every event of this server carries."""

    inference_service: str
    namespace: str
    source: str  # the agent's `--source-uri`, default http://localhost:<port>/
    component: str = "transformer"


class PayloadLogMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.events = Counter("fraud_payload_log_events_total", "Payload log events the sink acknowledged, by type",
                              ["event_type"], registry=registry)
        self.dropped = Counter("fraud_payload_log_dropped_total", "Payload log events dropped, by reason",
                               ["reason"], registry=registry)
        self.post_errors = Counter("fraud_payload_log_post_errors_total",
                                   "Posts to the sink that failed (no connection, timeout, 5xx) and will be retried",
                                   registry=registry)
        self.queue = Gauge("fraud_payload_log_queue", "Payload log events queued and not yet acknowledged",
                           registry=registry)


def event_id(headers) -> str:
    """The agent's `getOrCreateID`: the request's Ce-Id header, else a fresh UUID."""
    return headers.get(CE_ID_HEADER) or str(uuid.uuid4())


def structured_event(ce_type: str, ce_id: str, occurred: float, body: bytes, content_type: str,
                     body_is_json: bool, source: EventSource, endpoint: str) -> bytes:
    """One structured-mode CloudEvent (JSON) with the attributes KServe's agent sets in binary mode.

    `body_is_json`: the body was parsed as JSON already, so its bytes are embedded as `data` as they
    are (no second parse or dump); otherwise, or for a non-JSON content type, `data_base64`."""
    attributes = {"specversion": "1.0", "id": ce_id, "type": ce_type, "source": source.source,
                  "time": _rfc3339(occurred), "recordedtime": _rfc3339(time.time()),
                  "inferenceservicename": source.inference_service, "namespace": source.namespace,
                  "component": source.component, "endpoint": endpoint, "metadata": "{}"}
    media_type = content_type.split(";")[0].strip().lower()
    if content_type:
        attributes["datacontenttype"] = content_type
    head = orjson.dumps(attributes)[:-1]
    if body_is_json and media_type in JSON_MEDIA_TYPES and body.strip():
        return head + b',"data":' + body + b"}"
    return head + b',"data_base64":"' + base64.b64encode(body) + b'"}'


def _rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class PayloadLogger:
    """Queue CloudEvents for every answered inference and post them to `url` in the background."""

    def __init__(self, url: str, source: EventSource, metrics: PayloadLogMetrics,
                 max_queue: int = DEFAULT_QUEUE_EVENTS, batch_events: int = BATCH_EVENTS,
                 post_timeout_seconds: float = POST_TIMEOUT_SECONDS,
                 backoff_seconds: tuple[float, float] = BACKOFF_SECONDS, close_seconds: float = CLOSE_SECONDS,
                 linger_seconds: float = LINGER_SECONDS, traffic: bool = True) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue}")
        self.url = url
        self.source = source
        self.metrics = metrics
        self.max_queue = max_queue
        self.batch_events = batch_events
        self.timeout = aiohttp.ClientTimeout(total=post_timeout_seconds)
        self.backoff_seconds = backoff_seconds
        self.close_seconds = close_seconds
        self.linger_seconds = linger_seconds
        #: also requests and responses (False: shadow pairs only, where KServe's agent logs the traffic;
        #: the serving route then never calls log_request / log_response)
        self.traffic = traffic
        # (ce type, ce id, time, body, content type, body is JSON, endpoint): the structured event is
        # built when it is posted, off the request's path (`structured_event`)
        self._queue: deque[tuple[str, str, float, bytes, str, bool, str]] = deque()
        self._acknowledged = {kind: metrics.events.labels(kind) for kind in EVENT_KINDS.values()}
        metrics.queue.set_function(lambda: len(self._queue))  # read at scrape time, never per event
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closing = False

    @property
    def queued(self) -> int:
        return len(self._queue)

    def log_request(self, ce_id: str, arrived: float, body: bytes, content_type: str, body_is_json: bool,
                    endpoint: str = "default") -> None:
        """Queue the request event (never blocks, never raises)."""
        self._put(REQUEST_EVENT, ce_id, arrived, body, content_type, body_is_json, endpoint)

    def log_response(self, ce_id: str, answered: float, body: bytes, content_type: str, body_is_json: bool,
                     endpoint: str = "default") -> None:
        """Queue the response event of a 200 (the agent's data content type is the request's)."""
        self._put(RESPONSE_EVENT, ce_id, answered, body, content_type, body_is_json, endpoint)

    def log_pair(self, request_id: str, scored: float, body: bytes) -> None:
        """Queue a shadow pair (`fraud.inference_log.pair_body`) of the request with this v2 id."""
        self._put(PAIR_EVENT, request_id, scored, body, "application/json", True, "default")

    def _put(self, ce_type: str, ce_id: str, occurred: float, body: bytes, content_type: str,
             body_is_json: bool, endpoint: str) -> None:
        if self._closing or len(self._queue) >= self.max_queue:
            self.metrics.dropped.labels("queue_full").inc()
            return
        self._queue.append((ce_type, ce_id, occurred, body, content_type, body_is_json, endpoint))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._send_forever())
        self._wake.set()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:  # on the serving loop, pooled for every post
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4, keepalive_timeout=60),
                                                  timeout=self.timeout)
        return self._session

    async def _send_forever(self) -> None:
        limit, backoff = self.batch_events, self.backoff_seconds[0]
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            if len(self._queue) < limit and not self._closing:
                await asyncio.sleep(self.linger_seconds)
            queued = list(islice(self._queue, limit))
            status = await self._post([structured_event(ce_type, ce_id, occurred, body, content_type, is_json,
                                                        self.source, endpoint)
                                       for ce_type, ce_id, occurred, body, content_type, is_json, endpoint in queued])
            if status is not None and 200 <= status < 300:
                for _ in queued:
                    self._queue.popleft()
                for ce_type, count in collections.Counter(item[0] for item in queued).items():
                    self._acknowledged[EVENT_KINDS[ce_type]].inc(count)
                limit, backoff = self.batch_events, self.backoff_seconds[0]
            elif status is not None and 400 <= status < 500:
                if len(queued) == 1:  # the refused event, alone: retrying cannot help
                    self._queue.popleft()
                    self.metrics.dropped.labels("rejected").inc()
                    limit = self.batch_events
                else:
                    limit = max(1, len(queued) // 2)
            else:
                self.metrics.post_errors.inc()
                await asyncio.sleep(backoff)
                backoff = min(2 * backoff, self.backoff_seconds[1])

    async def _post(self, events: list[bytes]) -> int | None:
        """The sink's status, or None when it could not be reached or did not answer in time."""
        body = b"[" + b",".join(events) + b"]"
        try:
            async with self.session.post(self.url, data=body, headers={"content-type": BATCH_CONTENT_TYPE}) as answer:
                await answer.read()
                if answer.status >= 400:
                    logger.warning("prediction log sink %s answered %d to %d events", self.url, answer.status,
                                   len(events))
                return answer.status
        except (TimeoutError, aiohttp.ClientError) as error:
            logger.warning("prediction log sink %s: %s %s (%d events kept for a retry)", self.url,
                           type(error).__name__, error, len(self._queue))
            return None

    async def close(self) -> None:
        """Send what is queued, for at most `close_seconds`; what is left is dropped and counted."""
        self._closing = True
        deadline = time.monotonic() + self.close_seconds
        while self._queue and self._task is not None and not self._task.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._queue:
            self.metrics.dropped.labels("shutdown").inc(len(self._queue))
            self._queue.clear()
        if self._session is not None:
            await self._session.close()
