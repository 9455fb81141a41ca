"""The prediction-log sink over real HTTP: KServe's binary events, structured and batch events, 400s,
and kill -9 under load: every acknowledged event is in the store exactly once, none half written."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx
import pytest
from fraud.inference_log import REQUEST_EVENT, RESPONSE_EVENT
from fraud_control.prediction_log.store import feature_matrix, open_store

from tests.prediction_log import T0, features, request_body, response_body
from tests.sink_process import batch, binary, kserve_event, start_sink, structured

pytestmark = pytest.mark.integration


@pytest.fixture
def sink(tmp_path):
    running = start_sink(str(tmp_path / "predictions.db"), tmp_path / "sink.log")
    yield running
    running.stop()


def post(sink, headers: dict[str, str], body: bytes) -> tuple[int, dict]:
    response = httpx.post(f"{sink.url}/", headers=headers, content=body, timeout=10)
    return response.status_code, response.json()


def pair(event_id: str, rows: int = 2, version: str = "v2", at: datetime = T0):
    ids = [f"{event_id}-t{row}" for row in range(rows)]
    return (kserve_event(event_id, REQUEST_EVENT, request_body(features(rows), ids), at=at),
            kserve_event(event_id, RESPONSE_EVENT, response_body([0.25] * rows, version), at=at))


def test_kserve_binary_events_are_stored_joined_and_idempotent(sink, tmp_path):
    request, response = pair("e1")
    headers, body = binary(response)
    assert headers["ce-type"] == RESPONSE_EVENT and headers["content-type"] == "application/json"
    assert headers["ce-inferenceservicename"] == "fraud-detector" and headers["ce-endpoint"] == "canary"
    assert post(sink, headers, body) == (200, {"accepted": 1, "duplicates": 0})  # the response first
    assert post(sink, *binary(request)) == (200, {"accepted": 1, "duplicates": 0})
    assert post(sink, *binary(request)) == (200, {"accepted": 0, "duplicates": 1})
    with open_store(str(tmp_path / "predictions.db")) as store:
        served = store.served()
        assert store.counts() == {"logged": 1, "answered": 1, "rows": 2, "labelled": 0, "paired": 0, "per_version": {"v2": 2}}
    assert served["transaction_id"].tolist() == ["e1-t0", "e1-t1"]
    assert feature_matrix(served).tolist() == features(2).tolist()
    metrics = httpx.get(f"{sink.url}/metrics").text
    assert 'fraud_sink_events_total{event_type="request",outcome="accepted"} 1.0' in metrics
    assert 'fraud_sink_events_total{event_type="request",outcome="duplicate"} 1.0' in metrics
    assert "fraud_sink_rows_total 4.0" in metrics and "fraud_sink_commit_seconds_count 3.0" in metrics


def test_structured_and_batch_events_take_the_same_path(sink, tmp_path):
    request, response = pair("s1", version="1")
    assert post(sink, *structured(request)) == (200, {"accepted": 1, "duplicates": 0})
    events = [response, *pair("b1"), *pair("b2")]
    assert post(sink, *batch(events)) == (200, {"accepted": 5, "duplicates": 0})
    assert post(sink, *batch(events)) == (200, {"accepted": 0, "duplicates": 5})
    with open_store(str(tmp_path / "predictions.db")) as store:
        assert store.counts() == {"logged": 3, "answered": 3, "rows": 6, "labelled": 0, "paired": 0,
                                  "per_version": {"v1": 2, "v2": 4}}
    assert httpx.get(f"{sink.url}/healthz").json() == {"status": "ok", "store": "sqlite"}


def bad_cases():
    request, response = pair("x1")
    headers, body = binary(request)
    unknown = kserve_event("x2", "org.kubeflow.serving.inference.explain", {})
    no_version = kserve_event("x5", RESPONSE_EVENT, {**response_body([0.1]), "model_version": ""})
    return [
        ("not a CloudEvent", {"content-type": "application/json"}, b"{}",
         "not a CloudEvent: Failed to find specversion in HTTP request"),
        ("no ce-time", {k: v for k, v in headers.items() if k != "ce-time"}, body,
         "event x1: no ce-time header (when the request was served)"),
        ("unknown type", *binary(unknown),
         "event x2: unknown type 'org.kubeflow.serving.inference.explain' (expected one of "
         "org.kubeflow.serving.inference.request, org.kubeflow.serving.inference.response, "
         "org.fraudrollout.serving.shadow.pair)"),
        ("no model_version", *binary(no_version),
         "event x5: the response has no 'model_version' (the version that answered)"),
        ("batch not a list", {"content-type": "application/cloudevents-batch+json"}, b'{"id": 1}',
         "a batch must be a JSON list of structured CloudEvents"),
        ("batch event without id", {"content-type": "application/cloudevents-batch+json"},
         b'[{"specversion": "1.0", "type": "t", "source": "s", "time": "2025-01-01T00:00:00Z"}]',
         "batch event 0: not a CloudEvent: missing id"),
    ]


@pytest.mark.parametrize("case, headers, body, message", bad_cases(), ids=[case[0] for case in bad_cases()])
def test_a_bad_event_is_a_400_naming_it_and_nothing_is_written(sink, tmp_path, case, headers, body, message):
    assert post(sink, headers, body) == (400, {"error": message})
    with open_store(str(tmp_path / "predictions.db")) as store:
        assert store.counts()["logged"] + store.counts()["answered"] == 0
    assert post(sink, *binary(pair("ok")[0])) == (200, {"accepted": 1, "duplicates": 0})  # still serving


def test_a_request_the_transformer_refused_is_kept_without_rows_and_its_batch_is_not_lost(sink, tmp_path):
    # KServe's agent logs every request, the ones the transformer answers 400 too (no response follows)
    request, response = pair("ok1")
    headers, _ = binary(request)
    refused = [kserve_event("r1", REQUEST_EVENT, {"inputs": []}),
               kserve_event("r2", REQUEST_EVENT, request_body(features(2), ["a", ""]))]
    assert post(sink, *batch([request, response, *refused])) == (200, {"accepted": 4, "duplicates": 0})
    assert post(sink, {**headers, "ce-id": "r3"}, b"{not json") == (200, {"accepted": 1, "duplicates": 0})
    with open_store(str(tmp_path / "predictions.db")) as store:
        counts = store.counts()
        assert (counts["logged"], counts["answered"]) == (4, 1)
        assert set(store.served()["event_id"]) == {"ok1"} and counts["rows"] == len(store.served())


def test_start_errors_exit_2_with_one_line(tmp_path, sink):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "fraud_control.prediction_log.sink", *args], capture_output=True,
                              text=True, timeout=60)

    (tmp_path / "file").write_text("")
    for args, message in [
        (("--store", "mysql://h/db", "--port", "0"),
         "prediction-sink: error: store URL 'mysql://h/db': use a file path, sqlite:///PATH or "
         "postgresql://USER@HOST:PORT/DB"),
        (("--store", str(tmp_path / "file" / "p.db"), "--port", "0"),
         f"prediction-sink: error: store '{tmp_path / 'file' / 'p.db'}': cannot create its directory (File exists)"),
    ]:
        done = run(*args)
        assert (done.returncode, done.stderr.strip()) == (2, message)
    busy = run("--store", str(tmp_path / "other.db"), "--port", str(sink.port))
    assert busy.returncode == 2 and len(busy.stderr.strip().splitlines()) == 1
    assert busy.stderr.startswith(f"prediction-sink: error: --host 127.0.0.1 --port {sink.port}: cannot listen "
                                  "there: Address already in use (held by pid ")


def load_until(sink_url: list[str], stop: threading.Event, acked: list[str], prefix: str, workers: int = 32) -> None:
    """`workers` clients posting batches (a request and its response, 2 rows) until `stop`; the
    ids of each 200 go to `acked`; a refused connection (the sink is down) is retried."""
    def client(worker: int) -> None:
        with httpx.Client(timeout=10) as http:
            n = 0
            while not stop.is_set():
                event_id = f"{prefix}-{worker}-{n}"
                # served now: the restarted sink's retention (90 days) keeps them
                headers, body = batch(list(pair(event_id, at=datetime.now(UTC))))
                try:
                    response = http.post(f"{sink_url[0]}/", headers=headers, content=body)
                except httpx.TransportError:
                    time.sleep(0.01)  # down: the poster retries the same events
                    continue
                if response.status_code == 200:
                    acked.append(event_id)
                    n += 1

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(client, range(workers)))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_kill_9_under_load_loses_no_acknowledged_event(tmp_path, request, backend):
    url = str(tmp_path / "predictions.db") if backend == "sqlite" else request.getfixturevalue("postgres_url")
    sink = start_sink(url, tmp_path / "sink.log")
    target, stop, acked = [sink.url], threading.Event(), []
    load = threading.Thread(target=load_until, args=(target, stop, acked, "k"))
    load.start()
    try:
        deadline = time.monotonic() + 30
        while len(acked) < 300 and time.monotonic() < deadline:
            time.sleep(0.01)
        sink.kill()  # kill -9 mid-load
        acked_before_kill = len(acked)
        sink = start_sink(url, tmp_path / "sink.log", port=sink.port)  # same store, same port
        while len(acked) < acked_before_kill + 200 and time.monotonic() < deadline + 30:
            time.sleep(0.01)
    finally:
        stop.set()
        load.join()
        sink.stop()
    assert acked_before_kill >= 300 and len(acked) >= acked_before_kill + 200
    with open_store(url) as store:
        served = store.served()
        counts = store.counts()
    per_event = served.groupby("event_id")
    # every acknowledged event exactly once (a client retrying after the kill may add one that was
    # committed but not acknowledged: stored, never twice)
    assert set(acked) <= set(per_event.groups) and len(set(acked)) == len(acked)
    assert counts["logged"] == counts["answered"] == len(per_event)
    # nothing half written: each event has both rows, each row its request and its response
    assert (per_event.size() == 2).all()
    assert served["features"].notna().all() and served["score"].notna().all()
    assert counts["rows"] == 2 * counts["logged"] and counts["per_version"] == {"v2": counts["rows"]}
