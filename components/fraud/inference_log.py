"""Prediction-log records from the bodies KServe's payload logger carries (DESIGN 15).

The logger posts one CloudEvent with the raw v2 (Open Inference Protocol) request body and one with
the response body, sharing `ce-id`. This module reads those bodies into what the prediction store
keeps, and nothing else (privacy): the contract's features of each row with its transaction id from
a request; the answering version, score and decision of each row from a response. Other inputs,
parameters, headers and ids are dropped here.

KServe has no event for shadow scoring, so the transformer sends its own (`PAIR_EVENT`, id = the
v2 request id): both versions' scores and decisions on each row of a shadowed request, with the
rows' transaction ids, so that late labels join the pairs as they join the predictions.

A request sends the features as one `[N, 30]` input (`MATRIX_INPUT`, columns in `FEATURES` order)
or one `[N]` input per feature, and optionally `TRANSACTION_ID_INPUT` (BYTES, `[N]` strings) naming
each row's transaction; without it a one-row request's transaction is the request's `id`.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import orjson

from fraud.export import registered_version
from fraud.schema import FEATURES, MAX_TRANSACTION_ID_CHARS, TRANSACTION_ID

MATRIX_INPUT = "transactions"
TRANSACTION_ID_INPUT = TRANSACTION_ID  # optional, next to either feature form: one id per row
REQUEST_EVENT = "org.kubeflow.serving.inference.request"
RESPONSE_EVENT = "org.kubeflow.serving.inference.response"
PAIR_EVENT = "org.fraudrollout.serving.shadow.pair"
EVENT_TYPES = (REQUEST_EVENT, RESPONSE_EVENT, PAIR_EVENT)
#: The short name of each type (the store's `events.event_type`, metric labels).
EVENT_KINDS = {REQUEST_EVENT: "request", RESPONSE_EVENT: "response", PAIR_EVENT: "pair"}
_FEATURE_DATATYPES = ("FP32", "FP64")


@dataclass(frozen=True)
class LoggedRequest:
    """The rows of a logged request: `features` float64 `[N, len(FEATURES)]`, one id (or None) per row."""

    features: np.ndarray
    transaction_ids: tuple[str | None, ...]


#: A logged request that is not a v2 request of the contract's features (the transformer refused it).
REFUSED_REQUEST = LoggedRequest(np.empty((0, len(FEATURES))), ())


@dataclass(frozen=True)
class LoggedResponse:
    """The rows of a logged response: the registered version that answered, float64 scores, 0/1 decisions."""

    model_version: str
    fraud_probability: np.ndarray
    is_fraud: np.ndarray


@dataclass(frozen=True)
class LoggedPair:
    """A shadowed request's rows scored by both versions: the one that answered and the other one."""

    served: LoggedResponse
    shadow: LoggedResponse
    transaction_ids: tuple[str | None, ...]


@dataclass(frozen=True)
class LogEvent:
    """One logged request or response: its CloudEvent id and type, its occurrence time (aware, UTC) and rows."""

    event_id: str
    event_type: str
    time: datetime
    body: LoggedRequest | LoggedResponse | LoggedPair

    @property
    def kind(self) -> str:
        return EVENT_KINDS[self.event_type]

    @property
    def rows(self) -> int:
        body = self.body
        if isinstance(body, LoggedRequest):
            return len(body.features)
        return len(body.fraud_probability) if isinstance(body, LoggedResponse) else len(body.transaction_ids)


def log_event(event_id: str, event_type: str, time: datetime, body: object) -> LogEvent:
    """The event of a request or response body (bytes, str or decoded JSON); ValueError naming what is wrong."""
    if not event_id:
        raise ValueError("the event has no id")
    if time.tzinfo is None or time.utcoffset() is None:
        raise ValueError(f"event {event_id}: time {time.isoformat()} has no timezone")
    if event_type not in EVENT_TYPES:
        raise ValueError(f"event {event_id}: unknown type {event_type!r} (expected one of {', '.join(EVENT_TYPES)})")
    parsers: dict[str, Callable[[object], LoggedRequest | LoggedResponse | LoggedPair]] = {
        REQUEST_EVENT: parse_request, RESPONSE_EVENT: parse_response, PAIR_EVENT: parse_pair}
    try:
        parsed = parsers[event_type](body)
    except ValueError as error:
        if event_type == REQUEST_EVENT:
            # KServe's agent logs every request, also those the transformer refuses with a 400 (no
            # response event follows). Kept as an event without rows: refusing it would refuse the
            # good events of its batch too, and a client's bad input must lose nothing.
            return LogEvent(event_id, event_type, time, REFUSED_REQUEST)
        raise ValueError(f"event {event_id}: {error}") from None
    return LogEvent(event_id, event_type, time, parsed)


