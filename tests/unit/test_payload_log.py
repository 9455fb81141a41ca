"""The transformer's payload logger (KServe agent's CloudEvents) over real HTTP on loopback.

The transformer is our fast route on a real uvicorn server in front of a predictor stand-in
(aiohttp, a fixed v2 answer); the sink is an aiohttp server recording what it receives (this
tests the poster, not the sink).
"""
from __future__ import annotations

import asyncio
import base64
import time
import uuid
from contextlib import asynccontextmanager
from datetime import datetime

import aiohttp
import numpy as np
import orjson
import pytest
import uvicorn
from aiohttp import web
from fastapi import FastAPI
from fraud.contract import FeatureContract
from fraud.inference_log import PAIR_EVENT, REQUEST_EVENT, RESPONSE_EVENT
from fraud.processes import free_port
from fraud.schema import FEATURES
from fraud_serving.fast_route import INFERENCE_CONTENT_LENGTH_HEADER, binary_request, install_fast_infer_route
from fraud_serving.metrics import TransformerMetrics
from fraud_serving.payload_log import (
    BATCH_CONTENT_TYPE,
    EventSource,
    PayloadLogger,
    PayloadLogMetrics,
)
from fraud_serving.routing import Routes
from fraud_serving.transformer import FraudTransformer
from kserve.errors import InvalidInput, invalid_input_handler
from prometheus_client import CollectorRegistry

NAME = "fraud-detector"
SOURCE = EventSource(NAME, "fraud", "http://localhost:8080/")
FAST_RETRY = (0.01, 0.05)


async def until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


class Sink:
    """A recording CloudEvents receiver: every POST's content type and events (a batch is a list)."""

    def __init__(self, refuse_id: str | None = None) -> None:
        self.posts: list[tuple[str, list[dict]]] = []
        self.refuse_id = refuse_id

    @property
    def events(self) -> list[dict]:
        return [event for _, events in self.posts for event in events]

    async def receive(self, request: web.Request) -> web.Response:
        events = orjson.loads(await request.read())
        if any(event["id"] == self.refuse_id for event in events):
            return web.json_response({"error": "bad event"}, status=400)
        self.posts.append((request.content_type, events))
        return web.Response(status=200)

    @asynccontextmanager
    async def serving(self, port: int):
        app = web.Application()
        app.router.add_post("/", self.receive)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            yield f"http://127.0.0.1:{port}/"
        finally:
            await runner.cleanup()


