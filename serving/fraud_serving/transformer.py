"""The transformer: validates raw transactions, scales them with the feature contract, forwards v2
to the predictor and returns its outputs with the `model_version` that answered (Triton's numeric
version directory "2" as the registered "v2").

Clients send either one input `[N, 30]` (FP32/FP64, columns in contract order) or 30 named inputs
(`Time`, `V1`…`V28`, `Amount`, each `[N]`). Every client mistake is an `InvalidInput` (HTTP 400)
whose message names the field, counted in `fraud_rejected_requests_total{reason}`.

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
from fraud.routes import Backend
from kserve import Model
from kserve.constants.constants import INFERENCE_CONTENT_LENGTH_HEADER
from kserve.errors import InferenceError, InvalidInput
from kserve.model import InferenceVerb, append_forwardable_headers
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse

from fraud_serving.answer import PredictorAnswer
from fraud_serving.answer import read_answer as _answer  # the name predict() calls
from fraud_serving.fast_route import binary_request
from fraud_serving.metrics import UNKNOWN_VERSION, TransformerMetrics
from fraud_serving.routing import NoPredictor, Routes
from fraud_serving.shadow import ShadowScorer

DEFAULT_MAX_ROWS = 10_000
INLINE_ROWS = 256
ACCEPTED_DATATYPES = {"FP32": np.float32, "FP64": np.float64}
NON_NEGATIVE = ("Time", "Amount")
MATRIX_INPUT = "transactions"  # the [N, 30] form; the other form is one [N] input per feature


class FraudTransformer(Model):
    """Validate → scale (feature contract) → predictor → outputs with the answering model_version."""

    def __init__(self, name: str, contract: FeatureContract, routes: Routes, metrics: TransformerMetrics,
                 max_rows: int = DEFAULT_MAX_ROWS, timeout_seconds: float = 30.0,
                 shadow: ShadowScorer | None = None) -> None:
        super().__init__(name)
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {max_rows}")
        self.contract = contract
        self.features = contract.features
        self._feature_index = {name: i for i, name in enumerate(self.features)}
        self.routes = routes
        self.metrics = metrics
        self.max_rows = max_rows
        self.timeout_seconds = timeout_seconds
        self._session: aiohttp.ClientSession | None = None
        self.shadow = shadow

    def load(self) -> bool:
        self.ready = True
        return self.ready

    async def healthy(self) -> bool:
        """Ready to serve only once a predictor receives traffic (the local runtime's routes may lag)."""
        self.routes.refresh()
        return self.ready and bool(self.routes.backends)

    def get_input_types(self) -> list[dict]:
        return [{"name": MATRIX_INPUT, "datatype": "FP64", "shape": [-1, len(self.features)]}] + [
            {"name": feature, "datatype": "FP64", "shape": [-1]} for feature in self.features]

    def get_output_types(self) -> list[dict]:
        return [{"name": "fraud_probability", "datatype": "FP32", "shape": [-1]},
                {"name": "is_fraud", "datatype": "INT32", "shape": [-1]}]

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
            self._reject("protocol", "send Open Inference Protocol v2 to /v2/models/{name}/infer")
        rows = _declared_rows(payload)
        if rows > INLINE_ROWS:
            scaled = await asyncio.get_running_loop().run_in_executor(None, self.scale_request, payload)
        else:
            scaled = self.scale_request(payload)
        scaled_input = InferInput(INPUT_NAME, list(scaled.shape), "FP32", data=scaled)
        return InferRequest(self.name, [scaled_input], request_id=payload.id or str(uuid.uuid4()))

    def scale_request(self, request: InferRequest) -> np.ndarray:
        """Raw features in contract order, validated, → scaled float32 `[N, 30]` (contract.transform)."""
        return self.contract.transform(self.raw_features(request))

    def raw_features(self, request: InferRequest) -> np.ndarray:
        inputs = request.inputs
        if not inputs:
            self._reject("empty", "the request has no inputs")
        if len(inputs) == 1 and (len(inputs[0].shape) == 2 or inputs[0].name == MATRIX_INPUT):
            raw = self._matrix(inputs[0])
        else:
            raw = self._columns(inputs)
        finite = np.isfinite(raw)
        if not finite.all():
            columns = [self.features[i] for i in np.flatnonzero(~finite.all(axis=0))]
            self._reject("nan", f"NaN or infinite values in {', '.join(columns)}")
        for feature in NON_NEGATIVE:
            column = raw[:, self._feature_index[feature]]
            if (column < 0).any():
                row = int(np.argmax(column < 0))
                self._reject("negative_value", f"{feature} must not be negative (row {row}: {column[row]})")
        return raw

    def _matrix(self, tensor: InferInput) -> np.ndarray:
        n_features = len(self.features)
        shape = list(tensor.shape)
        self._check_datatype(tensor)
        if len(shape) != 2 or shape[1] != n_features:
            self._reject("shape", f"input {tensor.name!r}: shape {shape} is not [N, {n_features}] "
                                  f"(columns in contract order: {self.features[0]}, {self.features[1]} … "
                                  f"{self.features[-1]})")
        self._check_rows(tensor.name, shape[0])
        return self._as_array(tensor)

    def _columns(self, inputs: list[InferInput]) -> np.ndarray:
        names = [tensor.name for tensor in inputs]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            self._reject("duplicate_column", f"duplicate inputs: {', '.join(duplicates)}")
        unknown = [name for name in names if name not in self._feature_index]
        if unknown:
            self._reject("unknown_column", f"unknown inputs: {', '.join(unknown)} (send one [N, "
                                           f"{len(self.features)}] input or one [N] input per feature)")
        missing = [feature for feature in self.features if feature not in names]
        if missing:
            self._reject("missing_column", f"missing inputs: {', '.join(missing)}")
        lengths = set()
        for tensor in inputs:
            self._check_datatype(tensor)
            if len(tensor.shape) != 1:
                self._reject("shape", f"input {tensor.name!r}: shape {list(tensor.shape)} is not [N]")
            lengths.add(tensor.shape[0])
        if len(lengths) != 1:
            self._reject("shape", f"inputs have different lengths: "
                                  f"{', '.join(f'{t.name} {list(t.shape)}' for t in inputs)}")
        self._check_rows(inputs[0].name, lengths.pop())
        by_name = {tensor.name: tensor for tensor in inputs}
        return np.column_stack([self._as_array(by_name[feature]) for feature in self.features])

    def _check_datatype(self, tensor: InferInput) -> None:
        if tensor.datatype not in ACCEPTED_DATATYPES:
            self._reject("datatype", f"input {tensor.name!r}: datatype {tensor.datatype} is not FP32 or FP64")

    def _check_rows(self, name: str, rows: int) -> None:
        if rows < 1:
            self._reject("empty", f"input {name!r} has no rows")
        if rows > self.max_rows:
            self._reject("row_limit", f"input {name!r}: {rows} rows exceed the limit of {self.max_rows} "
                                      "per request")

    def _as_array(self, tensor: InferInput) -> np.ndarray:
        try:
            values = tensor.as_numpy()
        except (ValueError, TypeError) as error:
            # NumPy's ragged-list message runs on for 300 characters; the first clause is the cause
            reason = "rows of different lengths" if "inhomogeneous" in str(error) else str(error)[:120]
            self._reject("data", f"input {tensor.name!r}: data does not fit shape {list(tensor.shape)} and "
                                 f"datatype {tensor.datatype} ({reason})")
        return values.astype(np.float64, copy=False)

    def _reject(self, reason: str, message: str):
        self.metrics.rejected.labels(reason).inc()
        raise InvalidInput(message)

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
        for attempt in (1, 2):
            try:
                backend = self.routes.pick()
            except NoPredictor as error:
                self.metrics.predictor_errors.labels(UNKNOWN_VERSION).inc()
                raise InferenceError(str(error)) from None
            try:
                async with self.session.post(f"{backend.url}/v2/models/{self.name}/infer",
                                             data=content, headers=forward_headers) as response:
                    status, answer = response.status, await response.read()
            except aiohttp.ClientConnectorError as error:
                # nothing reached the predictor (e.g. a revision just removed): one more pick is safe
                if attempt == 1:
                    continue
                self._predictor_failed(backend, f"cannot reach predictor {backend.revision or backend.url}: {error}")
            except (TimeoutError, aiohttp.ClientError) as error:
                self._predictor_failed(backend, f"predictor {backend.revision or backend.url} failed: "
                                                f"{type(error).__name__} {error}")
            if status != 200:
                self._predictor_failed(backend, f"predictor {backend.revision or backend.url} answered "
                                                f"{status}: {answer[:200].decode(errors='replace')}")
            answered = _answer(orjson.loads(answer), payload.id, backend)
            if self.shadow is not None:
                self.shadow.submit(backend, content, forward_headers, answered)
            return answered
        raise AssertionError("unreachable")

    def _predictor_failed(self, backend: Backend, message: str):
        self.metrics.predictor_errors.labels(backend.model_version or UNKNOWN_VERSION).inc()
        raise InferenceError(message)

    async def postprocess(self, answer: PredictorAnswer, headers: dict | None = None,
                          response_headers: dict | None = None) -> InferResponse:
        self.metrics.record_scores(answer.model_version, answer.fraud_probability, answer.is_fraud)
        n = len(answer.fraud_probability)
        return InferResponse(
            response_id=answer.request_id,
            model_name=self.name,
            model_version=answer.model_version,
            infer_outputs=[InferOutput("fraud_probability", [n], "FP32", answer.fraud_probability),
                           InferOutput("is_fraud", [n], "INT32", answer.is_fraud)],
        )

    def stop(self) -> None:
        """KServe's shutdown (sync, on the loop): let shadow calls finish, bounded, and flush the pair log."""
        super().stop()
        if self.shadow is not None:
            asyncio.get_running_loop().create_task(self.shadow.close())

    async def close(self) -> None:
        if self.shadow is not None:
            await self.shadow.close()
        if self._session is not None:
            await self._session.close()


def _declared_rows(request: InferRequest) -> int:
    shape = request.inputs[0].shape if request.inputs else []
    return int(shape[0]) if shape and isinstance(shape[0], int) else 0