def parse_request(body: object) -> LoggedRequest:
    """The features and transaction ids of a v2 request body; ValueError when it is not one."""
    request = _json_object(body, "request")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs or not all(isinstance(tensor, dict) for tensor in inputs):
        raise ValueError("the request has no 'inputs' list of tensors")
    names = [tensor.get("name") for tensor in inputs]
    duplicates = sorted({str(name) for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"duplicate inputs: {', '.join(duplicates)}")
    id_tensor = next((tensor for tensor in inputs if tensor.get("name") == TRANSACTION_ID_INPUT), None)
    feature_inputs = [tensor for tensor in inputs if tensor is not id_tensor]
    if len(feature_inputs) == 1 and (feature_inputs[0].get("name") == MATRIX_INPUT
                                     or len(_shape(feature_inputs[0])) == 2):
        features = _matrix(feature_inputs[0])
    else:
        features = _columns(feature_inputs)
    rows = len(features)
    if id_tensor is not None:
        transaction_ids: tuple[str | None, ...] = _transaction_ids(id_tensor, rows)
    else:
        transaction_ids = row_transaction_ids(None, rows, request.get("id"))
    return LoggedRequest(features, transaction_ids)


def row_transaction_ids(ids: list[str] | None, rows: int, request_id: object) -> tuple[str | None, ...]:
    """Each row's transaction: the ids input if sent, else a one-row request's own id, else none."""
    if ids is not None:
        return tuple(ids)
    if rows == 1 and request_id is not None:
        return (_transaction_id(request_id, "the request's 'id'"),)
    return (None,) * rows


def pair_body(served: LoggedResponse, shadow: LoggedResponse, transaction_ids: tuple[str | None, ...]) -> bytes:
    """The JSON data of a `PAIR_EVENT` (what `parse_pair` reads): each side's version, scores, decisions."""
    body: dict[str, object] = {TRANSACTION_ID: list(transaction_ids)}
    for side, answer in (("served", served), ("shadow", shadow)):
        body.update({f"{side}_version": answer.model_version, f"{side}_fraud_probability": answer.fraud_probability,
                     f"{side}_is_fraud": answer.is_fraud})
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def parse_pair(body: object) -> LoggedPair:
    """Both versions' answers on a shadowed request's rows (`pair_body`); ValueError when it is not one."""
    pair = _json_object(body, "pair")
    ids = pair.get(TRANSACTION_ID)
    if not isinstance(ids, list) or not ids:
        raise ValueError(f"the pair needs {TRANSACTION_ID!r}: a list of one id (or null) per row")
    sides = [_pair_side(pair, side, len(ids)) for side in ("served", "shadow")]
    if sides[0].model_version == sides[1].model_version:
        raise ValueError(f"the pair's two answers come from one version, {sides[0].model_version!r}")
    transaction_ids = tuple(None if value is None else _transaction_id(value, f"{TRANSACTION_ID} element {i}")
                            for i, value in enumerate(ids))
    return LoggedPair(sides[0], sides[1], transaction_ids)


def _pair_side(pair: Mapping, side: str, rows: int) -> LoggedResponse:
    version = pair.get(f"{side}_version")
    if not isinstance(version, str) or not version:
        raise ValueError(f"the pair needs '{side}_version' (the version that answered)")
    probability = _numbers({"data": pair.get(f"{side}_fraud_probability")}, f"{side}_fraud_probability").reshape(-1)
    decisions = _numbers({"data": pair.get(f"{side}_is_fraud")}, f"{side}_is_fraud").reshape(-1)
    if not len(probability) == len(decisions) == rows:
        raise ValueError(f"{side}_fraud_probability and {side}_is_fraud must hold one value per row "
                         f"({rows}), got {len(probability)} and {len(decisions)}")
    if not np.isin(decisions, (0, 1)).all():
        raise ValueError(f"{side}_is_fraud must hold 0 or 1")
    if not ((probability >= 0) & (probability <= 1)).all():
        raise ValueError(f"{side}_fraud_probability must lie in [0, 1]")
    return LoggedResponse(registered_version(version), probability, decisions.astype(np.int64))


def parse_response(body: object) -> LoggedResponse:
    """The version, scores and decisions of a v2 response body; ValueError when it is not one."""
    response = _json_object(body, "response")
    outputs = response.get("outputs")
    if not isinstance(outputs, list) or not all(isinstance(tensor, dict) for tensor in outputs):
        raise ValueError("the response has no 'outputs' list of tensors")
    answered = response.get("model_version")
    if not isinstance(answered, str) or not answered:
        raise ValueError("the response has no 'model_version' (the version that answered)")
    by_name = {tensor.get("name"): tensor for tensor in outputs}
    missing = [name for name in ("fraud_probability", "is_fraud") if name not in by_name]
    if missing:
        raise ValueError(f"the response has no output {', '.join(missing)}")
    probability = _numbers(by_name["fraud_probability"], "fraud_probability").reshape(-1)
    decisions = _numbers(by_name["is_fraud"], "is_fraud").reshape(-1)
    if len(probability) != len(decisions) or not len(probability):
        raise ValueError(f"outputs fraud_probability ({len(probability)} values) and is_fraud "
                         f"({len(decisions)} values) must have the same number of rows, at least 1")
    if not np.isin(decisions, (0, 1)).all():
        raise ValueError("output is_fraud must hold 0 or 1")
    if not ((probability >= 0) & (probability <= 1)).all():
        raise ValueError("output fraud_probability must lie in [0, 1]")
    return LoggedResponse(registered_version(answered), probability, decisions.astype(np.int64))


def _json_object(body: object, what: str) -> Mapping:
    if isinstance(body, (bytes, bytearray, memoryview, str)):
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise ValueError(f"the {what} body is not JSON ({error})") from None
    if not isinstance(body, dict):
        raise ValueError(f"the {what} body is not a v2 {what} object")
    return body


def _shape(tensor: Mapping) -> list[int]:
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                              for n in shape):
        raise ValueError(f"input {tensor.get('name')!r}: shape {shape!r} is not a list of sizes")
    return shape


