"""Predictor, transformer and the local canary runtime as real KServe ModelServer processes on loopback.

One `fraud-rollout serve` (v1 rolled out, v2 at 20 %) serves the module; the endpoint tests put a
cluster-wired transformer (`--predictor_host`) in front of its v1 predictor, the canary tests go
through the runtime's own transformer. The test that promotes and rolls back has a runtime of its
own (`fresh_canary_runtime`): the others see the module's runtime as it started, in any order.
"""
from __future__ import annotations

import asyncio
import collections
import json
import threading

import aiohttp
import httpx
import numpy as np
import pytest
from fraud.export import SignatureScorer
from fraud.processes import free_port
from fraud.schema import FEATURES
from fraud_control.inferenceservice import isvc
from fraud_serving.scoring import TOLERANCE
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

from tests.integration.serving_fixtures import (  # noqa: F401
    canary_runtime,
    fresh_canary_runtime,
    metric_value,
    serving_stack,
    v2_json,
)

pytestmark = pytest.mark.integration
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def holdout_raw(tiny_run) -> np.ndarray:
    return tiny_run.windows["holdout"].loc[:, list(FEATURES)].to_numpy(dtype=np.float64)


@pytest.fixture(scope="module")
def reference_v1(tiny_run, holdout_raw) -> dict[str, np.ndarray]:
    """The artifact's own signature on contract-scaled holdout features."""
    return SignatureScorer(tiny_run.v1)(tiny_run.contract.transform(holdout_raw))


def assert_matches(body: dict, reference: dict[str, np.ndarray], rows: slice | None = None) -> None:
    outputs = {output["name"]: output for output in body["outputs"]}
    assert outputs["fraud_probability"]["datatype"] == "FP32"
    assert outputs["is_fraud"]["datatype"] in {"INT32", "BOOL"}
    probability = np.asarray(outputs["fraud_probability"]["data"], dtype=np.float32)
    expected = reference["fraud_probability"][rows or slice(None)]
    assert probability.shape == expected.shape
    np.testing.assert_allclose(probability, expected, atol=TOLERANCE, rtol=0)
    decided = np.asarray(outputs["is_fraud"]["data"], dtype=np.int32)
    np.testing.assert_array_equal(decided, reference["is_fraud"][rows or slice(None)])


def test_whole_holdout_through_transformer_equals_the_signature(serving_stack, holdout_raw, reference_v1):
    assert len(holdout_raw) <= 10_000  # one request
    response = httpx.post(serving_stack.transformer.infer_url, content=v2_json(holdout_raw), headers=JSON,
                          timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == "v1"
    assert body["model_name"] == "fraud-detector"
    assert_matches(body, reference_v1)
    assert reference_v1["is_fraud"].sum() > 0  # the comparison covers both decisions


def test_named_feature_inputs_equal_the_matrix_form(serving_stack, holdout_raw, reference_v1):
    rows = slice(0, 64)
    body = {"inputs": [{"name": feature, "shape": [64], "datatype": "FP32" if i % 2 else "FP64",
                        "data": holdout_raw[rows, i].tolist()} for i, feature in enumerate(FEATURES)][::-1]}
    response = httpx.post(serving_stack.transformer.infer_url, json=body, timeout=30)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
    # FP32 columns lose precision before scaling, as the client asked; the model output barely moves
    np.testing.assert_allclose(outputs["fraud_probability"], reference_v1["fraud_probability"][rows], atol=1e-4)


def test_predictor_answers_v2_with_version_and_metadata(serving_stack, tiny_run, holdout_raw, reference_v1):
    predictor = serving_stack.predictor
    scaled = tiny_run.contract.transform(holdout_raw[:5])
    body = {"id": "r-1", "inputs": [{"name": "scaled_features", "shape": [5, 30], "datatype": "FP32",
                                     "data": scaled.tolist()}]}
    response = httpx.post(predictor.infer_url, json=body, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["model_version"] == "v1" and response.json()["id"] == "r-1"
    assert_matches(response.json(), reference_v1, slice(0, 5))
    metadata = httpx.get(f"{predictor.url}/v2/models/fraud-detector", timeout=10).json()
    assert metadata["inputs"] == [{"name": "scaled_features", "datatype": "FP32", "shape": [-1, 30]}]
    assert {o["name"]: o["datatype"] for o in metadata["outputs"]} == {"fraud_probability": "FP32",
                                                                       "is_fraud": "INT32"}
    transformer_metadata = httpx.get(f"{serving_stack.transformer.url}/v2/models/fraud-detector", timeout=10).json()
    assert [i["name"] for i in transformer_metadata["inputs"]] == ["transactions", *FEATURES, "transaction_id"]


@pytest.mark.parametrize("binary_data", [False, True])
def test_kserve_inference_rest_client_works_unmodified(serving_stack, holdout_raw, reference_v1, binary_data):
    async def call():
        request_input = InferInput("transactions", [16, 30], "FP64")
        request_input.set_data_from_numpy(holdout_raw[:16], binary_data=binary_data)
        client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30))
        try:
            assert await client.is_server_ready(serving_stack.transformer.url)
            assert await client.is_model_ready(serving_stack.transformer.url, "fraud-detector")
            return await client.infer(serving_stack.transformer.url, InferRequest("fraud-detector", [request_input]),
                                      model_name="fraud-detector")
        finally:
            await client.close()

    response = asyncio.run(call())
    # kserve 0.21's client parses v2 responses with InferResponse.from_bytes, which drops
    # model_version; the field is on the wire (test_whole_holdout_through_transformer_…)
    assert response.model_name == "fraud-detector"
    probability = response.get_output_by_name("fraud_probability").as_numpy()
    np.testing.assert_allclose(probability, reference_v1["fraud_probability"][:16], atol=TOLERANCE, rtol=0)
    np.testing.assert_array_equal(response.get_output_by_name("is_fraud").as_numpy(), reference_v1["is_fraud"][:16])


