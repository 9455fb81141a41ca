"""Transformer validation and scaling, routing, metrics and the v2 body parser, in process."""
from __future__ import annotations

import asyncio
import json

import numpy as np
import orjson
import pytest
from fraud.contract import FeatureContract
from fraud.routes import Backend, write_routes
from fraud.schema import FEATURES
from fraud_control.inferenceservice import isvc
from fraud_serving.__main__ import build_parser
from fraud_serving.fast_route import INFERENCE_CONTENT_LENGTH_HEADER, binary_request, parse_request
from fraud_serving.metrics import ScoreHistogram, TransformerMetrics
from fraud_serving.routing import NoPredictor, Routes, TagHosts
from fraud_serving.transformer import FraudTransformer
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferRequest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from scipy import stats


@pytest.fixture
def contract() -> FeatureContract:
    rng = np.random.default_rng(1)
    return FeatureContract(FEATURES, {"Time": "seconds_of_day", "Amount": "log1p"},
                           tuple(rng.normal(size=len(FEATURES))), tuple(rng.uniform(0.5, 2, size=len(FEATURES))))


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def transformer(contract, registry) -> FraudTransformer:
    model = FraudTransformer("fraud-detector", contract, Routes([Backend("http://127.0.0.1:1", "r1", "v1", 100)]),
                             TransformerMetrics(registry), max_rows=100)
    model.load()
    return model


def raw_rows(n: int, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(n, len(FEATURES)))
    rows[:, 0] = np.arange(n) * 1000.0  # Time
    rows[:, -1] = np.abs(rows[:, -1]) * 50  # Amount
    return rows


def matrix_request(rows, datatype="FP64", name="transactions", shape=None) -> InferRequest:
    rows = np.asarray(rows)
    return InferRequest("fraud-detector", [InferInput(name, shape or list(rows.shape), datatype,
                                                      data=rows.tolist())])


def column_request(rows: np.ndarray, names=FEATURES) -> InferRequest:
    return InferRequest("fraud-detector", [InferInput(name, [len(rows)], "FP64", data=rows[:, i].tolist())
                                           for i, name in enumerate(names)])


def with_ids(request: InferRequest, ids: list, datatype: str = "BYTES") -> InferRequest:
    return InferRequest("fraud-detector", [*request.inputs, InferInput("transaction_id", [len(ids)], datatype,
                                                                          data=ids)])


def test_transaction_ids_are_checked_and_dropped_before_scaling_in_both_forms(transformer, contract):
    rows = raw_rows(3)
    ids = ["tx-7-0", "tx-7-1", "tx-7-2"]
    for request in (with_ids(matrix_request(rows), ids), with_ids(column_request(rows), ids)):
        scaled = asyncio.run(transformer.preprocess(request)).inputs
        assert [(t.name, t.shape) for t in scaled] == [("scaled_features", [3, 30])]
        np.testing.assert_array_equal(scaled[0].data, contract.transform(rows))
    assert {"name": "transaction_id", "datatype": "BYTES", "shape": [-1]} in transformer.get_input_types()


def test_both_input_forms_scale_with_the_contract(transformer, contract):
    rows = raw_rows(7)
    expected = contract.transform(rows)
    matrix = asyncio.run(transformer.preprocess(matrix_request(rows)))
    columns = asyncio.run(transformer.preprocess(column_request(rows[:, ::-1], FEATURES[::-1])))
    for scaled_request in (matrix, columns):
        tensor = scaled_request.inputs[0]
        assert (tensor.name, tensor.datatype, tensor.shape) == ("scaled_features", "FP32", [7, 30])
        np.testing.assert_array_equal(tensor.data, expected)