def _matrix(tensor: Mapping) -> np.ndarray:
    shape = _shape(tensor)
    if len(shape) != 2 or shape[1] != len(FEATURES) or shape[0] < 1:
        raise ValueError(f"input {tensor.get('name')!r}: shape {shape} is not [N, {len(FEATURES)}]")
    _check_datatype(tensor)
    return _numbers(tensor, str(tensor.get("name"))).reshape(shape)


def _columns(inputs: list[dict]) -> np.ndarray:
    names = [tensor.get("name") for tensor in inputs]
    unknown = [str(name) for name in names if name not in FEATURES]
    if unknown:
        raise ValueError(f"unknown inputs: {', '.join(unknown)}")
    missing = [feature for feature in FEATURES if feature not in names]
    if missing:
        raise ValueError(f"missing inputs: {', '.join(missing)}")
    by_name = {tensor["name"]: tensor for tensor in inputs}
    columns = []
    for feature in FEATURES:
        tensor = by_name[feature]
        _check_datatype(tensor)
        shape = _shape(tensor)
        if len(shape) != 1 or shape[0] < 1:
            raise ValueError(f"input {feature!r}: shape {shape} is not [N]")
        columns.append(_numbers(tensor, feature).reshape(shape))
    lengths = {len(column) for column in columns}
    if len(lengths) != 1:
        raise ValueError(f"inputs have different lengths: {sorted(lengths)}")
    return np.column_stack(columns)


def _check_datatype(tensor: Mapping) -> None:
    if tensor.get("datatype") not in _FEATURE_DATATYPES:
        raise ValueError(f"input {tensor.get('name')!r}: datatype {tensor.get('datatype')} is not FP32 or FP64")


def _numbers(tensor: Mapping, name: str) -> np.ndarray:
    """A tensor's JSON data as finite float64, refusing strings, nulls, booleans and ragged rows."""
    data = tensor.get("data")
    try:
        values = np.asarray(data)
    except ValueError:  # ragged
        values = np.asarray([], dtype=object)
    if not isinstance(data, list) or values.dtype.kind not in "fiu" or (
            ((values == 0) | (values == 1)).any() and _has_booleans(data)):
        raise ValueError(f"{name!r}: data must be a list of numbers")
    shape = tensor.get("shape")
    if isinstance(shape, list) and values.size != int(np.prod(shape)):
        raise ValueError(f"{name!r}: {values.size} values do not fit shape {shape}")
    values = values.astype(np.float64, copy=False)
    if not np.isfinite(values).all():
        raise ValueError(f"{name!r}: data holds NaN or infinite values")
    return values


def _has_booleans(data: list) -> bool:
    """NumPy reads true/false mixed with numbers as 1.0/0.0 (so only data holding a 0 or 1 is looked
    at); the Python types tell them apart."""
    return any(type(item) is bool or (type(item) is list and _has_booleans(item)) for item in data)


def _transaction_ids(tensor: Mapping, rows: int) -> tuple[str, ...]:
    shape, data = tensor.get("shape"), tensor.get("data")
    if tensor.get("datatype") != "BYTES" or shape != [rows] or not isinstance(data, list) or len(data) != rows:
        raise ValueError(f"input {TRANSACTION_ID_INPUT!r} must be BYTES of shape [{rows}] (one string per row), "
                         f"got {tensor.get('datatype')} {shape}")
    return tuple(_transaction_id(value, f"{TRANSACTION_ID_INPUT} element {i}") for i, value in enumerate(data))


def _transaction_id(value: object, where: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_TRANSACTION_ID_CHARS:
        shown = repr(value) if not isinstance(value, str) or len(value) <= 40 else f"{value[:40]!r}…"
        raise ValueError(f"{where}: {shown} is not a transaction id (a string of 1 to "
                         f"{MAX_TRANSACTION_ID_CHARS} characters)")
    return value