def _row(**overrides) -> list[float]:
    values = dict.fromkeys(FEATURES, 0.5)
    values.update({"Time": 3600.0, "Amount": 12.5, **overrides})
    return [values[f] for f in FEATURES]


def _matrix(rows, datatype="FP64", name="transactions", shape=None):
    rows = list(rows)
    return {"inputs": [{"name": name, "shape": shape or [len(rows), len(rows[0]) if rows else 30],
                        "datatype": datatype, "data": rows}]}


def _columns(drop=(), extra=(), duplicate=(), lengths=None, datatype="FP64", data=None):
    inputs = [{"name": f, "shape": [2], "datatype": datatype, "data": (data or {}).get(f, [1.0, 2.0])}
              for f in FEATURES if f not in drop]
    inputs += [{"name": f, "shape": [2], "datatype": "FP64", "data": [1.0, 2.0]} for f in (*extra, *duplicate)]
    for name, n in (lengths or {}).items():
        for entry in inputs:
            if entry["name"] == name:
                entry.update(shape=[n], data=[1.0] * n)
    return {"inputs": inputs}


def _ids(body: dict, data, datatype="BYTES", shape=None) -> dict:
    """`body` with the optional `transaction_id` input next to its features."""
    return {**body, "inputs": [*body["inputs"], {"name": "transaction_id", "shape": shape or [len(data)],
                                                 "datatype": datatype, "data": data}]}


SHAPE_HINT = "(columns in contract order: Time, V1 … Amount)"
IDS = "input 'transaction_id': ids must be strings of 1 to 128 characters; found"
NUMBERS = "input 'transactions': FP64 data must be numbers; found"
NUMBERS32 = "input 'transactions': FP32 data must be numbers; found"
LIMIT = 10_000 * 30 * 48 + 64 * 1024  # fast_route.body_limit for 10,000 rows
VERSIONS = ("model versions are not addressable (the InferenceService's traffic split picks the revision, the "
            "answer's model_version names it); use /v2/models/fraud-detector")
V1 = "the v1 protocol is not served; send Open Inference Protocol v2 to /v2/models/fraud-detector/infer"
MEDIA = ("is not accepted; send application/json (or application/octet-stream with "
         "inference-header-content-length)")
ALL_COLUMNS_BUT_V4 = ", ".join(f"{f} [3]" if f == "V4" else f"{f} [2]" for f in FEATURES)


def _with(body: dict, **fields) -> dict:
    return {**body, **fields}


def _binary(size: object = 240, raw: bytes = np.ones(30).tobytes(), json_length: int | None = None,
            shape=(1, 30)) -> tuple[bytes, dict[str, str]]:
    """A binary-extension request (one FP64 tensor) with its headers; `size` as binary_data_size."""
    header = json.dumps({"inputs": [{"name": "transactions", "shape": list(shape), "datatype": "FP64",
                                     "parameters": {"binary_data_size": size}}]}).encode()
    return header + raw, {"content-type": "application/octet-stream",
                          "inference-header-content-length": str(len(header) if json_length is None else json_length)}


def _mixed() -> tuple[bytes, dict[str, str]]:
    """The columns form with V1 binary and the other 29 in JSON."""
    inputs = [{"name": f, "shape": [1], "datatype": "FP64", "data": [1.0]} for f in FEATURES]
    inputs[1] = {"name": "V1", "shape": [1], "datatype": "FP64", "parameters": {"binary_data_size": 8}}
    header = json.dumps({"inputs": inputs}).encode()
    return header + np.ones(1).tobytes(), {"content-type": "application/octet-stream",
                                           "inference-header-content-length": str(len(header))}


def _literal(token: bytes, at: int) -> bytes:
    """A 1×30 FP64 request whose value at column `at` is the bare `token` (not JSON)."""
    return (b'{"inputs":[{"name":"transactions","shape":[1,30],"datatype":"FP64","data":[['
            + b",".join(token if i == at else b"1.0" for i in range(30)) + b"]]}]}")


