"""v2 bodies and log events as KServe's payload logger carries them, for the prediction-log tests."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from fraud.inference_log import (
    PAIR_EVENT,
    REQUEST_EVENT,
    RESPONSE_EVENT,
    LogEvent,
    LoggedResponse,
    log_event,
    pair_body,
)
from fraud.schema import FEATURES

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def features(rows: int, seed: int = 0) -> np.ndarray:
    values = np.random.default_rng(seed).normal(size=(rows, len(FEATURES)))
    values[:, 0] = np.abs(values[:, 0]) * 1000  # Time and Amount are never negative
    values[:, -1] = np.abs(values[:, -1]) * 50
    return values


def request_body(matrix: np.ndarray, transaction_ids: list[str] | None = None, request_id: str | None = None,
                 columns: bool = False) -> dict:
    """A v2 request as clients send it: one [N, 30] `transactions` input, or one [N] input per feature."""
    if columns:
        inputs = [{"name": name, "datatype": "FP64", "shape": [len(matrix)], "data": matrix[:, i].tolist()}
                  for i, name in enumerate(FEATURES)]
    else:
        inputs = [{"name": "transactions", "datatype": "FP64", "shape": list(matrix.shape), "data": matrix.tolist()}]
    if transaction_ids is not None:
        inputs.append({"name": "transaction_id", "datatype": "BYTES", "shape": [len(transaction_ids)],
                       "data": transaction_ids})
    body: dict = {"inputs": inputs}
    if request_id is not None:
        body["id"] = request_id
    return body


def response_body(scores: list[float], version: str = "v2", request_id: str = "r") -> dict:
    """The transformer's v2 response: scores, decisions at 0.5, the version that answered."""
    return {"model_name": "fraud-detector", "model_version": version, "id": request_id, "outputs": [
        {"name": "fraud_probability", "datatype": "FP32", "shape": [len(scores)], "data": scores},
        {"name": "is_fraud", "datatype": "INT32", "shape": [len(scores)], "data": [int(s >= 0.5) for s in scores]}]}


def served_pair(event_id: str, rows: int, version: str = "v2", at: datetime = T0, seed: int = 0,
                transaction_prefix: str | None = None) -> tuple[LogEvent, LogEvent]:
    """The request and response events of one served request of `rows` rows (transaction ids
    `<prefix>-<row>` when a prefix is given)."""
    ids = [f"{transaction_prefix}-{row}" for row in range(rows)] if transaction_prefix else None
    scores = np.random.default_rng(seed).uniform(size=rows).round(4).tolist()
    return (log_event(event_id, REQUEST_EVENT, at, request_body(features(rows, seed), ids)),
            log_event(event_id, RESPONSE_EVENT, at + timedelta(milliseconds=3), response_body(scores, version)))


def shadow_pair(event_id: str, served: list[int], shadow: list[int], transaction_ids: list[str | None],
                versions: tuple[str, str] = ("v1", "v2"), at: datetime = T0) -> LogEvent:
    """The transformer's pair event of a shadowed request: `served` decided by versions[0], `shadow` by
    versions[1] (scores 0.9 where flagged, else 0.1)."""
    def answer(version: str, decisions: list[int]) -> LoggedResponse:
        flags = np.asarray(decisions, dtype=np.int64)
        return LoggedResponse(version, np.where(flags == 1, 0.9, 0.1), flags)

    return log_event(event_id, PAIR_EVENT, at, pair_body(answer(versions[0], served), answer(versions[1], shadow),
                                                         tuple(transaction_ids)))


def orphan_requests(store: Path) -> int:
    """Request events in a SQLite prediction store with no response event: what a lost response leaves."""
    import sqlite3

    with sqlite3.connect(store) as db:
        return db.execute("SELECT COUNT(*) FROM events r WHERE r.event_type = 'request' AND NOT EXISTS ("
                          "SELECT 1 FROM events a WHERE a.event_id = r.event_id "
                          "AND a.event_type = 'response')").fetchone()[0]
