"""Prediction-log records from the bodies KServe's payload logger carries (DESIGN 15).

The logger posts one CloudEvent with the raw v2 (Open Inference Protocol) request body and one with
the response body, sharing `ce-id`. This module reads those bodies into what the prediction store
keeps, and nothing else (privacy): the contract's features of each row with its transaction id from
a request; the answering version, score and decision of each row from a response. Other inputs,
parameters, headers and ids are dropped here.

KServe has no event for shadow scoring, so the transformer sends its own (`PAIR_EVENT`, id = the
v2 request id): both versions' scores and decisions on each row of a shadowed request, with the
rows' transaction ids, so that late labels join the pairs as they join the predictions.

A request is read by the transformer's own contract (`fraud.protocol`), so the log keeps rows of
exactly the requests the transformer answers; each row's transaction is the `transaction_id`
input's, else a one-row request's `id`.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import orjson

from fraud.export import registered_version
from fraud.protocol import (
    FRAUD_PROBABILITY,
    IS_FRAUD,
    check_scores,
    decode_answer,
    decode_request,
    json_request_tensors,
    output_values,
    row_transaction_ids,
    transaction_id,
)
from fraud.schema import FEATURES, TRANSACTION_ID

REQUEST_EVENT = "org.kubeflow.serving.inference.request"
RESPONSE_EVENT = "org.kubeflow.serving.inference.response"
PAIR_EVENT = "org.fraudrollout.serving.shadow.pair"
EVENT_TYPES = (REQUEST_EVENT, RESPONSE_EVENT, PAIR_EVENT)
#: The short name of each type (the store's `events.event_type`, metric labels).
EVENT_KINDS = {REQUEST_EVENT: "request", RESPONSE_EVENT: "response", PAIR_EVENT: "pair"}


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
    """The features and transaction ids of a v2 request body; ValueError (`RequestRefused`) when the
    transformer would refuse it (`fraud.protocol`)."""
    request = _json_object(body, "request")
    decoded = decode_request(json_request_tensors(request))
    transaction_ids = row_transaction_ids(decoded.transaction_ids, len(decoded.features), request.get("id"))
    return LoggedRequest(decoded.features, transaction_ids)


def pair_body(served: LoggedResponse, shadow: LoggedResponse, transaction_ids: tuple[str | None, ...]) -> bytes:
    """The JSON data of a `PAIR_EVENT` (what `parse_pair` reads): each side's version, scores, decisions."""
    body: dict[str, object] = {TRANSACTION_ID: list(transaction_ids)}
    for side, answer in (("served", served), ("shadow", shadow)):
        body.update({f"{side}_version": answer.model_version, f"{side}_{FRAUD_PROBABILITY}": answer.fraud_probability,
                     f"{side}_{IS_FRAUD}": answer.is_fraud})
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
    transaction_ids = tuple(None if value is None else transaction_id(value, f"{TRANSACTION_ID} element {i}")
                            for i, value in enumerate(ids))
    return LoggedPair(sides[0], sides[1], transaction_ids)


def _pair_side(pair: Mapping, side: str, rows: int) -> LoggedResponse:
    version = pair.get(f"{side}_version")
    if not isinstance(version, str) or not version:
        raise ValueError(f"the pair needs '{side}_version' (the version that answered)")
    probability = output_values(pair.get(f"{side}_{FRAUD_PROBABILITY}"), f"{side}_{FRAUD_PROBABILITY}")
    decisions = output_values(pair.get(f"{side}_{IS_FRAUD}"), f"{side}_{IS_FRAUD}")
    if not len(probability) == len(decisions) == rows:
        raise ValueError(f"{side}_{FRAUD_PROBABILITY} and {side}_{IS_FRAUD} must hold one value per row "
                         f"({rows}), got {len(probability)} and {len(decisions)}")
    check_scores(probability, decisions, f"{side}_{FRAUD_PROBABILITY}", f"{side}_{IS_FRAUD}")
    return LoggedResponse(registered_version(version), probability, decisions.astype(np.int64))


def parse_response(body: object) -> LoggedResponse:
    """The version, scores and decisions of a v2 response body; ValueError when it is not one."""
    answer = decode_answer(_json_object(body, "response"))
    if not answer.model_version:
        raise ValueError("the response has no 'model_version' (the version that answered)")
    return LoggedResponse(registered_version(answer.model_version), answer.fraud_probability, answer.is_fraud)


def _json_object(body: object, what: str) -> Mapping:
    if isinstance(body, (bytes, bytearray, memoryview, str)):
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise ValueError(f"the {what} body is not JSON ({error})") from None
    if not isinstance(body, dict):
        raise ValueError(f"the {what} body is not a v2 {what} object")
    return body
