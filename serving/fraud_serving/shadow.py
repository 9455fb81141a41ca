"""Shadow (paired) scoring: a share of requests is also scored on the other revision (DESIGN 14).

After the predictor answered, `ShadowScorer.submit` draws against `share`; a drawn request is sent
again, the same scaled body, to the other revision (`Routes.other`, or in a cluster the tag host
not serving the answered version, `routing.TagHosts`) by an asyncio task the answer does not wait
for. Both decisions per request id go to the pair log, to the label-free 2×2 table
`fraud_shadow_rows_total` and, with a prediction log, as a pair event to its sink (with the rows'
transaction ids, so late labels join the pairs); shadow scores never count in
`fraud_predictions_total` or `fraud_score`, and a shadow failure is counted (`fraud_shadow_errors_total`) and never reaches the client.

Bounded: at most `max_in_flight` shadow calls run; a request drawn beyond that is dropped and
counted (`fraud_shadow_dropped_total{reason="busy"}`), so a slow revision costs pairs, not memory
or latency. The pair log (JSON lines) is written by a thread, batched, flushed at least every
`FLUSH_SECONDS` and on close: file writes never run on the event loop.
"""
from __future__ import annotations

import asyncio
import atexit
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import orjson
from fraud.inference_log import LoggedResponse, pair_body
from fraud.routes import Backend

from fraud_serving.answer import PredictorAnswer, read_answer
from fraud_serving.metrics import UNKNOWN_VERSION, TransformerMetrics
from fraud_serving.payload_log import PayloadLogger
from fraud_serving.routing import Routes, TagHosts, keyed_uniform

logger = logging.getLogger(__name__)
FLUSH_SECONDS = 0.5
#: The default share of requests shadow-scored, in percent. `fraud-rollout bench serving` runs
#: shadow off, at this share and at 100 % side by side. Here (2 cores, load average 8–10 from other
#: work) 100 % cost +30–110 % transformer CPU per request and +6–100 % p50, so 10 % costs about a
#: tenth of that by the per-request work it adds (one more hop on a drawn request, nothing on the
#: others); the measured 10 %-vs-off differences (−22 % to +57 %) were within the noise of an A/A
#: pair (off vs 0.001 %: +9 % p50, +15 % CPU per request), so re-measure on a quiet machine.
DEFAULT_SHADOW_PERCENT = 10.0
DEFAULT_MAX_IN_FLIGHT = 64
#: How long closing the transformer waits for shadow calls still running (then they are cancelled).
CLOSE_SECONDS = 5.0
_STOP = object()


