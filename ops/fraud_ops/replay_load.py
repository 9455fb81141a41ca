"""How a replay sends: batches of raw transactions as v2 JSON over keep-alive connections, a bounded
number in flight, optionally paced; every row's answer (version, decision, score, latency, error).

The split happens per *request* (as Knative splits), so each version's rows are whole requests,
an unbiased sample of them; the default batch keeps ≥ 2,000 requests so the share is measured
within about a point, with at most 100 rows per request. A Python client saturates early (DESIGN:
near a thousand requests per second here), which is why batching, not more concurrency, makes a
200,000-row replay fast (see `fraud-rollout bench replay`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from fraud.schema import FEATURES, LABEL, TRANSACTION_ID, DataError

from fraud_ops.replay_source import ReplaySource

log = logging.getLogger(__name__)
#: The default batch keeps at least this many requests (the split is per request: ±0.9 points at
#: a 20 % share with 2,000 requests) and at most `MAX_DEFAULT_BATCH` rows in one.
MIN_REQUESTS = 2_000
MAX_DEFAULT_BATCH = 100


def default_batch(rows: int) -> int:
    return max(1, min(MAX_DEFAULT_BATCH, rows // MIN_REQUESTS))


@dataclass(frozen=True)
class ReplayOptions:
    url: str
    limit: int | None = None
    rate: float = 0.0  # transactions per second; 0 = unpaced
    batch: int | None = None  # None: default_batch(rows)
    concurrency: int = 8
    timeout: float = 30.0
    model_name: str = "fraud-detector"
    progress: bool = True


@dataclass
class ReplayRows:
    """One entry per transaction (row) and per request, as sent and answered."""

    labels: np.ndarray  # int8, 1 = fraud
    amount: np.ndarray
    model_version: np.ndarray  # str, "" where the request failed without a version
    decision: np.ndarray  # float: 1/0, NaN where failed
    probability: np.ndarray  # float32, NaN where failed
    latency_ms: np.ndarray  # of the row's request
    error: np.ndarray  # bool
    request: np.ndarray  # int32, index of the row's request
    # per request
    request_start_s: np.ndarray  # seconds after the replay started
    request_latency_ms: np.ndarray
    request_version: np.ndarray  # str
    request_status: np.ndarray  # int16 HTTP status, 0 = no response
    request_retried_from: np.ndarray  # str: the version whose failure the transformer retried, "" if none
    error_messages: list[str]
    wall_seconds: float
    id_prefix: str = "replay-"  # request i was sent with the v2 id f"{id_prefix}{i}" (shadow pairs join on it)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"row": np.arange(len(self.labels), dtype=np.int64), "label": self.labels,
                             "amount": self.amount, "model_version": self.model_version,
                             "decision": self.decision, "probability": self.probability,
                             "latency_ms": self.latency_ms, "error": self.error, "request": self.request,
                             "request_start_s": self.request_start_s[self.request],
                             "retried_from": self.request_retried_from[self.request]})


class EndpointUnreachable(DataError):
    """The URL does not answer as a ready v2 model."""


def check_endpoint(url: str, model_name: str, timeout: float = 10.0) -> None:
    """Fail fast, naming the URL, when the endpoint is not a ready v2 model."""
    import httpx
    from fraud_serving.client import infer_url

    ready = infer_url(url, model_name).removesuffix("/infer") + "/ready"
    try:
        response = httpx.get(ready, timeout=timeout)
        status, text = response.status_code, response.text[:200]
    except (httpx.HTTPError, httpx.InvalidURL, OSError, ValueError) as error:
        raise EndpointUnreachable(f"--url {url}: cannot reach the endpoint ({error})") from None
    if status != 200:
        raise EndpointUnreachable(f"--url {url}: model {model_name!r} is not ready ({status} from {ready}: {text})")


def send(raw: np.ndarray, options: ReplayOptions, on_progress: Callable[[int], None] | None = None,
         transaction_ids: list[str] | None = None) -> ReplayRows:
    """Send `raw` ([N, 30], contract order) in batches; return what every row got back.

    With `transaction_ids` (one per row) each request carries its rows' ids as the `transaction_id`
    input. Every request carries the header `Ce-Id: <its request id>`, so the prediction log's
    events (KServe's logger and ours) are keyed by the request id the replay knows.

    Never raises for a failed request: a non-200 answer or a connection error marks its rows as
    errors (the report counts them against the version, or as unattributed)."""
    if transaction_ids is not None and len(transaction_ids) != len(raw):
        raise ValueError(f"{len(transaction_ids)} transaction ids for {len(raw)} rows")
    return asyncio.run(_send(raw, options, on_progress, transaction_ids))


def transaction_ids(frame: pd.DataFrame) -> list[str] | None:
    """The frame's `transaction_id` column as a list, None when it has none (a user's own holdout)."""
    return frame[TRANSACTION_ID].astype(str).tolist() if TRANSACTION_ID in frame.columns else None


async def _send(raw: np.ndarray, options: ReplayOptions, on_progress, ids: list[str] | None) -> ReplayRows:
    import secrets

    import aiohttp
    import orjson
    from fraud.protocol import decode_answer, request_body
    from fraud_serving.answer import RETRIED_FROM_HEADER
    from fraud_serving.client import infer_url
    from tqdm import tqdm

    n = len(raw)
    url = infer_url(options.url, options.model_name)
    starts = np.arange(0, n, options.batch)
    requests = len(starts)
    version = np.full(requests, "", dtype=object)
    status = np.zeros(requests, dtype=np.int16)
    retried_from = np.full(requests, "", dtype=object)
    started_at = np.zeros(requests)
    latency = np.full(requests, np.nan)
    decision = np.full(n, np.nan)
    probability = np.full(n, np.nan, dtype=np.float32)
    messages: list[str] = []
    raw = np.ascontiguousarray(raw, dtype=np.float64)
    pending = iter(range(requests))
    id_prefix = f"replay-{secrets.token_hex(4)}-"  # unique per replay: a pair log outlives replays
    bar = tqdm(total=n, unit="tx", desc="replay", disable=not options.progress, smoothing=0.1)
    done = 0
    t0 = time.perf_counter()

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal done
        for i in pending:
            lo, hi = int(starts[i]), min(int(starts[i]) + options.batch, n)
            if options.rate > 0:  # pacing: request i is due when its first row is
                delay = t0 + lo / options.rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            request_id = f"{id_prefix}{i}"
            body = orjson.dumps(request_body(raw[lo:hi], request_id, None if ids is None else ids[lo:hi], arrays=True),
                                option=orjson.OPT_SERIALIZE_NUMPY)
            began = time.perf_counter()
            started_at[i] = began - t0
            try:
                async with session.post(url, data=body, headers={"content-type": "application/json",
                                                                 "ce-id": request_id}) as response:
                    status[i] = response.status
                    retried_from[i] = response.headers.get(RETRIED_FROM_HEADER, "")
                    payload = await response.read()
                latency[i] = 1000 * (time.perf_counter() - began)
                if status[i] == 200:
                    answer = decode_answer(orjson.loads(payload))
                    if len(answer.is_fraud) != hi - lo:
                        raise ValueError(f"{len(answer.is_fraud)} decisions for {hi - lo} rows")
                    decision[lo:hi] = answer.is_fraud
                    probability[lo:hi] = answer.fraud_probability
                    version[i] = answer.model_version
                else:
                    _note(messages, f"HTTP {status[i]}: {payload[:200].decode(errors='replace')}")
            except (TimeoutError, aiohttp.ClientError, KeyError, TypeError, ValueError) as error:
                latency[i] = 1000 * (time.perf_counter() - began)
                if status[i] == 200:  # answered, but not a usable v2 response
                    status[i] = -1
                _note(messages, f"{type(error).__name__}: {str(error)[:200]}")
            done += hi - lo
            bar.update(hi - lo)
            if on_progress is not None:
                on_progress(done)

    connector = aiohttp.TCPConnector(limit=options.concurrency, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=options.timeout or None)
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await asyncio.gather(*(worker(session) for _ in range(min(options.concurrency, requests))))
    finally:
        bar.close()
    wall = time.perf_counter() - t0

    request_of_row = np.repeat(np.arange(requests, dtype=np.int32), np.diff(np.append(starts, n)))
    failed = status != 200
    return ReplayRows(
        labels=np.zeros(n, dtype=np.int8), amount=np.zeros(n), model_version=version[request_of_row].astype(str),
        decision=decision, probability=probability, latency_ms=latency[request_of_row],
        error=failed[request_of_row], request=request_of_row, request_start_s=started_at,
        request_latency_ms=latency, request_version=version.astype(str), request_status=status,
        request_retried_from=retried_from.astype(str),
        error_messages=messages, wall_seconds=wall, id_prefix=id_prefix)


def _note(messages: list[str], message: str) -> None:
    if len(messages) < 1000:
        messages.append(message)


def replay(source: ReplaySource, options: ReplayOptions,
           on_progress: Callable[[int], None] | None = None) -> ReplayRows:
    """Replay `source` (the first `options.limit` rows)."""
    frame = source.frame if options.limit is None else source.frame.iloc[:options.limit]
    if options.batch is None:
        options = replace(options, batch=default_batch(len(frame)))
    rows = send(frame.loc[:, list(FEATURES)].to_numpy(dtype=np.float64), options, on_progress,
                transaction_ids(frame))
    rows.labels = frame[LABEL].to_numpy(dtype=np.int8)
    rows.amount = frame["Amount"].to_numpy(dtype=np.float64)
    return rows
