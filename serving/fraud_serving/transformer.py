"""The transformer: validates raw transactions, scales them with the feature contract, forwards v2
to the predictor and returns its outputs with the `model_version` that answered (Triton's numeric
version directory "2" as the registered "v2").

What a request may hold is the one contract's (`fraud.protocol`): one input `[N, 30]` or 30 named
inputs, optionally with `transaction_id` (checked, never scaled; the prediction log keeps it as it
came in the request body). Every client mistake is an `InvalidInput` (HTTP 400) with the contract's
message, counted in `fraud_rejected_requests_total{reason}`.

The transformer is the safety net (DESIGN 16): a predictor call that fails on the predictor's side
(no connection, a connection dropped mid-request, a timeout, a 5xx) is retried once on the other
revision (`Routes.other`; in a cluster a tag host, `TagHosts.retry_target`) and counted in `fraud_predictor_retries_total{model_version}`; a 4xx is the
client's and goes back unchanged. Bodies over `max_body_bytes` are refused by the route (413).

The hop to the predictor is REST v2 over one pooled aiohttp session with keep-alive (measured here
on one row: aiohttp 0.8 ms per hop, httpx's AsyncClient 2.9 ms). Up to `INLINE_ROWS` rows the body
is JSON (`binary_data=False` semantics) encoded by orjson straight from NumPy; above, the scaled
tensor travels with the binary tensor extension (for 10,000 rows JSON costs ≈ 10 ms to encode and
≈ 30 ms to parse on the predictor, raw float32 bytes nothing; our predictor's route reads them
with `np.frombuffer`). Work that grows with N
(decoding, checks, scaling, encoding) runs on a worker thread above `INLINE_ROWS` rows, so a
10,000-row request does not stall the one-row requests sharing the event loop.
"""
from __future__ import annotations

import asyncio
import time
import uuid

import aiohttp
import numpy as np
import orjson
from fraud.contract import FeatureContract
from fraud.export import INPUT_NAME
from fraud.protocol import (
    FRAUD_PROBABILITY,
    IS_FRAUD,
    RequestRefused,
    Tensor,
    decode_request,
    input_types,
    output_types,
    row_transaction_ids,
)
from fraud.routes import Backend
from kserve import Model
from kserve.constants.constants import INFERENCE_CONTENT_LENGTH_HEADER
from kserve.errors import InferenceError, InvalidInput
from kserve.model import InferenceVerb, append_forwardable_headers
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse

from fraud_serving.answer import RETRIED_FROM_HEADER, PredictorAnswer, read_answer
from fraud_serving.fast_route import DEFAULT_MAX_ROWS, ProtocolError, binary_request, body_limit
from fraud_serving.metrics import UNKNOWN_VERSION, TransformerMetrics
from fraud_serving.payload_log import PayloadLogger
from fraud_serving.routing import NoPredictor, Routes, TagHosts
from fraud_serving.shadow import ShadowScorer

INLINE_ROWS = 256


class PredictorFailed(Exception):
    """A predictor call that failed on the predictor's side (retried once on the other revision)."""

    def __init__(self, message: str, model_version: str) -> None:
        super().__init__(message)
        self.model_version = model_version


class ScaledRequest(InferRequest):
    """The scaled request the predictor gets, and the client's ids, which are never forwarded (a
    shadow pair names its rows by them)."""

    def __init__(self, model_name: str, inputs: list[InferInput], request_id: str,
                 client_ids: list[str] | None, client_id: str | None) -> None:
        super().__init__(model_name, inputs, request_id=request_id)
        self.client_ids = client_ids  # the transaction_id input (checked by `scale_request`), if sent
        self.client_id = client_id

    def split_key(self) -> str:
        """What the seeded local split draws on: the first transaction id, else the request id."""
        return (self.client_ids[0] if self.client_ids else self.client_id) or str(self.id)

    def row_ids(self) -> tuple[str | None, ...]:
        """The rows' transaction ids as the prediction log reads them: computed only for a logged pair."""
        try:
            return row_transaction_ids(self.client_ids, self.inputs[0].shape[0], self.client_id)
        except ValueError:  # a one-row request whose id is no transaction id
            return (None,)