#: name: (status, the exact {"error": …} message, body: dict → JSON, bytes → raw)
BAD_REQUESTS: dict[str, tuple[int, str, object]] = {
    "invalid_json": (400, "request body is not valid JSON: unexpected end of data: line 1 column 23 (char 22)",
                     b'{"inputs": [ {"name": '),
    "not_json_at_all": (400, "request body is not valid JSON: invalid literal, expected 'true': line 1 column 1 "
                             "(char 0)", b"transactions=1,2,3"),
    "empty_body": (400, "request body is not valid JSON: Input is a zero-length, empty document: line 1 column 1 "
                        "(char 0)", b""),
    "json_array_body": (400, "a v2 request is a JSON object with an 'inputs' list", b"[1, 2, 3]"),
    "no_inputs_field": (400, "a v2 request needs 'inputs': a list of tensors", {"id": "x"}),
    "inputs_not_a_list": (400, "a v2 request needs 'inputs': a list of tensors", {"inputs": {"name": "transactions"}}),
    "empty_inputs": (400, "the request has no inputs", {"inputs": []}),
    "zero_rows": (400, "input 'transactions' has no rows", _matrix([], shape=[0, 30])),
    "too_few_columns": (400, f"input 'transactions': shape [1, 29] is not [N, 30] {SHAPE_HINT}",
                        _matrix([_row()[:29]])),
    "too_many_columns": (400, f"input 'transactions': shape [1, 31] is not [N, 30] {SHAPE_HINT}",
                         _matrix([_row() + [1.0]])),
    "three_dims": (400, f"input 'transactions': shape [1, 1, 30] is not [N, 30] {SHAPE_HINT}",
                   _matrix([_row()], shape=[1, 1, 30])),
    "shape_data_mismatch": (400, "input 'transactions': data does not fit shape [2, 30] and datatype FP64 (cannot "
                                 "reshape array of size 30 into shape (2,30))", _matrix([_row()], shape=[2, 30])),
    "string_values": (400, f"{NUMBERS} a string at element 0", _matrix([["a"] * 30])),
    "one_string_value": (400, f"{NUMBERS} a string at element 5", _matrix([_row()[:5] + ["x"] + _row()[6:]])),
    "nested_objects": (400, f"{NUMBERS} an object at element 0", _matrix([[{"v": 1}] * 30])),
    "ragged_rows": (400, "input 'transactions': data does not fit shape [2, 30] and datatype FP64 (rows of different "
                         "lengths)", {"inputs": [{"name": "transactions", "shape": [2, 30], "datatype": "FP64",
                                                  "data": [_row(), _row()[:10]]}]}),
    "bytes_datatype": (400, "input 'transactions': datatype BYTES is not FP32 or FP64", _matrix([_row()], datatype="BYTES")),
    "int_datatype": (400, "input 'transactions': datatype INT64 is not FP32 or FP64", _matrix([[1] * 30], datatype="INT64")),
    "unknown_datatype": (400, "input 'transactions': datatype COMPLEX is not FP32 or FP64",
                         _matrix([_row()], datatype="COMPLEX")),
    "nan_literal": (400, "request body is not valid JSON: unexpected character, expected a JSON value: line 1 "
                         "column 89 (char 88)", _literal(b"NaN", 3)),
    "nan_string": (400, f"{NUMBERS} a string at element 29", _matrix([_row(Amount="NaN")])),
    "infinity": (400, "request body is not valid JSON: unexpected character, expected a JSON value: line 1 column "
                      "105 (char 104)", _literal(b"Infinity", 7)),
    "huge_float_overflow": (400, f"{NUMBERS} a string at element 1", _matrix([_row(V1="1e999")])),
    "null_value": (400, f"{NUMBERS} null at element 2", _matrix([_row(V2=None)])),
    "huge_float_literal": (400, "request body is not valid JSON: number is infinity when parsed as double: line 1 "
                                "column 85 (char 84)", _literal(b"1e999", 2)),
    "nan_string_fp32": (400, f"{NUMBERS32} a string at element 29", _matrix([_row(Amount="NaN")], datatype="FP32")),
    "string_fp32": (400, f"{NUMBERS32} a string at element 7", _matrix([_row(V7="7")], datatype="FP32")),
    "bool_fp64": (400, f"{NUMBERS} a boolean at element 3", _matrix([_row(V3=True)])),
    "bool_fp32": (400, f"{NUMBERS32} a boolean at element 0", _matrix([_row(Time=False)], datatype="FP32")),
    "all_bools": (400, f"{NUMBERS} a boolean at element 0", _matrix([[True] * 30])),
    "bool_in_second_row": (400, f"{NUMBERS} a boolean at element 37", _matrix([_row(), _row(V7=False)])),
    "null_fp32": (400, f"{NUMBERS32} null at element 28", _matrix([_row(V28=None)], datatype="FP32")),
    "all_nulls": (400, f"{NUMBERS} null at element 0", _matrix([[None] * 30])),
    "list_in_a_cell": (400, f"{NUMBERS} a list at element 1", _matrix([_row(V1=[1.0])])),
    "list_in_a_cell_fp32": (400, f"{NUMBERS32} a list at element 30", _matrix([_row(), _row(Time=[])], datatype="FP32")),
    "flat_data_with_a_string": (400, f"{NUMBERS} a string at element 4",
                                {"inputs": [{"name": "transactions", "shape": [1, 30], "datatype": "FP64",
                                             "data": _row(V4="4")}]}),
    "flat_data_with_a_bool": (400, f"{NUMBERS} a boolean at element 31",
                              {"inputs": [{"name": "transactions", "shape": [2, 30], "datatype": "FP64",
                                           "data": _row() + _row(V1=True)}]}),
    "column_string": (400, "input 'Amount': FP64 data must be numbers; found a string at element 1",
                      _columns(data={"Amount": [1.0, "12.5"]})),
    "column_nan_string_fp32": (400, "input 'V9': FP32 data must be numbers; found a string at element 0",
                               _columns(datatype="FP32", data={"V9": ["NaN", 1.0]})),
    "column_bool": (400, "input 'V2': FP64 data must be numbers; found a boolean at element 1",
                    _columns(data={"V2": [0.5, True]})),
    "column_null_fp32": (400, "input 'Time': FP32 data must be numbers; found null at element 0",
                         _columns(datatype="FP32", data={"Time": [None, 1.0]})),
    "column_nested_list": (400, "input 'V1': FP64 data must be numbers; found a list at element 0",
                           _columns(data={"V1": [[1.0], [2.0]]})),
    "column_object_fp32": (400, "input 'V12': FP32 data must be numbers; found an object at element 1",
                           _columns(datatype="FP32", data={"V12": [1.0, {"v": 2}]})),
    "outputs_not_a_list": (400, "'outputs' must be a list of objects with a string 'name', got an object",
                           _with(_matrix([_row()]), outputs={"name": "is_fraud"})),
    "output_without_name": (400, "outputs[0] must be an object with a string 'name'",
                            _with(_matrix([_row()]), outputs=[{}])),
    "output_name_not_a_string": (400, "outputs[1] must be an object with a string 'name'",
                                 _with(_matrix([_row()]), outputs=[{"name": "is_fraud"}, {"name": 3}])),
    "output_as_a_string": (400, "outputs[0] must be an object with a string 'name'",
                           _with(_matrix([_row()]), outputs=["is_fraud"])),
    "unknown_output": (400, "unknown outputs requested: score (this model has fraud_probability, is_fraud)",
                       _with(_matrix([_row()]), outputs=[{"name": "is_fraud"}, {"name": "score"}])),
    "output_parameters_a_list": (400, "output 'is_fraud': 'parameters' must be an object, got a list",
                                 _with(_matrix([_row()]), outputs=[{"name": "is_fraud", "parameters": [1]}])),
    "parameters_a_list": (400, "'parameters' must be an object, got a list", _with(_matrix([_row()]), parameters=[])),
    "parameters_a_string": (400, "'parameters' must be an object, got a string",
                            _with(_matrix([_row()]), parameters="binary_data_output")),
    "input_parameters_a_number": (400, "input 'transactions': 'parameters' must be an object, got a number",
                                  {"inputs": [{**_matrix([_row()])["inputs"][0], "parameters": 1}]}),
    "id_a_number": (400, "'id' must be a string, got a number", _with(_matrix([_row()]), id=42)),
    "id_an_object": (400, "'id' must be a string, got an object", _with(_matrix([_row()]), id={"tx": 1})),
    "id_a_boolean": (400, "'id' must be a string, got a boolean", _with(_matrix([_row()]), id=True)),
    "name_not_a_string": (400, "inputs[0]: 'name' must be a string",
                          {"inputs": [{**_matrix([_row()])["inputs"][0], "name": 1}]}),
    "shape_negative": (400, "input 'transactions': 'shape' must be a list of non-negative integers",
                       _matrix([_row()], shape=[-1, 30])),
    "data_not_a_list": (400, "input 'transactions': 'data' must be a list",
                        {"inputs": [{**_matrix([_row()])["inputs"][0], "data": "1,2,3"}]}),
    "negative_amount": (400, "Amount must not be negative (row 0: -5.0)", _matrix([_row(Amount=-5.0)])),
    "negative_time": (400, "Time must not be negative (row 0: -1.0)", _matrix([_row(Time=-1.0)])),
    "missing_column": (400, "missing inputs: V5", _columns(drop=("V5",))),
    "missing_amount": (400, "missing inputs: Amount", _columns(drop=("Amount",))),
    "unknown_column": (400, "unknown inputs: Merchant (send one [N, 30] input or one [N] input per feature)",
                       _columns(extra=("Merchant",))),
    "duplicate_column": (400, "duplicate inputs: V9", _columns(duplicate=("V9",))),
    "column_lengths_differ": (400, f"inputs have different lengths: {ALL_COLUMNS_BUT_V4}", _columns(lengths={"V4": 3})),
    "column_2d": (400, "input 'V1': shape [1, 1] is not [N]",
                  {"inputs": [{"name": f, "shape": [1, 1] if f == "V1" else [1], "datatype": "FP64", "data": [1.0]}
                              for f in FEATURES]}),
    "column_string_datatype": (400, "input 'Time': datatype BYTES is not FP32 or FP64", _columns(datatype="BYTES")),
    "over_row_limit": (400, "input 'transactions': 10001 rows exceed the limit of 10000 per request",
                       _matrix([_row()] * 10_001)),
    "shape_declares_too_many_rows": (400, "input 'transactions': 50000 rows exceed the limit of 10000 per request",
                                     _matrix([_row()], shape=[50_000, 30])),
    "ids_fp64": (400, "input 'transaction_id': datatype FP64 is not BYTES", _ids(_matrix([_row()]), [1.0], "FP64")),
    "ids_too_few": (400, "input 'transaction_id': shape [1] is not [2] (one id per row)",
                    _ids(_matrix([_row(), _row()]), ["tx-1"])),
    "ids_2d": (400, "input 'transaction_id': shape [1, 1] is not [1] (one id per row)",
               _ids(_matrix([_row()]), [["tx-1"]], shape=[1, 1])),
    "ids_shape_data_mismatch": (400, "input 'transaction_id': 1 ids for 2 rows",
                                _ids(_columns(), ["tx-1"], shape=[2])),
    "ids_a_number": (400, f"{IDS} a number at element 1", _ids(_columns(), ["tx-1", 2])),
    "ids_null": (400, f"{IDS} null at element 0", _ids(_matrix([_row()]), [None])),
    "ids_empty_string": (400, f"{IDS} 0 characters at element 0", _ids(_matrix([_row()]), [""])),
    "ids_too_long": (400, f"{IDS} 129 characters at element 1", _ids(_columns(), ["tx-1", "x" * 129])),
    "ids_duplicated": (400, "duplicate inputs: transaction_id", _ids(_ids(_matrix([_row()]), ["a"]), ["b"])),
    "ids_alone": (400, "the request has no feature inputs besides 'transaction_id'",
                  _ids({"inputs": []}, ["tx-1"])),
}