@pytest.mark.parametrize("request_factory, reason, field", [
    (lambda: matrix_request(raw_rows(2)[:, :29]), "shape", "transactions"),
    (lambda: matrix_request(raw_rows(2), datatype="INT32"), "datatype", "INT32"),
    (lambda: matrix_request(np.where(np.eye(2, 30, 4) > 0, np.nan, raw_rows(2))), "nan", "V4"),
    (lambda: matrix_request(raw_rows(2) * np.r_[1, [1] * 28, -1]), "negative_value", "Amount"),
    (lambda: matrix_request(raw_rows(101)), "row_limit", "101 rows"),
    (lambda: matrix_request([["x"] * 30]), "element_type", "FP64 data must be numbers; found a string at element 0"),
    (lambda: column_request(raw_rows(2)[:, :-1], FEATURES[:-1]), "missing_column", "Amount"),
    (lambda: column_request(raw_rows(2), (*FEATURES[:-1], "Amt")), "unknown_column", "Amt"),
    (lambda: column_request(raw_rows(2), (*FEATURES[:-1], "V1")), "duplicate_column", "V1"),
    (lambda: InferRequest("fraud-detector", []), "empty", "no inputs"),
    (lambda: with_ids(matrix_request(raw_rows(2)), ["a"]), "transaction_id", r"shape \[1\] is not \[2\]"),
    (lambda: with_ids(column_request(raw_rows(2)), ["a", 7]), "transaction_id", "found a number at element 1"),
    (lambda: with_ids(matrix_request(raw_rows(1)), ["a"], "INT64"), "transaction_id", "datatype INT64 is not BYTES"),
])
def test_invalid_requests_name_the_field_and_count_the_reason(transformer, registry, request_factory, reason,
                                                               field):
    with pytest.raises(InvalidInput, match=field):
        asyncio.run(transformer.preprocess(request_factory()))
    assert registry.get_sample_value("fraud_rejected_requests_total", {"reason": reason}) == 1


def test_unreachable_predictor_is_an_inference_error_and_counted(contract, registry):
    """Connection refused on a real socket: a 5xx (InferenceError), never a client error, and counted."""
    from fraud.processes import free_port
    from kserve.errors import InferenceError

    model = FraudTransformer("fraud-detector", contract, Routes.single(f"127.0.0.1:{free_port()}"),
                             TransformerMetrics(registry))

    async def call():
        try:
            return await model(matrix_request(raw_rows(1)), {})
        finally:
            await model.close()

    with pytest.raises(InferenceError, match="cannot reach predictor"):
        asyncio.run(call())
    assert registry.get_sample_value("fraud_predictor_errors_total", {"model_version": "unknown"}) == 1


def test_score_histogram_equals_prometheus_histogram(registry):
    scores = np.r_[np.random.default_rng(2).uniform(size=500), [0.5, 0.01, 1.0, 0.0]].astype(np.float32)
    ours = ScoreHistogram()
    ours.observe("v2", scores[:100])
    ours.observe("v2", scores[100:])
    registry.register(ours)
    reference_registry = CollectorRegistry()
    reference = Histogram("fraud_score", "x", ["model_version"], buckets=ours.bounds.tolist(),
                          registry=reference_registry)
    for value in scores:
        reference.labels("v2").observe(float(value))
    for le in [*map(repr, ours.bounds.tolist()), "+Inf"]:
        labels = {"model_version": "v2", "le": le}
        assert (registry.get_sample_value("fraud_score_bucket", labels)
                == reference_registry.get_sample_value("fraud_score_bucket", labels)), le
    assert registry.get_sample_value("fraud_score_sum", {"model_version": "v2"}) == pytest.approx(
        reference_registry.get_sample_value("fraud_score_sum", {"model_version": "v2"}), rel=1e-6)
    assert b"# TYPE fraud_score histogram" in generate_latest(registry)


def test_routes_split_by_percent_and_follow_the_file(tmp_path):
    routes_file = tmp_path / "routes.json"
    write_routes(routes_file, [Backend("http://a", "r2", "v2", 20), Backend("http://b", "r1", "v1", 80)], 2)
    routes = Routes(routes_file=routes_file)
    picks = [routes.pick().model_version for _ in range(10_000)]
    low, high = (stats.binom.ppf(q, 10_000, 0.2) / 10_000 for q in (0.0005, 0.9995))  # fails 1 run in 1,000
    assert low <= picks.count("v2") / len(picks) <= high
    # seeded: the split is a function of each request's key, whatever the order it comes in
    keys = [f"tx-7-{i}" for i in range(10_000)]
    seeded = [Routes(routes_file=routes_file, seed=7).pick(k).model_version for k in keys[:50]]
    again = Routes(routes_file=routes_file, seed=7)
    assert [again.pick(k).model_version for k in reversed(keys[:50])] == seeded[::-1]
    share = sum(again.pick(k).model_version == "v2" for k in keys) / len(keys)
    assert low <= share <= high
    write_routes(routes_file, [Backend("http://a", "r2", "v2", 0), Backend("http://b", "r1", "v1", 100)], 3)
    import os
    os.utime(routes_file, ns=(1, 1))  # a distinct mtime even within the same clock tick
    assert {routes.pick().model_version for _ in range(100)} == {"v1"}
    assert routes.generation == 3
    write_routes(routes_file, [], 4)
    os.utime(routes_file, ns=(2, 2))
    with pytest.raises(NoPredictor):
        routes.pick()