class PairLog:
    """Append-only JSON lines, one per shadowed request, written off the event loop.

    `append` only queues (≈ 1 µs); a writer thread takes whatever is queued, writes it in one call
    and flushes, at least every `flush_seconds`. `on_written` callbacks run after the flush, so a
    caller counting them down knows when a record is on disk.
    """

    def __init__(self, path: Path, flush_seconds: float = FLUSH_SECONDS) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.flush_seconds = flush_seconds
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._file = open(self.path, "ab")
        self._thread = threading.Thread(target=self._write, name="shadow-pair-log", daemon=True)
        self._thread.start()
        self._closed = False
        atexit.register(self.close)  # KServe's shutdown may end the loop before close() is awaited

    def append(self, record: dict, on_written: Callable[[], None] | None = None) -> None:
        self._queue.put((orjson.dumps(record) + b"\n", on_written))

    def _write(self) -> None:
        stopping = False
        while not stopping:
            try:
                batch = [self._queue.get(timeout=self.flush_seconds)]
            except queue.Empty:
                continue
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stopping = any(item is _STOP for item in batch)
            entries = [item for item in batch if item is not _STOP]
            if entries:
                self._file.write(b"".join(line for line, _ in entries))
                self._file.flush()
                for _, on_written in entries:
                    if on_written is not None:
                        on_written()
        self._file.close()

    def close(self, timeout: float = CLOSE_SECONDS) -> None:
        """Write what is queued and stop the writer (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)


class ShadowScorer:
    """Score a share of answered requests on the other revision, in the background."""

    def __init__(self, routes: Routes, session_factory: Callable[[], aiohttp.ClientSession],
                 metrics: TransformerMetrics, share: float, max_in_flight: int, timeout_seconds: float,
                 pair_log: PairLog | None, *, model_name: str, tag_hosts: TagHosts | None = None,
                 seed: int | None = None, pair_logger: PayloadLogger | None = None) -> None:
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"share must be within 0..1, got {share}")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        self.routes = routes
        self.session_factory = session_factory
        self.metrics = metrics
        self.share = share
        self.max_in_flight = max_in_flight
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self.pair_log = pair_log
        self.model_name = model_name
        self.tag_hosts = tag_hosts
        self._seed = seed
        self._rng = random.Random()
        self.pair_logger = pair_logger  # the prediction log, which keeps the pairs for late labels
        self._tasks: set[asyncio.Task] = set()  # references: the loop keeps only weak ones

    def submit(self, backend: Backend, content: bytes, headers: dict, answer: PredictorAnswer,
               row_ids: Callable[[], tuple[str | None, ...]] | None = None, key: str | None = None) -> None:
        """Maybe start a shadow score of this answered request (`row_ids` gives its rows' transaction
        ids, for the prediction log; with a seed, `key` decides the draw); never blocks, never raises."""
        draw = keyed_uniform(self._seed, "shadow", key) if self._seed is not None and key else self._rng.random()
        if self.share <= 0.0 or (self.share < 1.0 and draw >= self.share):
            return
        target = self._target(backend, answer)
        if target is None:
            return  # a single revision: nothing to compare with, not a drop
        if len(self._tasks) >= self.max_in_flight:
            self.metrics.shadow_dropped.labels("busy").inc()
            return
        self.metrics.shadow_in_flight.inc()
        task = asyncio.get_running_loop().create_task(self._score(target, content, headers, answer, row_ids))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _target(self, backend: Backend, answer: PredictorAnswer) -> Backend | None:
        if self.tag_hosts is not None:
            # a cluster: `Routes.other` of a retried answer's tag host would be the split
            # `--predictor_host`, which may pair a version with itself
            return self.tag_hosts.other_than(answer.model_version)
        return self.routes.other(backend)

    async def _score(self, target: Backend, content: bytes, headers: dict, answer: PredictorAnswer,
                     row_ids: Callable[[], tuple[str | None, ...]] | None) -> None:
        written = False
        try:
            shadow = await self._call(target, content, headers, answer.request_id)
            if shadow is None:
                return
            if self.tag_hosts is not None and target.revision in self.tag_hosts.tags:
                self.tag_hosts.learn(target.url, shadow.model_version)
                if shadow.model_version == answer.model_version:
                    # a tag host not heard from yet (or moved) that serves the served version: no pair
                    self.metrics.shadow_dropped.labels("same_version").inc()
                    return
            if len(shadow.is_fraud) != len(answer.is_fraud):
                self._failed(target, f"{len(shadow.is_fraud)} decisions for {len(answer.is_fraud)} rows")
                return
            if not len(answer.fraud_probability) == len(shadow.fraud_probability) == len(answer.is_fraud):
                self._failed(target, f"{len(answer.fraud_probability)} and {len(shadow.fraud_probability)} scores for "
                                     f"{len(answer.is_fraud)} rows")
                return
            self.metrics.record_shadow(answer.model_version, shadow.model_version, answer.is_fraud, shadow.is_fraud,
                                       answer.fraud_probability, shadow.fraud_probability)
            if self.pair_logger is not None:
                ids = row_ids() if row_ids is not None else ()
                if len(ids) != len(answer.is_fraud):
                    ids = (None,) * len(answer.is_fraud)
                self.pair_logger.log_pair(answer.request_id, time.time(), pair_body(
                    LoggedResponse(answer.model_version, answer.fraud_probability, answer.is_fraud),
                    LoggedResponse(shadow.model_version, shadow.fraud_probability, shadow.is_fraud), ids))
            if self.pair_log is not None:
                self.pair_log.append({"id": answer.request_id, "served_version": answer.model_version,
                                      "shadow_version": shadow.model_version,
                                      "served_is_fraud": answer.is_fraud.tolist(),
                                      "shadow_is_fraud": shadow.is_fraud.tolist()},
                                     on_written=self.metrics.shadow_in_flight.dec)
                written = True
        finally:
            if not written:
                self.metrics.shadow_in_flight.dec()

    async def _call(self, target: Backend, content: bytes, headers: dict, request_id: str) -> PredictorAnswer | None:
        url = f"{target.url}/v2/models/{self.model_name}/infer"
        try:
            async with self.session_factory().post(url, data=content, headers=headers,
                                                   timeout=self.timeout) as response:
                status, body = response.status, await response.read()
        except (TimeoutError, aiohttp.ClientError) as error:
            self._failed(target, f"{type(error).__name__} {error}")
            return None
        if status != 200:
            self._failed(target, f"answered {status}: {body[:200].decode(errors='replace')}")
            return None
        try:
            return read_answer(orjson.loads(body), request_id, target)
        except ValueError as error:  # orjson.JSONDecodeError is one
            self._failed(target, str(error))
            return None

    def _failed(self, target: Backend, message: str) -> None:
        self.metrics.shadow_errors.labels(target.model_version or UNKNOWN_VERSION).inc()
        logger.debug("shadow score on %s failed: %s", target.revision or target.url, message)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def close(self, timeout: float = CLOSE_SECONDS) -> None:
        """Wait (at most `timeout`) for running shadow calls, cancel the rest, close the pair log."""
        try:
            if self._tasks:
                _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
                for task in pending:
                    task.cancel()
        finally:
            if self.pair_log is not None:
                await asyncio.get_running_loop().run_in_executor(None, self.pair_log.close)
