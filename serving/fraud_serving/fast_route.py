"""A lighter `/v2/models/{name}/infer` route on KServe's own FastAPI app.

KServe's v2 route parses the body with the stdlib `json` into pydantic models, copies every
value through `InferOutput.set_data_from_numpy` (one `.item()` per element) and validates the
response with pydantic again. For a one-row request that framework work costs more than our
model; for 10,000 rows it dominates. This route takes the same bytes and gives the same answers:

- body: refused with 413 past the model's `max_body_bytes` before it is read (Content-Length) or as
  the stream passes it (chunked), 415 for a content-type other than JSON or octet-stream; orjson
  (v2 JSON) or, with `Inference-Header-Content-Length`, the binary tensor extension read with
  `np.frombuffer` (KServe's `from_bytes` turns every binary value into a Python float); malformed
  bodies, `outputs` that are not objects with a string `name` or that the model lacks, `parameters`
  that are not objects and an `id` that is not a string are `InvalidInput` (400);
- the model runs through `Model.__call__` unchanged (preprocess → predict → postprocess, KServe's
  latency histograms, our metrics);
- the response: NumPy outputs encoded by orjson directly; requests asking for binary outputs get
  KServe's own encoder;
- with a model's `payload_logger` (`fraud_serving.payload_log`), each request whose body was read
  and each 200 answer are queued as KServe's agent would log them (the route never waits on it).

It is a plain Starlette route (no FastAPI dependency solving per request) put first in the app's
route list, so it matches before KServe's; KServe's exception handlers (InvalidInput → 400,
ModelNotFound → 404, …) are app-wide and apply to it as to KServe's routes. Starlette's own HTTP
errors (405 for a GET on the infer path, 404 for an unknown path) get the protocol's `{"error": …}`
too, instead of FastAPI's `{"detail": …}`. Paths KServe would answer with a 501 or act on are
answered 404 here: `/v2/models/{name}/versions/…` (the InferenceService's split picks the
revision), `/v1/…` (only v2 is served) and `/v2/repository/…` (load/unload).
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np
import orjson
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fraud.protocol import RequestRefused, json_kind, json_tensor
from kserve.constants.constants import INFERENCE_CONTENT_LENGTH_HEADER
from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady
from kserve.model import Model
from kserve.protocol.infer_type import InferInput, InferRequest, InferResponse, RequestedOutput
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fraud_serving.payload_log import PayloadLogger, event_id

INFER_PATH = "/v2/models/{model_name}/infer"
#: Bodies above this many bytes are decoded on a worker thread (a 10,000-row JSON body takes
#: 15–40 ms to parse here; one-row bodies are < 1 kB).
INLINE_BODY_BYTES = 64 * 1024
DEFAULT_MAX_ROWS = 10_000
JSON_BYTES_PER_VALUE = 48
HEADER_SLACK_BYTES = 64 * 1024
#: "" (no content-type: curl --data-binary, raw sockets); KServe's client sends the other two
ACCEPTED_MEDIA_TYPES = {"", "application/json", "application/octet-stream"}


def parse_request(body: bytes, headers, model_name: str) -> InferRequest:
    json_length = headers.get(INFERENCE_CONTENT_LENGTH_HEADER)
    raw_inputs: list[bytes] | None = None
    if json_length is not None:
        try:
            json_length = int(json_length)
            parsed = orjson.loads(body[:json_length])
        except (ValueError, orjson.JSONDecodeError) as error:
            raise InvalidInput(f"malformed binary v2 request: {error}") from None
        raw_inputs = _binary_tensors(parsed, body, json_length)
        if raw_inputs is None:  # JSON and binary inputs mixed: KServe's decoder handles that
            try:
                return InferRequest.from_bytes(body, json_length, model_name)
            except (KeyError, TypeError, ValueError) as error:
                raise InvalidInput(f"malformed binary v2 request: {error}") from None
    else:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise InvalidInput(f"request body is not valid JSON: {error}") from None
    if not isinstance(parsed, dict):
        raise InvalidInput("a v2 request is a JSON object with an 'inputs' list")
    inputs = parsed.get("inputs")
    if not isinstance(inputs, list):
        raise InvalidInput("a v2 request needs 'inputs': a list of tensors")
    infer_inputs = []
    for position, tensor in enumerate(inputs):
        try:
            checked = json_tensor(tensor, position, binary=raw_inputs is not None)
        except RequestRefused as refused:
            raise InvalidInput(str(refused)) from None
        parameters = _parameters(tensor, f"input {checked.name!r}: ")
        infer_inputs.append(InferInput(checked.name, checked.shape, checked.datatype, data=checked.data,
                                       parameters=parameters or {}))
    request_id = parsed.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput(f"'id' must be a string, got {json_kind(request_id)}")
    return InferRequest(model_name, infer_inputs, request_id=request_id, raw_inputs=raw_inputs,
                        parameters=_parameters(parsed, ""), request_outputs=_requested_outputs(parsed))


def _parameters(holder: dict, where: str) -> dict | None:
    parameters = holder.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise InvalidInput(f"{where}'parameters' must be an object, got {json_kind(parameters)}")
    return parameters


def _requested_outputs(parsed: dict) -> list[RequestedOutput] | None:
    outputs = parsed.get("outputs")
    if outputs is None:
        return None
    if not isinstance(outputs, list):
        raise InvalidInput(f"'outputs' must be a list of objects with a string 'name', got {json_kind(outputs)}")
    requested = []
    for position, output in enumerate(outputs):
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            raise InvalidInput(f"outputs[{position}] must be an object with a string 'name'")
        requested.append(RequestedOutput(output["name"], _parameters(output, f"output {output['name']!r}: ")))
    return requested or None


def _binary_tensors(parsed, body: bytes, json_length: int) -> list[bytes] | None:
    """The raw bytes of each input if every input is binary (None if some carry JSON data)."""
    if not isinstance(parsed, dict) or not isinstance(parsed.get("inputs"), list):
        raise InvalidInput("a v2 request needs 'inputs': a list of tensors")
    chunks, start = [], json_length
    for tensor in parsed["inputs"]:
        parameters = tensor.get("parameters") if isinstance(tensor, dict) else None
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if size is None:
            return None
        if not isinstance(size, int) or size < 0 or start + size > len(body):
            raise InvalidInput(f"input {tensor.get('name')!r}: binary_data_size {size!r} does not fit the body")
        chunks.append(body[start:start + size])
        start += size
    return chunks


def binary_request(request_id: str | None, name: str, tensor: np.ndarray, datatype: str) -> tuple[bytes, int]:
    """A v2 request carrying one tensor with the binary extension: (body, JSON header length)."""
    raw = np.ascontiguousarray(tensor).tobytes()
    header = orjson.dumps({"id": request_id, "inputs": [{"name": name, "shape": list(tensor.shape),
                                                          "datatype": datatype,
                                                          "parameters": {"binary_data_size": len(raw)}}]})
    return header + raw, len(header)


def encode_response(response: InferResponse, request: InferRequest) -> Response:
    binary = request.use_binary_outputs or any(o.binary_data for o in request.request_outputs or [])
    plain = all(isinstance(o.data, np.ndarray) for o in response.outputs) and not response.parameters
    if binary or not plain or request.request_outputs:
        body, json_length = response.to_rest()  # KServe's own encoder for everything else
        if json_length is not None:
            return Response(body, media_type="application/octet-stream",
                            headers={INFERENCE_CONTENT_LENGTH_HEADER: str(json_length)})
        return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")
    body = {"model_name": response.model_name, "model_version": response.model_version, "id": response.id,
            "parameters": None,
            "outputs": [{"name": o.name, "shape": o.shape, "datatype": o.datatype, "parameters": None,
                         "data": o.data.reshape(-1)} for o in response.outputs]}
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


def body_limit(max_rows: int, n_features: int) -> int:
    """The most bytes a request of `max_rows` rows may take.

    A float64 written by a client takes at most 24 characters (`-1.2345678901234567e-308`), plus a
    separator and, pretty-printed, its own indented line: 48 bytes a value is generous for JSON. The
    binary extension needs 8 (FP64) or 4 (FP32). The rest (id, names, shapes, parameters and 30 named
    inputs in the columns form) fits in 64 KiB of slack. For 10,000 rows: 14,465,536 bytes."""
    return max_rows * n_features * JSON_BYTES_PER_VALUE + HEADER_SLACK_BYTES


def install_fast_infer_route(app: FastAPI, models: dict[str, Model],
                             on_rejected: Callable[[str], None] | None = None) -> None:
    """Serve `models` (by name) on `INFER_PATH` ahead of KServe's route; `on_rejected(reason)` is
    told about requests refused before they reach a model ("body", "body_size", "content_type",
    "unknown_output", "unknown_model").

    A model's `max_body_bytes` and `max_rows` (when it has them) bound the body: above it the answer
    is 413 before the body is read (Content-Length) or as soon as the stream passes it (chunked)."""

    def reject(reason: str) -> None:
        if on_rejected is not None:
            on_rejected(reason)

    async def infer(request: Request) -> Response:
        arrived = time.time()
        model_name = request.path_params["model_name"]
        model = models.get(model_name)
        if model is None:
            reject("unknown_model")
            raise ModelNotFound(model_name)
        if not await model.healthy():
            raise ModelNotReady(model_name)
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type not in ACCEPTED_MEDIA_TYPES:
            reject("content_type")
            raise ProtocolError(415, f"content-type {media_type} is not accepted; send application/json (or "
                                     f"application/octet-stream with {INFERENCE_CONTENT_LENGTH_HEADER})")
        limit = getattr(model, "max_body_bytes", None)
        try:
            body = await read_body(request, limit, getattr(model, "max_rows", None))
        except ProtocolError:
            reject("body_size")
            raise
        payload_logger = traffic_logger(model)
        ce_id = event_id(request.headers) if payload_logger is not None else ""
        try:
            infer_request = await parse_off_loop(body, request.headers, model_name)
        except InvalidInput:
            reject("body")
            log_request(payload_logger, ce_id, arrived, body, request.headers, parsed=False)  # the agent logs it too
            raise
        log_request(payload_logger, ce_id, arrived, body, request.headers, parsed=True)
        known = [output["name"] for output in model.get_output_types()]
        unknown = [o.name for o in infer_request.request_outputs or [] if o.name not in known]
        if unknown:
            reject("unknown_output")
            raise InvalidInput(f"unknown outputs requested: {', '.join(unknown)} (this model has "
                               f"{', '.join(known)})")
        response, response_headers = await model(infer_request, headers=dict(request.headers))
        if infer_request.request_outputs:  # the protocol answers only the outputs asked for
            asked = {o.name for o in infer_request.request_outputs}
            response.outputs = [o for o in response.outputs if o.name in asked]
        encoded = encode_response(response, infer_request)
        encoded.headers.update(response_headers or {})
        if payload_logger is not None:
            payload_logger.log_response(ce_id, time.time(), bytes(encoded.body), request.headers.get("content-type", ""),
                                        body_is_json=encoded.media_type == "application/json")
        return encoded

    async def unversioned(request: Request) -> Response:
        name, suffix = request.path_params["model_name"], request.path_params["rest"]
        raise ProtocolError(404, f"{request.url.path}: model versions are not addressable (the InferenceService's "
                                 f"traffic split picks the revision, the answer's model_version names it); use "
                                 f"/v2/models/{name}{suffix}")

    async def no_v1(request: Request) -> Response:
        names = ", ".join(f"/v2/models/{name}/infer" for name in models)
        raise ProtocolError(404, f"{request.url.path}: the v1 protocol is not served; send Open Inference "
                                 f"Protocol v2 to {names}")

    async def no_repository(request: Request) -> Response:
        # KServe's load/unload would let any client unload the served model
        raise ProtocolError(404, f"{request.url.path}: the model repository extension is not served; revisions "
                                 "are deployed and removed through the InferenceService")

    every_method = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
    app.router.routes[0:0] = [
        Route(INFER_PATH, infer, methods=["POST"]),
        Route("/v2/models/{model_name}/versions/{model_version}{rest:path}", unversioned, methods=every_method),
        Route("/v1/{rest:path}", no_v1, methods=every_method),
        Route("/v2/repository/{rest:path}", no_repository, methods=every_method),
    ]
    app.add_exception_handler(HTTPException, protocol_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(ProtocolError, protocol_error_answer)


def traffic_logger(model: Model) -> PayloadLogger | None:
    """The model's payload logger, unless it posts shadow pairs only (KServe's agent logs the traffic)."""
    payload_logger: PayloadLogger | None = getattr(model, "payload_logger", None)
    return payload_logger if payload_logger is not None and payload_logger.traffic else None


async def parse_off_loop(body: bytes, headers, model_name: str) -> InferRequest:
    """`parse_request`, on a worker thread for large bodies."""
    if len(body) > INLINE_BODY_BYTES:
        return await asyncio.get_running_loop().run_in_executor(None, parse_request, body, headers, model_name)
    return parse_request(body, headers, model_name)


def log_request(payload_logger: PayloadLogger | None, ce_id: str, arrived: float, body: bytes, headers,
                parsed: bool) -> None:
    """Queue the request's CloudEvent: a parsed body without the binary extension is JSON as it is."""
    if payload_logger is not None:
        payload_logger.log_request(ce_id, arrived, body, headers.get("content-type", ""),
                                   body_is_json=parsed and INFERENCE_CONTENT_LENGTH_HEADER not in headers)