class FraudTransformer(Model):
    """Validate → scale (feature contract) → predictor → outputs with the answering model_version."""

    def __init__(self, name: str, contract: FeatureContract, routes: Routes, metrics: TransformerMetrics,
                 max_rows: int = DEFAULT_MAX_ROWS, timeout_seconds: float = 30.0,
                 shadow: ShadowScorer | None = None, tag_hosts: TagHosts | None = None) -> None:
        super().__init__(name, return_response_headers=True)  # RETRIED_FROM_HEADER
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {max_rows}")
        self.contract = contract
        self.features = contract.features
        self.routes = routes
        self.metrics = metrics
        self.max_rows = max_rows
        self.timeout_seconds = timeout_seconds
        self._session: aiohttp.ClientSession | None = None
        self.shadow = shadow
        self.tag_hosts = tag_hosts
        #: the CloudEvents of every answered request (`fast_route` calls it), None: off
        self.payload_logger: PayloadLogger | None = None

    @property
    def max_body_bytes(self) -> int:
        """Bodies above this are refused with 413 before they are read (`fast_route.body_limit`)."""
        return body_limit(self.max_rows, len(self.features))

    def load(self) -> bool:
        self.ready = True
        return self.ready

    async def healthy(self) -> bool:
        """Ready to serve only once a predictor receives traffic (the local runtime's routes may lag)."""
        self.routes.refresh()
        return self.ready and bool(self.routes.backends)

    def get_input_types(self) -> list[dict]:
        return input_types(self.features)

    def get_output_types(self) -> list[dict]:
        return output_types()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:  # created on the serving event loop, reused for every request
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=60),
                timeout=aiohttp.ClientTimeout(total=self.timeout_seconds))
        return self._session

    async def __call__(self, body, headers=None, verb: InferenceVerb = InferenceVerb.PREDICT):
        start = time.perf_counter()
        response, response_headers = await super().__call__(body, headers, verb)
        version = getattr(response, "model_version", None) or UNKNOWN_VERSION
        self.metrics.request_seconds.labels(version).observe(time.perf_counter() - start)
        return response, response_headers

    async def preprocess(self, payload, headers: dict | None = None) -> InferRequest:
        if not isinstance(payload, InferRequest):
            self.metrics.rejected.labels("protocol").inc()
            raise InvalidInput("send Open Inference Protocol v2 to /v2/models/{name}/infer")
        rows = int(payload.inputs[0].shape[0]) if payload.inputs and payload.inputs[0].shape else 0
        if rows > INLINE_ROWS:
            scaled, ids = await asyncio.get_running_loop().run_in_executor(None, self.scale_request, payload)
        else:
            scaled, ids = self.scale_request(payload)
        scaled_input = InferInput(INPUT_NAME, list(scaled.shape), "FP32", data=scaled)
        return ScaledRequest(self.name, [scaled_input], payload.id or str(uuid.uuid4()), ids, payload.id)

    def scale_request(self, request: InferRequest) -> tuple[np.ndarray, list[str] | None]:
        """The rows checked by the one contract (`fraud.protocol`) → scaled float32 `[N, 30]`
        (contract.transform) and the ids input if sent; a refusal is counted by its reason and
        answered 400 (`InvalidInput`)."""
        try:
            decoded = decode_request([_tensor(tensor) for tensor in request.inputs], self.features, self.max_rows)
        except RequestRefused as refused:
            self.metrics.rejected.labels(refused.reason).inc()
            raise InvalidInput(str(refused)) from None
        return self.contract.transform(decoded.features), decoded.transaction_ids

    async def predict(self, payload: InferRequest, headers: dict | None = None,
                      response_headers: dict | None = None) -> PredictorAnswer:
        scaled: np.ndarray = payload.inputs[0].data
        forward_headers = append_forwardable_headers(headers, {"content-type": "application/json"})
        if len(scaled) > INLINE_ROWS:
            content, json_length = binary_request(payload.id, INPUT_NAME, scaled, "FP32")
            forward_headers.update({"content-type": "application/octet-stream",
                                    INFERENCE_CONTENT_LENGTH_HEADER: str(json_length)})
        else:
            content = orjson.dumps({"id": payload.id, "inputs": [
                {"name": INPUT_NAME, "shape": list(scaled.shape), "datatype": "FP32", "data": scaled}]},
                option=orjson.OPT_SERIALIZE_NUMPY)
        key = payload.split_key() if isinstance(payload, ScaledRequest) else str(payload.id)
        backend = self._pick(key)
        try:
            answer = await self._forward(backend, payload.id, content, forward_headers)
        except PredictorFailed as failure:
            retry = self.routes.other(backend)
            if retry is None and self.tag_hosts is not None:
                retry = self.tag_hosts.retry_target(backend.model_version)
            if retry is None:
                raise InferenceError(str(failure)) from None
            # scoring is idempotent: a request the failed revision may already have scored is safe to
            # send again; counted under the version that failed (the canary's error evidence)
            self.metrics.predictor_retries.labels(failure.model_version).inc()
            if response_headers is not None:
                response_headers[RETRIED_FROM_HEADER] = failure.model_version
            backend = retry
            try:
                answer = await self._forward(backend, payload.id, content, forward_headers)
            except PredictorFailed as second:
                raise InferenceError(f"{failure}; retried on the other revision: {second}") from None
            if self.tag_hosts is not None and retry.revision in self.tag_hosts.tags:
                self.tag_hosts.learn(retry.url, answer.model_version)
        if self.shadow is not None:
            self.shadow.submit(backend, content, forward_headers, answer,
                               payload.row_ids if isinstance(payload, ScaledRequest) else None, key)
        return answer

    def _pick(self, key: str) -> Backend:
        try:
            return self.routes.pick(key)
        except NoPredictor as error:
            self.metrics.predictor_errors.labels(UNKNOWN_VERSION).inc()
            raise InferenceError(str(error)) from None

    async def _forward(self, backend: Backend, request_id: str, content: bytes,
                       headers: dict) -> PredictorAnswer:
        """One call to `backend`; `PredictorFailed` when the failure is the predictor's (no connection,
        a connection dropped mid-request as a killed process drops it, a timeout, a 5xx, an unusable
        200), `ProtocolError` with the predictor's own status and message for a 4xx (the client's
        request, which the other revision would refuse too)."""
        name = backend.revision or backend.url
        try:
            async with self.session.post(f"{backend.url}/v2/models/{self.name}/infer",
                                         data=content, headers=headers) as response:
                status, answer = response.status, await response.read()
        except aiohttp.ClientConnectorError as error:
            raise self._predictor_failed(backend, f"cannot reach predictor {name}: {error}") from None
        except (TimeoutError, aiohttp.ClientError) as error:
            # ServerDisconnectedError / ClientOSError: the process died with this request in flight
            raise self._predictor_failed(backend, f"predictor {name} failed: {type(error).__name__} {error}") from None
        if 400 <= status < 500:
            raise ProtocolError(status, _error_message(answer))
        if status != 200:
            raise self._predictor_failed(backend, f"predictor {name} answered {status}: "
                                                  f"{answer[:200].decode(errors='replace')}")
        try:
            return read_answer(orjson.loads(answer), request_id, backend)
        except (orjson.JSONDecodeError, ValueError) as error:
            raise self._predictor_failed(backend, f"predictor {name} sent no usable outputs: {error}") from None

    def _predictor_failed(self, backend: Backend, message: str) -> PredictorFailed:
        version = backend.model_version or UNKNOWN_VERSION
        self.metrics.predictor_errors.labels(version).inc()
        return PredictorFailed(message, version)

    async def postprocess(self, answer: PredictorAnswer, headers: dict | None = None,
                          response_headers: dict | None = None) -> InferResponse:
        self.metrics.record_scores(answer.model_version, answer.fraud_probability, answer.is_fraud)
        n = len(answer.fraud_probability)
        return InferResponse(
            response_id=answer.request_id,
            model_name=self.name,
            model_version=answer.model_version,
            infer_outputs=[InferOutput(FRAUD_PROBABILITY, [n], "FP32", answer.fraud_probability),
                           InferOutput(IS_FRAUD, [n], "INT32", answer.is_fraud)],
        )

    def stop(self) -> None:
        """KServe's shutdown (sync, on the loop): let shadow calls finish, bounded, flush the pair log and the
        prediction log."""
        super().stop()
        if self.shadow is not None:
            asyncio.get_running_loop().create_task(self.shadow.close())
        if self.payload_logger is not None:  # flush the prediction log, bounded by its close deadline
            asyncio.get_running_loop().create_task(self.payload_logger.close())

    async def close(self) -> None:
        if self.shadow is not None:
            await self.shadow.close()
        if self.payload_logger is not None:
            await self.payload_logger.close()
        if self._session is not None:
            await self._session.close()


def _tensor(tensor: InferInput) -> Tensor:
    """An input as the contract reads it: JSON data as sent, binary data decoded only when asked."""
    return Tensor(tensor.name, tensor.datatype, list(tensor.shape),
                  tensor.data if isinstance(tensor.data, list) else tensor.as_numpy)


def _error_message(answer: bytes) -> str:
    try:
        body = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return answer[:200].decode(errors="replace")
    return str(body["error"]) if isinstance(body, dict) and "error" in body else str(body)[:200]
