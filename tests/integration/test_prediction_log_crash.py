"""A crash of the prediction-log sink under inference load loses nothing (issue 11).

The local runtime serves an InferenceService whose transformer logger names a sink this test runs
itself (`deploy --prediction-log-url`, as in the cluster), on a fixed port. 32 clients keep
inferring while the sink is killed with SIGKILL and restarted on the same port and store. Every
inference must be answered 200 meanwhile, and once the transformer's payload logger has drained
the store must hold each answered request's request and response event exactly once: the events
the dead sink had committed but not acknowledged come again and are counted as duplicates, never
stored twice."""
from __future__ import annotations

import os
import signal
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import numpy as np
import pytest
from fraud import protocol
from fraud.inference_log import REQUEST_EVENT
from fraud.processes import free_port
from fraud.schema import FEATURES
from fraud.settings import Settings
from fraud_control.canary.deploy import deploy
from fraud_control.inferenceservice.local_state import LocalInferenceService
from fraud_control.local_runtime.runtime import LocalRuntime
from fraud_control.local_runtime.servers import start_sink as start_runtime_sink
from fraud_control.prediction_log.store import open_store
from fraud_ops.serving_session import LocalServing
from fraud_serving.client import infer_url
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_prediction_log_local import wait_logged
from tests.prediction_log import features, request_body
from tests.sink_process import SinkProcess, batch, kserve_event, start_sink

pytestmark = pytest.mark.integration

CONNECTIONS = 32
ROWS = 3  # per request
#: Answers to wait for before the kill and after the restart: the kill lands mid-load and the
#: restarted sink takes the outage's backlog while inference goes on.
BEFORE_KILL, AFTER_RESTART = 400, 400
PHASE_TIMEOUT_S = 60.0


@dataclass
class Load:
    """What the clients saw: each answered request (its id, version, transaction ids, when) and every failure."""

    answered: list[tuple[str, str, list[str], float]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, url: str, raw: np.ndarray) -> None:
        with ThreadPoolExecutor(CONNECTIONS) as pool:
            list(pool.map(lambda worker: self._client(url, raw, worker), range(CONNECTIONS)))

    def _client(self, url: str, raw: np.ndarray, worker: int) -> None:
        with httpx.Client(timeout=30) as http:
            n = 0
            while not self.stop.is_set():
                request_id = f"w{worker}-{n}"
                start = (worker * 7 + n * ROWS) % (len(raw) - ROWS)
                ids = [f"{request_id}-t{row}" for row in range(ROWS)]
                n += 1
                try:
                    response = http.post(url, json=protocol.request_body(raw[start:start + ROWS], request_id, ids),
                                         headers={"Ce-Id": request_id})
                except httpx.TransportError as error:
                    self.failures.append(f"{request_id}: {type(error).__name__} {error}")
                    continue
                if response.status_code != 200:
                    self.failures.append(f"{request_id}: {response.status_code} {response.text[:200]}")
                    continue
                self.answered.append((request_id, response.json()["model_version"], ids, time.monotonic()))

    def wait_answered(self, count: int) -> None:
        deadline = time.monotonic() + PHASE_TIMEOUT_S
        while len(self.answered) < count:
            assert not self.failures, self.failures[:5]
            assert time.monotonic() < deadline, f"{len(self.answered)} answered, {count} expected"
            time.sleep(0.01)  # between looks at the clients' count, not instead of one


def metric(url: str, name: str, by: str = "") -> dict[str, float]:
    """The samples `name` at `url`/metrics summed by their label `by` (under "" without it)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                key = sample.labels.get(by, "")
                totals[key] = totals.get(key, 0.0) + sample.value
    return totals


def wait_post_errors(url: str) -> float:
    """Until the transformer's payload logger has failed a post (it found the sink gone); their number."""
    deadline = time.monotonic() + PHASE_TIMEOUT_S
    while not (errors := metric(url, "fraud_payload_log_post_errors_total").get("", 0.0)):
        assert time.monotonic() < deadline, "the payload logger never failed a post to the killed sink"
        time.sleep(0.01)
    return errors


def stored_events(store_url: str) -> int:
    """Request, response and shadow-pair events in the store (a pair event holds its request's ROWS rows)."""
    with open_store(store_url) as store:
        counts = store.counts()
    return counts["logged"] + counts["answered"] + counts["paired"] // ROWS