async def read_body(request: Request, limit: int | None, max_rows: int | None) -> bytes:
    """The request body, refused with 413 past `limit` bytes: unread when Content-Length says so,
    else read chunk by chunk and dropped at the limit (a 300 MB body never sits in memory)."""
    if limit is None:
        return await request.body()
    rows = f" ({max_rows} rows)" if max_rows else ""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdecimal() and int(declared) > limit:
        raise ProtocolError(413, f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes{rows}; "
                                 "send fewer rows per request")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProtocolError(413, f"request body exceeds the limit of {limit} bytes{rows} (chunked, stopped "
                                     "reading there); send fewer rows per request")
        chunks.append(chunk)
    return b"".join(chunks)


class ProtocolError(Exception):
    """A client error with its own HTTP status (413, 415, 404, or a predictor's 4xx passed on), answered
    in the Open Inference Protocol's shape `{"error": message}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def protocol_error_answer(request: Request, error: Exception) -> Response:
    assert isinstance(error, ProtocolError)  # registered for ProtocolError only
    # a 413 before the body is read: close the connection rather than drain what the client still sends
    headers = {"connection": "close"} if error.status == 413 else None
    return JSONResponse({"error": error.message}, status_code=error.status, headers=headers)


async def validation_error(request: Request, error: Exception) -> Response:
    """FastAPI's request validation (KServe's other routes) as a 400 in the protocol's shape, not 422 `detail`."""
    assert isinstance(error, RequestValidationError)
    problems = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in error.errors())
    return JSONResponse({"error": f"{request.method} {request.url.path}: {problems}"}, status_code=400)


async def protocol_error(request: Request, error: Exception) -> Response:
    """Starlette's HTTP errors in the Open Inference Protocol's error shape."""
    assert isinstance(error, HTTPException)  # registered for HTTPException only
    return JSONResponse({"error": f"{request.method} {request.url.path}: {error.detail}"},
                        status_code=error.status_code, headers=error.headers)