@asynccontextmanager
async def predictor():
    async def infer(request: web.Request) -> web.Response:
        body = await request.json()
        rows = body["inputs"][0]["shape"][0]
        return web.json_response({"model_name": NAME, "model_version": "v1", "id": body["id"], "outputs": [
            {"name": "fraud_probability", "datatype": "FP32", "shape": [rows], "data": [0.25] * rows},
            {"name": "is_fraud", "datatype": "INT32", "shape": [rows], "data": [0] * rows}]})

    app = web.Application()
    app.router.add_post(f"/v2/models/{NAME}/infer", infer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def transformer(sink_url: str, registry: CollectorRegistry, max_queue: int = 100, traffic: bool = True):
    """Our transformer on a real uvicorn server; yields (infer URL, its payload logger)."""
    rng = np.random.default_rng(1)
    contract = FeatureContract(FEATURES, {"Time": "seconds_of_day", "Amount": "log1p"},
                               tuple(rng.normal(size=len(FEATURES))), tuple(rng.uniform(0.5, 2, size=len(FEATURES))))
    async with predictor() as predictor_host:
        model = FraudTransformer(NAME, contract, Routes.single(predictor_host), TransformerMetrics(registry))
        model.payload_logger = PayloadLogger(sink_url, SOURCE, PayloadLogMetrics(registry), max_queue=max_queue,
                                             backoff_seconds=FAST_RETRY, close_seconds=0.5, traffic=traffic)
        model.load()
        app = FastAPI()
        app.add_exception_handler(InvalidInput, invalid_input_handler)
        install_fast_infer_route(app, {NAME: model})
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
        serving = asyncio.get_running_loop().create_task(server.serve())
        await until(lambda: server.started)
        try:
            yield f"http://127.0.0.1:{server.config.port}/v2/models/{NAME}/infer", model.payload_logger
        finally:
            server.should_exit = True
            await serving
            await model.close()


def rows(n: int) -> np.ndarray:
    raw = np.random.default_rng(n).normal(size=(n, len(FEATURES)))
    raw[:, 0], raw[:, -1] = 100.0, 12.5  # Time, Amount: non-negative
    return raw


def v2_body(raw: np.ndarray, request_id: str) -> bytes:
    return orjson.dumps({"id": request_id, "inputs": [{"name": "transactions", "shape": list(raw.shape),
                                                       "datatype": "FP64", "data": raw.ravel().tolist()}]})


def sample(registry: CollectorRegistry, name: str, **labels) -> float | None:
    return registry.get_sample_value(name, labels)


def test_events_are_the_agents_request_and_response_with_the_ce_id_and_response_only_on_200():
    registry, sink = CollectorRegistry(), Sink()
    bad = rows(1)
    bad[0, -1] = -1.0  # a negative Amount: 400
    binary, json_length = binary_request("tx-bin", "transactions", rows(2), "FP64")

    async def run():
        async with sink.serving(free_port()) as sink_url, transformer(sink_url, registry) as (url, _):
            async with aiohttp.ClientSession() as client:
                before = time.time()
                answers = {}
                for key, data, headers in [
                        ("with_ce_id", v2_body(rows(3), "req-1"), {"Ce-Id": "req-1", "content-type": "application/json"}),
                        ("fresh", v2_body(rows(1), "req-2"), {"content-type": "application/json"}),
                        ("bad", v2_body(bad, "req-3"), {"Ce-Id": "req-3", "content-type": "application/json"}),
                        ("malformed", b"{not json", {"Ce-Id": "req-4", "content-type": "application/json"}),
                        ("binary", binary, {"Ce-Id": "tx-bin", "content-type": "application/octet-stream",
                                            INFERENCE_CONTENT_LENGTH_HEADER: str(json_length)})]:
                    async with client.post(url, data=data, headers=headers) as answer:
                        answers[key] = (answer.status, await answer.read())
                after = time.time()
            await until(lambda: len(sink.events) == 8)
            return answers, before, after

    answers, before, after = asyncio.run(run())
    assert {key: status for key, (status, _) in answers.items()} == {
        "with_ce_id": 200, "fresh": 200, "bad": 400, "malformed": 400, "binary": 200}
    assert {content_type for content_type, _ in sink.posts} == {BATCH_CONTENT_TYPE}
    events = sink.events
    fresh_id = events[2]["id"]
    assert uuid.UUID(fresh_id).version == 4  # no Ce-Id header: a fresh UUID, shared by both events
    assert [(e["type"], e["id"]) for e in events] == [
        (REQUEST_EVENT, "req-1"), (RESPONSE_EVENT, "req-1"), (REQUEST_EVENT, fresh_id), (RESPONSE_EVENT, fresh_id),
        (REQUEST_EVENT, "req-3"), (REQUEST_EVENT, "req-4"),  # 400s: the request is logged, no response
        (REQUEST_EVENT, "tx-bin"), (RESPONSE_EVENT, "tx-bin")]
    for event in events:
        assert {key: event[key] for key in ("specversion", "source", "inferenceservicename", "namespace",
                                            "component", "endpoint", "metadata")} == {
            "specversion": "1.0", "source": "http://localhost:8080/", "inferenceservicename": NAME,
            "namespace": "fraud", "component": "transformer", "endpoint": "default", "metadata": "{}"}
        occurred = datetime.strptime(event["time"], "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
        assert before - 1 <= occurred <= after + 1 and event["time"] <= event["recordedtime"]
    request, response = events[0], events[1]
    assert request["datacontenttype"] == response["datacontenttype"] == "application/json"  # the request's, as KServe
    assert request["data"] == orjson.loads(v2_body(rows(3), "req-1"))
    assert response["data"] == orjson.loads(answers["with_ce_id"][1])
    assert response["data"]["model_version"] == "v1" and request["time"] <= response["time"]
    assert events[4]["data"] == orjson.loads(v2_body(bad, "req-3"))  # refused by the model, valid JSON
    assert base64.b64decode(events[5]["data_base64"]) == b"{not json"  # not JSON: as it came, base64
    assert base64.b64decode(events[6]["data_base64"]) == binary  # the binary tensor extension
    assert orjson.loads(base64.b64decode(events[7]["data_base64"])) == orjson.loads(answers["binary"][1])
    assert sample(registry, "fraud_payload_log_events_total", event_type="request") == 5
    assert sample(registry, "fraud_payload_log_events_total", event_type="response") == 3
    assert sample(registry, "fraud_payload_log_queue") == 0


def test_a_down_sink_never_fails_inference_and_the_bounded_queue_counts_its_drops():
    registry, port = CollectorRegistry(), free_port()  # nothing listens there

    async def run():
        async with transformer(f"http://127.0.0.1:{port}/", registry, max_queue=10) as (url, logger):
            async with aiohttp.ClientSession() as client:
                statuses = []
                for n in range(20):
                    async with client.post(url, data=v2_body(rows(1), f"r{n}"),
                                           headers={"content-type": "application/json"}) as answer:
                        statuses.append(answer.status)
            return statuses, logger.queued

    statuses, queued = asyncio.run(run())
    assert statuses == [200] * 20
    assert queued == 10
    assert sample(registry, "fraud_payload_log_dropped_total", reason="queue_full") == 30
    assert sample(registry, "fraud_payload_log_dropped_total", reason="shutdown") == 10  # close gave up on them
    assert sample(registry, "fraud_payload_log_events_total", event_type="request") == 0  # exported from the start


def test_events_kept_while_the_sink_is_down_are_delivered_once_it_is_back():
    registry, port, sink = CollectorRegistry(), free_port(), Sink()
    logger = PayloadLogger(f"http://127.0.0.1:{port}/", SOURCE, PayloadLogMetrics(registry), max_queue=5,
                           backoff_seconds=FAST_RETRY)

    async def run():
        for n in range(8):
            logger.log_request(f"r{n}", time.time(), v2_body(rows(1), f"r{n}"), "application/json", True)
        await until(lambda: sample(registry, "fraud_payload_log_dropped_total", reason="queue_full") == 3)
        await until(lambda: (sample(registry, "fraud_payload_log_post_errors_total") or 0) >= 2)  # refused, retried
        assert logger.queued == 5 and sink.events == []
        async with sink.serving(port):
            await until(lambda: logger.queued == 0)
            await logger.close()

    asyncio.run(run())
    assert [event["id"] for event in sink.events] == [f"r{n}" for n in range(5)]
    assert sample(registry, "fraud_payload_log_events_total", event_type="request") == 5
    assert sample(registry, "fraud_payload_log_queue") == 0


def test_a_logger_of_shadow_pairs_only_posts_no_request_or_response():
    """`--logger_events pairs` (a cluster: KServe's agent logs the traffic): the served requests post
    nothing, a shadow pair does."""
    registry, sink = CollectorRegistry(), Sink()

    async def run():
        async with sink.serving(free_port()) as sink_url, transformer(sink_url, registry, traffic=False) as (url, logger):
            async with aiohttp.ClientSession() as client:
                for n in range(3):
                    async with client.post(url, data=v2_body(rows(1), f"r{n}"),
                                           headers={"content-type": "application/json"}) as answer:
                        assert answer.status == 200
            logger.log_pair("r0", time.time(), b'{"transaction_id": ["t"]}')
            await until(lambda: len(sink.events) == 1)
            await until(lambda: logger.queued == 0)

    asyncio.run(run())
    assert [(event["type"], event["id"]) for event in sink.events] == [(PAIR_EVENT, "r0")]
    assert sample(registry, "fraud_payload_log_events_total", event_type="request") == 0
    assert sample(registry, "fraud_payload_log_events_total", event_type="pair") == 1


def test_an_event_the_sink_refuses_is_dropped_alone_and_counted():
    registry, sink = CollectorRegistry(), Sink(refuse_id="poison")

    async def run():
        async with sink.serving(free_port()) as sink_url:
            logger = PayloadLogger(sink_url, SOURCE, PayloadLogMetrics(registry), backoff_seconds=FAST_RETRY)
            for ce_id in ("a", "b", "poison", "c", "d"):
                logger.log_request(ce_id, time.time(), b'{"inputs": []}', "application/json", True)
            await until(lambda: logger.queued == 0)
            await logger.close()

    asyncio.run(run())
    assert sorted(event["id"] for event in sink.events) == ["a", "b", "c", "d"]
    assert sample(registry, "fraud_payload_log_dropped_total", reason="rejected") == 1
    assert sample(registry, "fraud_payload_log_events_total", event_type="request") == 4


@pytest.mark.parametrize("content_type, body, is_json, expected", [
    ("application/json", b'{"id": "x"}', True, {"data": {"id": "x"}}),
    ("", b'{"id": "x"}', True, {"data": {"id": "x"}}),  # no content type: JSON implied, attribute absent
    ("application/json", b"{not json", False, {"data_base64": base64.b64encode(b"{not json").decode()}),
    ("application/octet-stream", b'{"id": "x"}', True, {"data_base64": base64.b64encode(b'{"id": "x"}').decode()}),
])
def test_structured_event_embeds_only_bodies_known_to_be_json(content_type, body, is_json, expected):
    from fraud_serving.payload_log import structured_event

    event = orjson.loads(structured_event(REQUEST_EVENT, "x", 0.0, body, content_type, is_json, SOURCE, "default"))
    assert {key: event[key] for key in ("data", "data_base64") if key in event} == expected
    assert event.get("datacontenttype") == (content_type or None)
    assert event["time"] == "1970-01-01T00:00:00.000000Z"