def test_v2_body_parser_json_binary_and_errors():
    rows = raw_rows(3)
    parsed = parse_request(json.dumps({"id": "a", "inputs": [{"name": "transactions", "shape": [3, 30],
                                                               "datatype": "FP64", "data": rows.tolist()}]}).encode(),
                           {}, "fraud-detector")
    assert parsed.id == "a"
    np.testing.assert_array_equal(parsed.inputs[0].as_numpy(), rows)
    body, json_length = binary_request("b", "transactions", rows.astype(np.float32), "FP32")
    parsed = parse_request(body, {INFERENCE_CONTENT_LENGTH_HEADER: str(json_length)}, "fraud-detector")
    np.testing.assert_array_equal(parsed.inputs[0].as_numpy(), rows.astype(np.float32))
    for bad in (b"{", b"[]", b'{"inputs": 3}', b'{"inputs": [{"name": 1}]}',
                b'{"inputs": [{"name": "x", "shape": [-1], "datatype": "FP64", "data": []}]}',
                orjson.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": "1"}]})):
        with pytest.raises(InvalidInput):
            parse_request(bad, {}, "fraud-detector")
    with pytest.raises(InvalidInput, match="binary_data_size"):
        parse_request(body[:-4], {INFERENCE_CONTENT_LENGTH_HEADER: str(json_length)}, "fraud-detector")


def test_entry_point_accepts_the_container_args_of_the_inference_service():
    """The args in isvc.py, plus what KServe injects into a transformer, parse unchanged."""
    manifest = isvc.inference_service(isvc.IsvcSpec(storage_uri="s3://m/v1", model_version="v1", contract_id="c"))
    predictor_args = manifest["spec"]["predictor"]["containers"][0]["args"]
    transformer_args = manifest["spec"]["transformer"]["containers"][0]["args"] + [
        "--model_name", "fraud-detector", "--predictor_host", "fraud-detector-predictor.default", "--http_port", "8080"]
    predictor = build_parser().parse_args(predictor_args)
    assert (predictor.role, predictor.model_name, predictor.model_dir, predictor.http_port) == (
        "predictor", "fraud-detector", "/mnt/models", 8080)
    transformer = build_parser().parse_args(transformer_args)
    assert (transformer.role, transformer.predictor_protocol, transformer.contract_dir, transformer.predictor_host,
            transformer.max_rows) == ("transformer", "v2", "/mnt/models", "fraud-detector-predictor.default", 10_000)
    assert TagHosts.parse(transformer.shadow_hosts).retry_target("").url == "http://prev-fraud-detector-predictor.default"


def test_predict_reads_csv_and_json_files(tmp_path):
    import pandas as pd
    from fraud_serving.client import read_transactions

    rows = raw_rows(3)
    frame = pd.DataFrame(rows, columns=FEATURES).assign(Class=0)
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_json(tmp_path / "records.json", orient="records")
    for name in ("t.csv", "records.json"):
        body = read_transactions(tmp_path / name)
        tensor = body["inputs"][0]
        assert (tensor["name"], tensor["shape"], tensor["datatype"]) == ("transactions", [3, 30], "FP64")
        np.testing.assert_allclose(np.reshape(tensor["data"], tensor["shape"]), rows)
    (tmp_path / "v2.json").write_text(json.dumps(body))
    assert read_transactions(tmp_path / "v2.json") == body  # a v2 request goes as it is
    frame.drop(columns="V7").to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(ValueError, match="V7"):
        read_transactions(tmp_path / "short.csv")


@pytest.mark.parametrize("answered, registered", [("2", "v2"), ("1", "v1"), ("v2", "v2"), ("", "unknown")])
def test_a_triton_version_directory_is_reported_as_the_registered_version(contract, registry, answered, registered):
    """KServe's Triton runtime answers `model_version` "2" (the export's version directory); the
    transformer's response and metrics say "v2", as our predictor does and the analysis expects.
    A real HTTP server answers with Triton's v2 response body."""
    from aiohttp import web

    async def triton_infer(request: web.Request) -> web.Response:
        body = await request.json()
        rows = body["inputs"][0]["shape"][0]
        return web.json_response({"model_name": "fraud-detector", "model_version": answered, "id": body["id"],
                                  "outputs": [{"name": "fraud_probability", "datatype": "FP32", "shape": [rows],
                                               "data": [0.9] * rows},
                                              {"name": "is_fraud", "datatype": "INT32", "shape": [rows],
                                               "data": [1] * rows}]})

    async def call():
        app = web.Application()
        app.router.add_post("/v2/models/fraud-detector/infer", triton_infer)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        model = FraudTransformer("fraud-detector", contract, Routes.single(f"127.0.0.1:{port}"),
                                 TransformerMetrics(registry))
        try:
            return await model(matrix_request(raw_rows(3)), {})
        finally:
            await model.close()
            await runner.cleanup()

    response, _ = asyncio.run(call())
    assert response.model_version == registered
    assert registry.get_sample_value("fraud_predictions_total", {"model_version": registered, "decision": "fraud"}) == 3
    assert registry.get_sample_value("fraud_request_seconds_count", {"model_version": registered}) == 1


def test_other_is_the_revision_besides_the_one_given_preferring_one_with_traffic():
    v1, v2, old = (Backend("http://127.0.0.1:1", "r1", "v1", 80), Backend("http://127.0.0.1:2", "r2", "v2", 20),
                   Backend("http://127.0.0.1:3", "r0", "v0", 0))
    routes = Routes([old, v1, v2])
    assert routes.other(v2) == v1
    assert routes.other(v1) == v2
    assert Routes([v1]).other(v1) is None
    assert Routes([v1, Backend("http://127.0.0.1:2", "r2", "v2", 0)]).other(v1).revision == "r2"


def test_numbers_equal_to_zero_or_one_are_not_mistaken_for_booleans(transformer, contract):
    rows = np.tile(np.r_[0.0, 1.0], 15)[None, :].repeat(3, axis=0)  # every value a suspect, none a boolean
    rows[:, [0, -1]] = 1  # ints too: JSON 1 is a number
    scaled = asyncio.run(transformer.preprocess(matrix_request(rows.astype(int))))
    np.testing.assert_allclose(scaled.inputs[0].data, contract.transform(rows), rtol=1e-6)


@pytest.mark.parametrize("data, shape, found", [
    ([[1.0] * 29 + [True]], [1, 30], "a boolean at element 29"),
    ([[1.0] * 30, [0.0] * 3 + [False] + [0.0] * 26], [2, 30], "a boolean at element 33"),
    ([1.0] * 30 + [1.0] * 4 + [True] + [1.0] * 25, [2, 30], "a boolean at element 34"),  # flat data
    ([[1.0] * 10 + ["NaN"] + [1.0] * 19], [1, 30], "a string at element 10"),
    ([[1.0] * 30, [1.0] * 2 + [None] + [1.0] * 27], [2, 30], "null at element 32"),
    ([[1.0] * 5 + [[1.0]] + [1.0] * 24], [1, 30], "a list at element 5"),
])
def test_a_non_number_is_named_with_its_kind_and_flat_index(transformer, registry, data, shape, found):
    request = InferRequest("fraud-detector", [InferInput("transactions", shape, "FP32", data=data)])
    with pytest.raises(InvalidInput) as refused:
        asyncio.run(transformer.preprocess(request))
    assert str(refused.value) == f"input 'transactions': FP32 data must be numbers; found {found}"
    assert registry.get_sample_value("fraud_rejected_requests_total", {"reason": "element_type"}) == 1


def test_the_body_limit_follows_the_row_limit(transformer):
    assert transformer.max_rows == 100
    assert transformer.max_body_bytes == 100 * 30 * 48 + 64 * 1024
