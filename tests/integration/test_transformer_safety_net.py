"""The transformer as the safety net (DESIGN 16), against a dedicated `fraud-rollout serve` on loopback: a
canary predictor killed with SIGKILL under load costs no client request, and a body far over the byte
limit is refused without the transformer holding it in memory.

A dedicated runtime: the kill takes v2 away for a TensorFlow start (≈ 20 s); other modules' runtimes
never see it.
"""
from __future__ import annotations

import asyncio
import collections
import os
import signal
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import aiohttp
import httpx
import psutil
import pytest
from fraud.processes import POLL_SECONDS, READY_TIMEOUT_SECONDS, stop_all
from fraud.schema import FEATURES
from fraud_control.local_runtime.servers import start_server, start_transformer
from fraud_serving.fast_route import body_limit

from tests.integration.serving_fixtures import (
    LocalRuntimeHandle,
    metric_value,
    predictor_of,
    start_local_runtime,
    v2_json,
)

pytestmark = pytest.mark.integration
JSON = {"content-type": "application/json"}
REQUESTS, CONCURRENCY, KILL_AFTER = 3_000, 32, 300


@pytest.fixture(scope="module")
def runtime(tiny_run, tmp_path_factory) -> Iterator[LocalRuntimeHandle]:
    """v1 rolled out, v2 at 50 % (half the in-flight requests are on the process that is killed)."""
    root = tmp_path_factory.mktemp("safety_net")
    with start_local_runtime(root / "state", tiny_run.v1, tiny_run.v2, 50, root / "logs") as handle:
        yield handle


@pytest.fixture(scope="module")
def one_row(tiny_run) -> bytes:
    return v2_json(tiny_run.windows["holdout"].loc[:, list(FEATURES)].to_numpy()[:1])


def listening_pid(url: str) -> int:
    """The pid of the process listening on `url`'s port (the runtime records URLs, not pids)."""
    port = urlsplit(url).port
    pids = {c.pid for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid}
    assert len(pids) == 1, (url, pids)
    return pids.pop()