INFER = "/v2/models/fraud-detector/infer"
ONE_ROW = json.dumps(_matrix([_row()])).encode()

#: name: (status, exact message, method, path, body, headers)
OTHER_REQUESTS: dict[str, tuple[int, str, str, str, bytes, dict[str, str]]] = {
    "unknown_model": (404, "Model with name no-such-model does not exist.", "POST",
                      "/v2/models/no-such-model/infer", ONE_ROW, JSON),
    "get_on_infer": (405, f"GET {INFER}: Method Not Allowed", "GET", INFER, b"", {}),
    "put_on_infer": (405, f"PUT {INFER}: Method Not Allowed", "PUT", INFER, ONE_ROW, JSON),
    "delete_on_infer": (405, f"DELETE {INFER}: Method Not Allowed", "DELETE", INFER, b"", {}),
    "unknown_path": (404, "POST /v2/no-such-path: Not Found", "POST", "/v2/no-such-path", b"{}", JSON),
    "metadata_of_unknown_model": (404, "Model with name no-such does not exist.", "GET", "/v2/models/no-such", b"", {}),
    "ready_of_unknown_model": (404, "Model with name no-such does not exist.", "GET", "/v2/models/no-such/ready",
                               b"", {}),
    "versioned_infer": (404, f"/v2/models/fraud-detector/versions/2/infer: {VERSIONS}/infer", "POST",
                        "/v2/models/fraud-detector/versions/2/infer", ONE_ROW, JSON),
    "versioned_metadata": (404, f"/v2/models/fraud-detector/versions/v1: {VERSIONS}", "GET",
                           "/v2/models/fraud-detector/versions/v1", b"", {}),
    "versioned_ready": (404, f"/v2/models/fraud-detector/versions/1/ready: {VERSIONS}/ready", "GET",
                        "/v2/models/fraud-detector/versions/1/ready", b"", {}),
    "v1_predict": (404, f"/v1/models/fraud-detector:predict: {V1}", "POST", "/v1/models/fraud-detector:predict",
                   b'{"instances": [[1.0]]}', JSON),
    "v1_metadata": (404, f"/v1/models/fraud-detector: {V1}", "GET", "/v1/models/fraud-detector", b"", {}),
    "v1_list": (404, f"/v1/models: {V1}", "GET", "/v1/models", b"", {}),
    "repository_unload": (404, "/v2/repository/models/fraud-detector/unload: the model repository extension is not "
                               "served; revisions are deployed and removed through the InferenceService", "POST",
                          "/v2/repository/models/fraud-detector/unload", b"", {}),
    "text_plain": (415, f"content-type text/plain {MEDIA}", "POST", INFER, ONE_ROW, {"content-type": "text/plain"}),
    "form_urlencoded": (415, f"content-type application/x-www-form-urlencoded {MEDIA}", "POST", INFER, ONE_ROW,
                        {"content-type": "application/x-www-form-urlencoded"}),
    "multipart": (415, f"content-type multipart/form-data {MEDIA}", "POST", INFER, ONE_ROW,
                  {"content-type": "multipart/form-data; boundary=x"}),
    "binary_size_negative": (400, "input 'transactions': binary_data_size -1 does not fit the body", "POST", INFER,
                             *_binary(size=-1)),
    "binary_size_a_string": (400, "input 'transactions': binary_data_size '240' does not fit the body", "POST",
                             INFER, *_binary(size="240")),
    "binary_truncated": (400, "input 'transactions': binary_data_size 240 does not fit the body", "POST", INFER,
                         *_binary(raw=np.ones(12).tobytes())),
    "binary_size_not_the_shape": (400, "input 'transactions': data does not fit shape [1, 30] and datatype FP64 "
                                       "(cannot reshape array of size 2 into shape (1,30))", "POST", INFER,
                                  *_binary(size=16, raw=np.ones(2).tobytes())),
    "binary_nan": (400, "NaN or infinite values in V3", "POST", INFER,
                   *_binary(raw=np.where(np.arange(30) == 3, np.nan, 1.0).tobytes())),
    "binary_header_length_not_a_number": (400, "malformed binary v2 request: invalid literal for int() with base 10: "
                                               "'abc'", "POST", INFER,
                                          _binary()[0], {**_binary()[1], "inference-header-content-length": "abc"}),
    "binary_header_length_too_short": (400, "malformed binary v2 request: unexpected end of data: line 1 column 11 "
                                            "(char 10)", "POST", INFER, *_binary(json_length=10)),
}