def test_a_sink_killed_under_load_loses_no_event_and_fails_no_inference(tiny_run, tmp_path):
    # SQLite only: the local runtime's three servers take most of this test's ~40 s to start, and the
    # store's side of a kill -9 on PostgreSQL is test_prediction_sink's (the logger's side is the same)
    store_url = str(tmp_path / "prediction-log.sqlite")
    holdout = tiny_run.windows["holdout"]
    raw = holdout.loc[:, list(FEATURES)].to_numpy(dtype=np.float64)
    state = tmp_path / "state"
    sink: SinkProcess = start_sink(store_url, tmp_path / "sink.log", free_port())
    try:
        deploy("local", tiny_run.v1, tiny_run.v2, canary_percent=50, state_dir=state, prediction_log_url=sink.url,
               settings=Settings())
        load = Load()
        # serve's default shadow share (10 %): the shadow pairs' events go through the killed sink too
        with LocalServing(state, log_dir=tmp_path / "logs") as serving:
            runtime = serving.wait_applied()
            assert runtime["predictionLog"] == {"store": None, "sink": sink.url}
            clients = threading.Thread(target=load.run, args=(infer_url(serving.url), raw))
            started = time.monotonic()
            clients.start()
            try:
                load.wait_answered(BEFORE_KILL)
                sink.kill()  # SIGKILL mid-load, then wait() for it
                killed_at = time.monotonic()
                committed_at_kill = stored_events(store_url)
                post_errors_seen = wait_post_errors(serving.url)
                # the logger posts one batch at a time: once a post failed, no acknowledgement is on its way
                acknowledged_at_kill = sum(metric(serving.url, "fraud_payload_log_events_total", "event_type").values())
                noticed_at = time.monotonic()
                sink = start_sink(store_url, tmp_path / "sink.log", sink.port)  # same port, same store
                restarted_at = time.monotonic()
                load.wait_answered(len(load.answered) + AFTER_RESTART)
            finally:
                load.stop.set()
                clients.join()
            wait_logged(serving.url)
            acknowledged = metric(serving.url, "fraud_payload_log_events_total", "event_type")
            dropped = metric(serving.url, "fraud_payload_log_dropped_total", "reason")
            post_errors = metric(serving.url, "fraud_payload_log_post_errors_total")[""]
            sink_events = metric(sink.url, "fraud_sink_events_total", "outcome")  # the restarted sink's, by outcome
        assert serving.process.returncode == 0, serving.log_tail()  # stopped on SIGTERM, not killed after a hang
    finally:
        sink.stop()
    duration = time.monotonic() - started

    assert load.failures == []
    answered = len(load.answered)
    during_outage = sum(killed_at <= done < restarted_at for *_, done in load.answered)
    assert during_outage > 0  # inference never waits on the prediction log
    assert dropped == {}  # no event dropped, for no reason
    paired = acknowledged["pair"]
    assert acknowledged == {"request": answered, "response": answered, "pair": paired} and paired > 0
    per_version = Counter()
    for _, version, ids, _ in load.answered:
        per_version[version] += len(ids)
    with open_store(store_url) as store:
        counts = store.counts()
        served = store.served()
    assert (counts["logged"], counts["answered"], counts["rows"]) == (answered, answered, answered * ROWS)
    assert counts["per_version"] == dict(per_version) and set(per_version) == {"v1", "v2"}
    assert sorted(served["transaction_id"]) == sorted(t for _, _, ids, _ in load.answered for t in ids)
    assert served["score"].notna().all() and served["features"].notna().all()
    with open_store(store_url) as store:
        pairs = store.pairs()
    # every acknowledged pair event once, each with its request's rows, both versions' scores
    assert len(pairs) == paired * ROWS and not pairs.duplicated(["event_id", "row"]).any()
    assert set(pairs["transaction_id"]) <= set(served["transaction_id"])
    # The events the dead sink committed without acknowledging them were posted again: each one a
    # duplicate at the restarted sink, none stored twice, none lost.
    unacknowledged_committed = committed_at_kill - acknowledged_at_kill
    duplicates = sink_events.get("duplicate", 0.0)
    assert unacknowledged_committed >= 0
    assert duplicates == unacknowledged_committed
    assert sink_events.get("accepted") == 2 * answered + paired - committed_at_kill and "rejected" not in sink_events
    assert stored_events(store_url) == 2 * answered + paired == sum(acknowledged.values())
    print(f"\n{answered} requests answered in {duration:.1f} s, {during_outage} of them during the "
          f"{restarted_at - killed_at:.2f} s outage (post error seen after {noticed_at - killed_at:.2f} s); {post_errors:g} failed posts retried ({post_errors_seen:g} when "
          f"first seen); events stored {2 * answered + paired:g} ({paired:g} shadow pairs), acknowledged {sum(acknowledged.values()):g}; at the kill "
          f"{committed_at_kill} committed, {acknowledged_at_kill:g} acknowledged, {duplicates:g} duplicates re-posted")


def test_the_runtime_restarts_the_sink_it_runs_after_a_kill_9_on_the_same_port_and_store(tmp_path):
    """`serve --prediction-log` runs the sink: like a predictor, a sink that died is started again, on
    the port the transformer posts to, or every event after the transformer's queue fills is lost."""
    store_url, logs = str(tmp_path / "prediction-log.sqlite"), tmp_path / "logs"
    # the sink as start() starts it; no InferenceService, so step() has no predictor to start
    runtime = LocalRuntime(LocalInferenceService(tmp_path / "state"), prediction_log=store_url, log_dir=logs,
                           sink=start_runtime_sink(store_url, logs).wait_ready())
    first = runtime.sink
    events = batch([kserve_event("e1", REQUEST_EVENT, request_body(features(1), ["t1"]), at=datetime.now(UTC))])
    try:
        assert httpx.post(f"{first.url}/", headers=events[0], content=events[1]).json() == {"accepted": 1,
                                                                                        "duplicates": 0}
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait(10)
        deadline = time.monotonic() + PHASE_TIMEOUT_S
        while not (runtime.sink is not first and runtime.sink.ready()):
            assert runtime.sink is first or runtime.sink.alive(), runtime.sink.log_tail()
            assert time.monotonic() < deadline, "the runtime did not restart its sink"
            runtime.step()
            time.sleep(runtime.poll_seconds)  # the follow loop's interval
        assert runtime.sink.url == first.url and runtime.sink.process.pid != first.process.pid
        # the same store: the event committed before the kill is a duplicate now
        assert httpx.post(f"{runtime.sink.url}/", headers=events[0], content=events[1]).json() == {
            "accepted": 0, "duplicates": 1}
    finally:
        runtime.stop()
    assert not runtime.sink.alive()