def wait_for_v2_back(runtime: LocalRuntimeHandle, dead_url: str) -> str:
    """Until the runtime has restarted v2 (a new URL in runtime.json and in the routes) and it is ready."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        try:
            url = predictor_of(runtime, "v2").url
        except LookupError:
            url = dead_url
        routed = (runtime.state_dir / "routes.json").read_text()
        if url != dead_url and url in routed:
            try:
                if httpx.get(f"{url}/v2/models/fraud-detector/ready", timeout=2).status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
        time.sleep(POLL_SECONDS)
    raise AssertionError(f"v2 not restarted after {READY_TIMEOUT_SECONDS} s:\n{runtime.log_tail()}")


async def load_with_a_kill(url: str, body: bytes, pid: int) -> tuple[collections.Counter, list[str]]:
    """REQUESTS one-row requests, CONCURRENCY at a time; SIGKILL to `pid` once KILL_AFTER have answered."""
    statuses: collections.Counter = collections.Counter()
    failures: list[str] = []
    queue = iter(range(REQUESTS))
    answered = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal answered
        for _ in queue:
            try:
                async with session.post(url, data=body, headers=JSON) as response:
                    statuses[response.status] += 1
                    if response.status != 200:
                        failures.append(f"{response.status} {(await response.text())[:200]}")
            except aiohttp.ClientError as error:
                failures.append(repr(error))
            answered += 1
            if answered == KILL_AFTER:
                os.kill(pid, signal.SIGKILL)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60),
                                     connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as session:
        await asyncio.gather(*(worker(session) for _ in range(CONCURRENCY)))
    return statuses, failures


def test_killing_the_canary_predictor_under_load_fails_no_request(runtime, one_row):
    v2 = predictor_of(runtime, "v2").url
    pid = listening_pid(v2)
    before = httpx.get(f"{runtime.url}/metrics", timeout=10).text
    statuses, failures = asyncio.run(load_with_a_kill(runtime.infer_url, one_row, pid))
    after = httpx.get(f"{runtime.url}/metrics", timeout=10).text

    def delta(name: str, version: str) -> float:
        return metric_value(after, name, model_version=version) - metric_value(before, name, model_version=version)

    retries, errors = delta("fraud_predictor_retries_total", "v2"), delta("fraud_predictor_errors_total", "v2")
    print(f"\nkill -9 of v2 after {KILL_AFTER} answers: {statuses[200]}/{REQUESTS} answered 200, "
          f"{len(failures)} failed; retries v2 {retries:.0f}, predictor errors v2 {errors:.0f}")
    assert failures == [] and statuses == {200: REQUESTS}
    assert retries > 0 and errors == retries  # every failed v2 call was retried on v1 and answered there
    assert delta("fraud_predictor_retries_total", "v1") == 0
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

    restarted = wait_for_v2_back(runtime, v2)
    assert restarted != v2
    with httpx.Client(timeout=30) as client:
        versions = collections.Counter(client.post(runtime.infer_url, content=one_row, headers=JSON).json()[
            "model_version"] for _ in range(100))
    assert set(versions) == {"v1", "v2"}, versions  # the split serves both revisions again


def vm_rss_bytes(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def test_a_300_mb_body_is_refused_without_growing_the_transformer(runtime, one_row):
    transformer_pid = listening_pid(runtime.url)
    limit = body_limit(10_000, len(FEATURES))
    size = 300 * 1024 * 1024
    rss_before = vm_rss_bytes(transformer_pid)
    answers = []
    for content in (b" " * size, (b" " * (1 << 20) for _ in range(300))):  # Content-Length, then chunked
        try:
            response = httpx.post(runtime.infer_url, content=content, headers=JSON, timeout=60)
            answers.append((response.status_code, response.json()["error"]))
        except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
            # the server answered 413 and closed while the client was still sending: what a client sees
            answers.append((413, "closed while sending"))
    rss_after = vm_rss_bytes(transformer_pid)
    print(f"\ntransformer RSS before {rss_before / 2**20:.0f} MiB, after two 300 MiB POSTs "
          f"{rss_after / 2**20:.0f} MiB; answers {answers}")
    assert [status for status, _ in answers] == [413, 413], answers
    assert rss_after - rss_before < 50 * 2**20
    assert limit == 14_465_536
    metrics = httpx.get(f"{runtime.url}/metrics", timeout=10).text
    assert metric_value(metrics, "fraud_rejected_requests_total", reason="body_size") == 2
    good = httpx.post(runtime.infer_url, content=one_row, headers=JSON, timeout=30)
    assert good.status_code == 200, good.text


def test_a_predictor_4xx_is_the_clients_answer_and_not_retried(tiny_run, tmp_path):
    """A predictor whose row limit (1) is below the transformer's: its 413 reaches the client as it is
    (the other revision would refuse the same body), no retry, no predictor error."""
    predictor = start_server("predictor", ["--model_dir", str(tiny_run.v1), "--max_rows", "1"], tmp_path)
    transformer = start_transformer(tiny_run.v1, tmp_path, predictor_url=predictor.url)
    try:
        predictor.wait_ready()
        transformer.wait_ready()
        rows = tiny_run.windows["holdout"].loc[:, list(FEATURES)].to_numpy()[:256]  # JSON to the predictor: ≈ 85 kB
        answer = httpx.post(transformer.infer_url, content=v2_json(rows), headers=JSON, timeout=30)
        metrics = httpx.get(f"{transformer.url}/metrics", timeout=10).text
    finally:
        stop_all([transformer, predictor])
    assert answer.status_code == 413, answer.text
    assert answer.json() == {"error": f"request body of {answer.json()['error'].split()[3]} bytes exceeds the limit "
                                      f"of {body_limit(1, len(FEATURES))} bytes (1 rows); send fewer rows per request"}
    assert int(answer.json()["error"].split()[3]) > body_limit(1, len(FEATURES))
    assert "fraud_predictor_retries_total{" not in metrics
    assert "fraud_predictor_errors_total{" not in metrics