def bad_input_answers(infer_url: str, base_url: str) -> dict[str, tuple[int, object]]:
    """(status, JSON body) per case of the bad-input matrix, from a transformer at `base_url`."""
    answers: dict[str, tuple[int, object]] = {}
    with httpx.Client(timeout=60) as client:
        for name, (_status, _message, body) in BAD_REQUESTS.items():
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            response = client.post(infer_url, content=content, headers=JSON)
            answers[name] = (response.status_code, response.json())
        for name, (_status, _message, method, path, content, headers) in OTHER_REQUESTS.items():
            response = client.request(method, f"{base_url}{path}", content=content, headers=headers)
            answers[name] = (response.status_code, response.json())
    for name, (_status, _message, head, chunks) in OVERSIZED.items():
        answers[name] = _raw_exchange(base_url, head, _chunked(LIMIT + 1) if chunks == "chunks" else chunks)
    return answers


def _raw_exchange(url: str, head: bytes, body_chunks) -> tuple[int, dict]:
    """Send a request by hand (headers, then body chunks) and read the whole answer until the server closes."""
    import socket
    from urllib.parse import urlsplit

    address = urlsplit(url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as connection:
        connection.sendall(head)
        for chunk in body_chunks:
            connection.sendall(chunk)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


def _chunked(total: int, size: int = 1 << 20):
    """Chunked transfer encoding of `total` bytes of a JSON-looking body, no terminating chunk."""
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        yield b"%x\r\n" % n + b" " * n + b"\r\n"
        sent += n


#: name: (status, exact message, request head, body chunks): bodies over the limit, sent by hand so that
#: the server's refusal can come before the body (a client library would send it all first)
OVERSIZED = {
    "content_length_over_the_limit": (
        413, f"request body of 300000000 bytes exceeds the limit of {LIMIT} bytes (10000 rows); send fewer rows "
             "per request",
        b"POST " + INFER.encode() + b" HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 300000000\r\n\r\n", ()),
    "content_length_one_byte_over": (
        413, f"request body of {LIMIT + 1} bytes exceeds the limit of {LIMIT} bytes (10000 rows); send fewer rows "
             "per request",
        b"POST " + INFER.encode() + f" HTTP/1.1\r\nhost: x\r\ncontent-length: {LIMIT + 1}\r\n\r\n".encode(), ()),
    "chunked_over_the_limit": (
        413, f"request body exceeds the limit of {LIMIT} bytes (10000 rows) (chunked, stopped reading there); send "
             "fewer rows per request",
        b"POST " + INFER.encode() + b" HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"transfer-encoding: chunked\r\n\r\n", "chunks"),
}


def test_bad_input_matrix_answers_each_case_with_its_exact_status_and_message(serving_stack):
    cases = len(BAD_REQUESTS) + len(OTHER_REQUESTS) + len(OVERSIZED)
    assert cases >= 60, cases
    transformer = serving_stack.transformer
    rejected_before = httpx.get(f"{transformer.url}/metrics", timeout=10).text
    expected = {name: (status, {"error": message}) for name, (status, message, _) in BAD_REQUESTS.items()}
    expected.update({name: (case[0], {"error": case[1]}) for name, case in (*OTHER_REQUESTS.items(),
                                                                            *OVERSIZED.items())})
    answers = bad_input_answers(transformer.infer_url, transformer.url)
    assert not [name for name, (status, _) in answers.items() if status >= 500]
    assert [name for name, (_, body) in answers.items() if list(body) != ["error"]] == []
    assert answers == expected
    # the server is healthy and still answers correctly
    assert httpx.get(f"{transformer.url}/v2/health/ready", timeout=10).status_code == 200
    good = httpx.post(transformer.infer_url, content=v2_json([_row()]), headers=JSON, timeout=30)
    assert good.status_code == 200 and good.json()["model_version"] == "v1"
    mixed, mixed_headers = _mixed()  # binary and JSON inputs in one request: KServe's decoder, then our checks
    assert httpx.post(transformer.infer_url, content=mixed, headers=mixed_headers, timeout=30).status_code == 200
    for headers in ({"content-type": "application/json; charset=utf-8"}, {}):  # curl --data-binary sends none
        assert httpx.post(transformer.infer_url, content=ONE_ROW, headers=headers, timeout=30).status_code == 200
    for with_ids in (_ids(_matrix([_row(), _row()]), ["tx-1", "x" * 128]), _ids(_columns(), ["tx-1", "tx-2"])):
        assert httpx.post(transformer.infer_url, json=with_ids, timeout=30).status_code == 200  # ids: checked, dropped
    asked = httpx.post(transformer.infer_url, json=_with(_matrix([_row()]), id="tx-1", parameters={},
                                                         outputs=[{"name": "is_fraud"}]), timeout=30)
    assert asked.status_code == 200 and asked.json()["id"] == "tx-1", asked.text
    assert [o["name"] for o in asked.json()["outputs"]] == ["is_fraud"]
    assert httpx.get(f"{transformer.url}/v2/models/fraud-detector/ready", timeout=10).json() == {
        "name": "fraud-detector", "ready": True}
    assert httpx.get(f"{transformer.url}/v2/models/fraud-detector", timeout=10).json()["name"] == "fraud-detector"
    rejected_after = httpx.get(f"{transformer.url}/metrics", timeout=10).text
    for reason in ("nan", "shape", "row_limit", "missing_column", "unknown_column", "duplicate_column",
                   "negative_value", "datatype", "data", "empty", "body", "unknown_model", "element_type",
                   "unknown_output", "content_type", "body_size", "transaction_id"):
        assert (metric_value(rejected_after, "fraud_rejected_requests_total", reason=reason)
                > metric_value(rejected_before, "fraud_rejected_requests_total", reason=reason)), reason


def test_metrics_count_rows_decisions_scores_and_latency(serving_stack, holdout_raw, reference_v1):
    transformer = serving_stack.transformer
    before = httpx.get(f"{transformer.url}/metrics", timeout=10).text
    rows = holdout_raw[:500]
    response = httpx.post(transformer.infer_url, content=v2_json(rows), headers=JSON, timeout=30)
    assert response.status_code == 200
    after = httpx.get(f"{transformer.url}/metrics", timeout=10).text
    frauds = int(reference_v1["is_fraud"][:500].sum())

    def delta(name, **labels):
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    assert delta("fraud_predictions_total", model_version="v1", decision="fraud") == frauds
    assert delta("fraud_predictions_total", model_version="v1", decision="legit") == 500 - frauds
    assert delta("fraud_score_count", model_version="v1") == 500
    assert delta("fraud_score_sum", model_version="v1") == pytest.approx(
        float(reference_v1["fraud_probability"][:500].sum()), rel=1e-4)
    assert delta("fraud_score_bucket", model_version="v1", le="0.5") == int(
        (reference_v1["fraud_probability"][:500] <= 0.5).sum())
    assert delta("fraud_request_seconds_count", model_version="v1") == 1
    assert "request_predict_seconds" in after  # KServe's own metrics sit beside ours
    assert "fraud_predictor_errors_total" in after or "fraud_predictor_errors" in after


async def _send(url: str, body: bytes, n: int, concurrency: int = 16) -> collections.Counter:
    """n requests, `concurrency` at a time: Counter of (status, model_version)."""
    counts: collections.Counter = collections.Counter()
    queue = iter(range(n))

    async def worker(session):
        for _ in queue:
            async with session.post(url, data=body, headers=JSON) as response:
                payload = await response.json(content_type=None)
                counts[(response.status, payload.get("model_version"))] += 1

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return counts


def send(url: str, body: bytes, n: int) -> collections.Counter:
    return asyncio.run(_send(url, body, n))


@pytest.fixture(scope="module")
def one_row(tiny_run) -> bytes:
    return v2_json(tiny_run.windows["holdout"].loc[:, list(FEATURES)].to_numpy()[:1])


def test_canary_share_is_twenty_percent(canary_runtime, one_row):
    counts = send(canary_runtime.infer_url, one_row, 5_000)
    assert set(counts) == {(200, "v1"), (200, "v2")}, counts
    share = counts[(200, "v2")] / 5_000
    assert 0.18 <= share <= 0.22, counts


def test_each_answer_matches_the_version_that_gave_it(canary_runtime, tiny_run):
    raw = tiny_run.windows["holdout"].loc[:, list(FEATURES)].to_numpy()[:200]
    scaled = tiny_run.contract.transform(raw)
    reference = {"v1": SignatureScorer(tiny_run.v1)(scaled), "v2": SignatureScorer(tiny_run.v2)(scaled)}
    assert not np.allclose(reference["v1"]["fraud_probability"], reference["v2"]["fraud_probability"], atol=1e-3)
    seen = set()
    with httpx.Client(timeout=30) as client:
        for _ in range(30):
            body = client.post(canary_runtime.infer_url, content=v2_json(raw), headers=JSON).json()
            version = body["model_version"]
            seen.add(version)
            outputs = {o["name"]: o["data"] for o in body["outputs"]}
            np.testing.assert_allclose(outputs["fraud_probability"], reference[version]["fraud_probability"],
                                       atol=TOLERANCE, rtol=0)
            np.testing.assert_array_equal(outputs["is_fraud"], reference[version]["is_fraud"])
            if seen == {"v1", "v2"}:
                break
    assert seen == {"v1", "v2"}


def test_status_shows_kserve_fields_and_versions(canary_runtime):
    result = canary_runtime.cli("canary", "status")
    assert result.returncode == 0, result.stderr
    for text in ("20%  fraud-detector-predictor-00002 (v2)  tag=latest", "80%  fraud-detector-predictor-00001 (v1)  "
                 "tag=prev", "latestRolledoutRevision:   fraud-detector-predictor-00001 (v1)",
                 "latestReadyRevision:       fraud-detector-predictor-00002 (v2)", "canaryTrafficPercent: 20"):
        assert text in result.stdout, result.stdout


def test_a_second_serve_on_the_same_state_dir_exits_2_names_the_first_and_touches_nothing(canary_runtime, tiny_run,
                                                                                         one_row):
    state_dir, pid = canary_runtime.state_dir, canary_runtime.process.pid
    files = ("inferenceservice.json", "revisions.json", "routes.json", "runtime.json", "runtime.lock")
    before = {name: (state_dir / name).read_bytes() for name in files}
    second = canary_runtime.cli("serve", "--baseline", str(tiny_run.v2), "--http-port", str(free_port()))
    assert second.returncode == 2, second.stderr
    assert second.stderr.splitlines() == [
        f"fraud-rollout serve: error: --state-dir {state_dir}: already served by `fraud-rollout serve` pid {pid} at "
        f"{canary_runtime.url}; stop it (kill {pid}) or pass another --state-dir"]
    assert {name: (state_dir / name).read_bytes() for name in files} == before
    assert set(send(canary_runtime.infer_url, one_row, 200)) == {(200, "v1"), (200, "v2")}
    status = canary_runtime.cli("canary", "status")
    assert f"serving: {canary_runtime.url} (generation 2 applied)" in status.stdout, status.stdout


class Background:
    """Requests sent continuously while the split changes; every status is recorded."""

    def __init__(self, url: str, body: bytes) -> None:
        self.url, self.body = url, body
        self.statuses: collections.Counter = collections.Counter()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                try:
                    response = client.post(self.url, content=self.body, headers=JSON)
                    self.statuses[response.status_code] += 1
                    if response.status_code != 200:
                        self.errors.append(response.text[:200])
                except httpx.HTTPError as error:
                    self.errors.append(repr(error))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(30)


def test_promote_then_rollback_without_a_failed_request(fresh_canary_runtime, one_row):
    with Background(fresh_canary_runtime.infer_url, one_row) as traffic:
        promoted = fresh_canary_runtime.cli("canary", "promote")
        assert promoted.returncode == 0, promoted.stderr
        fresh_canary_runtime.wait_applied()
        assert send(fresh_canary_runtime.infer_url, one_row, 300) == {(200, "v2"): 300}

        rolled_back = fresh_canary_runtime.cli("canary", "rollback")
        assert rolled_back.returncode == 0, rolled_back.stderr
        assert "latestRolledoutRevision:   fraud-detector-predictor-00001 (v1)" in rolled_back.stdout
        fresh_canary_runtime.wait_applied()
        assert send(fresh_canary_runtime.infer_url, one_row, 300) == {(200, "v1"): 300}

        # promote again through the same API the deploy step uses, then back to the 20 % canary
        fresh_canary_runtime.service.patch_json(isvc.promote_patch())
        fresh_canary_runtime.wait_applied()
        assert send(fresh_canary_runtime.infer_url, one_row, 200) == {(200, "v2"): 200}
        status = fresh_canary_runtime.service.patch_merge({"spec": {"predictor": {"canaryTrafficPercent": 20}}})
        assert [(e["revisionName"][-5:], e["percent"]) for e in status["status"]["components"]["predictor"][
            "traffic"]] == [("00002", 20), ("00001", 80)]
        fresh_canary_runtime.wait_applied()
    assert not traffic.errors, traffic.errors[:5]
    assert traffic.statuses[200] > 50, traffic.statuses  # the background really ran through the switches


def test_predict_command_sends_a_csv(canary_runtime, tiny_run, tmp_path):
    csv = tmp_path / "transactions.csv"
    tiny_run.windows["holdout"].head(3).to_csv(csv, index=False)  # Class column included: ignored
    result = canary_runtime.cli("predict", "--url", canary_runtime.url, "--file", str(csv), state_dir=False)
    assert result.returncode == 0, result.stderr
    assert "model_version v" in result.stdout
    assert len([line for line in result.stdout.splitlines() if line[:3].strip().isdigit()]) == 3


def test_bench_serving_runs_and_reports_every_target(serving_stack, tiny_run):
    """A smoke run with tiny numbers (the real run is `fraud-rollout bench serving`)."""
    from fraud_ops.bench_serving import measure

    report = measure(serving_stack.predictor.url, serving_stack.transformer.url, tiny_run.v1, requests=30,
                     rows=300, duration=1, connections=4)
    text = report.format()
    for name in ("one-row compute, NumPy path served (median)", "via transformer p50 (1 row)", "via transformer p99 (1 row)", "p50 ratio transformer/direct",
                 "300 rows via transformer, JSON", "via transformer req/s (c=4, 1 s)", "via transformer errors (c=4)"):
        assert name in text, text
    assert report.value("via transformer errors (c=4)") == 0
    assert report.value("via transformer req/s (c=4, 1 s)") > 0
