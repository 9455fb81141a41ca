"""The prediction store: served predictions joined from KServe's logged requests and responses, and
the late labels that join them by transaction id (DESIGN 15).

One interface over two databases: a SQLite file (the embedded default: WAL, synchronous=FULL, so
a committed event survives a crash of the process or the machine) and PostgreSQL (psycopg 3, a
`postgresql://` URL). Both run the same SQL; only placeholders and column types differ.

Tables:
- `events(event_id, event_type)`: one row per CloudEvent recorded, so a logger's duplicate is skipped;
- `predictions(event_id, row, …)`: one row per request row, the request event filling the features
  and transaction id, the response event the version, score and decision, whichever comes first
  (KServe's agent sends the two from a worker pool, in no fixed order);
- `pairs(event_id, row, …)`: the shadow pairs, one row per row of a shadowed request, both versions'
  scores and decisions and the row's transaction id (the transformer's `PAIR_EVENT`);
- `labels(transaction_id, label, label_time)`: the latest label of a transaction (a re-ingest overwrites).

Times are timezone-aware UTC; a prediction's time is its request event's `ce-time` (its response's
when the request was never logged).
"""
from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from fraud.inference_log import LogEvent, LoggedPair, LoggedRequest
from fraud.schema import FEATURES

DATABASE_ERRORS = (sqlite3.Error, psycopg.Error)
SQLITE_PREFIX = "sqlite:///"
POSTGRES_PREFIXES = ("postgresql://", "postgres://")
BUSY_TIMEOUT_MS = 10_000
SERVED_COLUMNS = ("event_id", "row", "transaction_id", "model_version", "score", "decision", "requested_at",
                  "answered_at", "label", "label_time", "features")
PAIR_COLUMNS = ("event_id", "row", "transaction_id", "served_version", "shadow_version", "served_score",
                "shadow_score", "served_decision", "shadow_decision", "paired_at", "label", "label_time")


class StoreError(Exception):
    """The database failed or cannot be opened (not the caller's input): the message names it."""


@dataclass(frozen=True)
class RecordResult:
    """What `record` did: per event, in order, True when recorded and False for a duplicate."""

    recorded: tuple[bool, ...]
    rows: int  # prediction rows written (request and response rows each count)

    @property
    def accepted(self) -> int:
        return sum(self.recorded)

    @property
    def duplicates(self) -> int:
        return len(self.recorded) - self.accepted


@dataclass(frozen=True)
class LabelResult:
    """Labels of one ingest: `joined` match a served prediction's transaction id, `unknown` do not (yet)."""

    joined: int
    unknown: int
    total: int


@dataclass(frozen=True)
class _Dialect:
    name: str
    placeholder: str
    time_type: str
    blob_type: str
    real_type: str
    begin_write: str | None  # None: the driver opens a transaction itself
    begin_read: str | None
    time_param: Callable[[datetime], Any]


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"time {moment.isoformat()} has no timezone")
    return moment.astimezone(UTC)


# SQLite has no time type: fixed-width ISO 8601 in UTC sorts and compares as the instants do.
_SQLITE = _Dialect("sqlite", "?", "TEXT", "BLOB", "REAL", "BEGIN IMMEDIATE", "BEGIN",
                   lambda moment: _utc(moment).isoformat(timespec="microseconds"))
_POSTGRES = _Dialect("postgresql", "%s", "TIMESTAMPTZ", "BYTEA", "DOUBLE PRECISION", None, None, _utc)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS events (event_id TEXT NOT NULL, event_type TEXT NOT NULL, "
    "event_time {time} NOT NULL, PRIMARY KEY (event_id, event_type))",
    "CREATE INDEX IF NOT EXISTS events_time ON events (event_time)",
    "CREATE TABLE IF NOT EXISTS predictions (event_id TEXT NOT NULL, row INTEGER NOT NULL, transaction_id TEXT, "
    "features {blob}, model_version TEXT, score {real}, decision INTEGER, requested_at {time}, "
    "answered_at {time}, PRIMARY KEY (event_id, row))",
    "CREATE INDEX IF NOT EXISTS predictions_transaction ON predictions (transaction_id)",
    "CREATE INDEX IF NOT EXISTS predictions_requested ON predictions (requested_at)",
    # what every window reads by (_PREDICTION_TIME): without it a window is a scan of the whole table,
    # and the sink's /metrics, which reads the last hour, took seconds per million stored rows
    "CREATE INDEX IF NOT EXISTS predictions_time ON predictions ((COALESCE(requested_at, answered_at)))",
    "CREATE TABLE IF NOT EXISTS labels (transaction_id TEXT PRIMARY KEY, label INTEGER NOT NULL, "
    "label_time {time} NOT NULL)",
    "CREATE TABLE IF NOT EXISTS pairs (event_id TEXT NOT NULL, row INTEGER NOT NULL, transaction_id TEXT, "
    "served_version TEXT NOT NULL, shadow_version TEXT NOT NULL, served_score {real} NOT NULL, "
    "shadow_score {real} NOT NULL, served_decision INTEGER NOT NULL, shadow_decision INTEGER NOT NULL, "
    "paired_at {time} NOT NULL, PRIMARY KEY (event_id, row))",
    "CREATE INDEX IF NOT EXISTS pairs_paired ON pairs (paired_at)",
)
_INSERT_EVENT = "INSERT INTO events (event_id, event_type, event_time) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
_UPSERT_REQUEST = (
    "INSERT INTO predictions (event_id, row, transaction_id, features, requested_at) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (event_id, row) DO UPDATE SET transaction_id = excluded.transaction_id, "
    "features = excluded.features, requested_at = excluded.requested_at")
_UPSERT_RESPONSE = (
    "INSERT INTO predictions (event_id, row, model_version, score, decision, answered_at) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (event_id, row) DO UPDATE SET model_version = excluded.model_version, score = excluded.score, "
    "decision = excluded.decision, answered_at = excluded.answered_at")
_INSERT_PAIR = (
    "INSERT INTO pairs (event_id, row, transaction_id, served_version, shadow_version, served_score, shadow_score, "
    "served_decision, shadow_decision, paired_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")
_UPSERT_LABEL = (
    "INSERT INTO labels (transaction_id, label, label_time) VALUES (?, ?, ?) "
    "ON CONFLICT (transaction_id) DO UPDATE SET label = excluded.label, label_time = excluded.label_time")
_PREDICTION_TIME = "COALESCE(p.requested_at, p.answered_at)"


class PredictionStore:
    """The prediction log over one database connection; safe to share between threads (calls take turns)."""

    def __init__(self, url: str, dialect: _Dialect, connect: Callable[[], Any]) -> None:
        self.url = url
        self._dialect = dialect
        self._connect = connect
        self._lock = threading.Lock()
        self._connection: Any = None
        self._closed = False
        with self._transaction(write=True) as cursor:
            for statement in _SCHEMA:
                cursor.execute(statement.format(time=dialect.time_type, blob=dialect.blob_type,
                                                real=dialect.real_type))

    @property
    def backend(self) -> str:
        """"sqlite" or "postgresql"."""
        return self._dialect.name

    def record(self, events: Sequence[LogEvent]) -> RecordResult:
        """Record logged requests and responses in one transaction (a group commit): all or none.

        An event whose (id, type) is already stored is a duplicate and changes nothing, also when the
        same event comes twice in `events`. Raises StoreError when the database fails."""
        recorded = [False] * len(events)
        requests: list[tuple] = []
        responses: list[tuple] = []
        pairs: list[tuple] = []
        # Rows are written in key order, not arrival order: two writers (two sinks during a rolling
        # update) then take PostgreSQL's row locks in the same order and never deadlock (arrival
        # order deadlocked 81 of 200 rounds of two 64-event groups; key order 0 of 200).
        order = sorted(range(len(events)), key=lambda i: (events[i].event_id, events[i].kind))
        with self._transaction(write=True) as cursor:
            for index in order:
                event = events[index]
                at = self._dialect.time_param(event.time)
                cursor.execute(self._sql(_INSERT_EVENT), (event.event_id, event.kind, at))
                recorded[index] = cursor.rowcount == 1
                if not recorded[index]:
                    continue
                body = event.body
                if isinstance(body, LoggedPair):
                    served, shadow = body.served, body.shadow
                    pairs.extend((event.event_id, row, transaction_id, served.model_version, shadow.model_version,
                                  *scores, *decisions, at)
                                 for row, (transaction_id, scores, decisions) in enumerate(zip(
                                     body.transaction_ids,
                                     zip(served.fraud_probability.tolist(), shadow.fraud_probability.tolist()),
                                     zip(served.is_fraud.tolist(), shadow.is_fraud.tolist()))))
                elif isinstance(body, LoggedRequest):
                    features = np.ascontiguousarray(body.features, dtype="<f8")
                    requests.extend((event.event_id, row, transaction_id, features[row].tobytes(), at)
                                    for row, transaction_id in enumerate(body.transaction_ids))
                else:
                    responses.extend((event.event_id, row, body.model_version, score, decision, at)
                                     for row, (score, decision) in enumerate(
                                         zip(body.fraud_probability.tolist(), body.is_fraud.tolist())))
            for statement, rows in ((_UPSERT_REQUEST, requests), (_UPSERT_RESPONSE, responses), (_INSERT_PAIR, pairs)):
                if rows:
                    cursor.executemany(self._sql(statement), sorted(rows, key=lambda row: row[:2]))
        return RecordResult(tuple(recorded), len(requests) + len(responses) + len(pairs))

    def ingest_labels(self, frame: pd.DataFrame) -> LabelResult:
        """Store labels (columns of `fraud.labels.check_labels`: one row per transaction), overwriting
        a transaction's earlier label; counts how many join a served prediction."""
        rows = [(str(transaction_id), int(label), self._dialect.time_param(time.to_pydatetime()))
                for transaction_id, label, time in zip(frame["transaction_id"], frame["label"], frame["label_time"])]
        with self._transaction(write=True) as cursor:
            cursor.execute("CREATE TEMPORARY TABLE IF NOT EXISTS label_batch (transaction_id TEXT PRIMARY KEY)")
            cursor.execute("DELETE FROM label_batch")
            if rows:
                cursor.executemany(self._sql(_UPSERT_LABEL), rows)
                cursor.executemany(self._sql("INSERT INTO label_batch (transaction_id) VALUES (?)"),
                                   [row[:1] for row in rows])
            cursor.execute("SELECT COUNT(*) FROM label_batch b WHERE EXISTS "
                           "(SELECT 1 FROM predictions p WHERE p.transaction_id = b.transaction_id)")
            joined = int(cursor.fetchone()[0])
            cursor.execute("DELETE FROM label_batch")
        return LabelResult(joined, len(rows) - joined, len(rows))

    def _window(self, column: str, since: datetime | None, until: datetime | None) -> tuple[str, tuple]:
        """The WHERE clause and parameters of `since <= column < until` (either bound optional)."""
        bounds = [(f"{column} >= ?", since), (f"{column} < ?", until)]
        kept = [(clause, self._dialect.time_param(moment)) for clause, moment in bounds if moment is not None]
        if not kept:
            return "", ()
        return " WHERE " + " AND ".join(clause for clause, _ in kept), tuple(param for _, param in kept)

    def served(self, since: datetime | None = None, until: datetime | None = None) -> pd.DataFrame:
        """One row per logged prediction row (at or after `since`, before `until`), with its label if one
        has arrived, in time order: columns `SERVED_COLUMNS` (`features`: float64 bytes; see `feature_matrix`).

        A row whose response is missing (the request was refused, or its event lost) has no
        model_version, score or decision; one whose request is missing has no features."""
        query = ("SELECT p.event_id, p.row, p.transaction_id, p.model_version, p.score, p.decision, p.requested_at, "
                 "p.answered_at, l.label, l.label_time, p.features FROM predictions p "
                 "LEFT JOIN labels l ON l.transaction_id = p.transaction_id")
        where, params = self._window(_PREDICTION_TIME, since, until)
        query += where + f" ORDER BY {_PREDICTION_TIME}, p.event_id, p.row"
        with self._transaction(write=False) as cursor:
            cursor.execute(self._sql(query), params)
            records = cursor.fetchall()
        frame = pd.DataFrame.from_records(records, columns=list(SERVED_COLUMNS))
        for column in ("requested_at", "answered_at", "label_time"):
            frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
        for column in ("row", "decision", "label"):
            frame[column] = frame[column].astype("Int64")
        frame["score"] = frame["score"].astype(float)
        frame["features"] = frame["features"].map(lambda blob: None if blob is None else bytes(blob))
        return frame

    def pairs(self, since: datetime | None = None, until: datetime | None = None) -> pd.DataFrame:
        """One row per shadow-paired row (scored at or after `since`, before `until`), with its label
        if one has arrived, in time order: columns `PAIR_COLUMNS`."""
        query = ("SELECT s.event_id, s.row, s.transaction_id, s.served_version, s.shadow_version, s.served_score, "
                 "s.shadow_score, s.served_decision, s.shadow_decision, s.paired_at, l.label, l.label_time FROM pairs s "
                 "LEFT JOIN labels l ON l.transaction_id = s.transaction_id")
        where, params = self._window("s.paired_at", since, until)
        query += where + " ORDER BY s.paired_at, s.event_id, s.row"
        with self._transaction(write=False) as cursor:
            cursor.execute(self._sql(query), params)
            records = cursor.fetchall()
        frame = pd.DataFrame.from_records(records, columns=list(PAIR_COLUMNS))
        for column in ("paired_at", "label_time"):
            frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
        for column in ("row", "served_decision", "shadow_decision", "label"):
            frame[column] = frame[column].astype("Int64")
        for column in ("served_score", "shadow_score"):
            frame[column] = frame[column].astype(float)
        return frame

    def counts(self) -> dict[str, Any]:
        """`logged`: requests logged (distinct event ids), `answered`: responses logged, `rows`:
        prediction rows, `labelled`: rows whose label has arrived, `per_version`: answered rows per
        model version, `paired`: shadow-paired rows."""
        with self._transaction(write=False) as cursor:
            cursor.execute("SELECT event_type, COUNT(*) FROM events GROUP BY event_type")
            events = {kind: int(n) for kind, n in cursor.fetchall()}
            cursor.execute("SELECT COUNT(*), COUNT(l.transaction_id) FROM predictions p "
                           "LEFT JOIN labels l ON l.transaction_id = p.transaction_id")
            rows, labelled = cursor.fetchone()
            cursor.execute("SELECT model_version, COUNT(*) FROM predictions WHERE model_version IS NOT NULL "
                           "GROUP BY model_version ORDER BY model_version")
            per_version = {str(version): int(n) for version, n in cursor.fetchall()}
            cursor.execute("SELECT COUNT(*) FROM pairs")
            paired = int(cursor.fetchone()[0])
        return {"logged": events.get("request", 0), "answered": events.get("response", 0), "rows": int(rows),
                "labelled": int(labelled), "per_version": per_version, "paired": paired}

    def delete_older_than(self, cutoff: datetime) -> int:
        """Retention: delete predictions, events and labels older than `cutoff`; the predictions deleted."""
        at = self._dialect.time_param(cutoff)
        with self._transaction(write=True) as cursor:
            cursor.execute(self._sql("DELETE FROM predictions WHERE COALESCE(requested_at, answered_at) < ?"), (at,))
            deleted = int(cursor.rowcount)
            cursor.execute(self._sql("DELETE FROM pairs WHERE paired_at < ?"), (at,))
            cursor.execute(self._sql("DELETE FROM events WHERE event_time < ?"), (at,))
            cursor.execute(self._sql("DELETE FROM labels WHERE label_time < ?"), (at,))
        return deleted

    def ping(self) -> None:
        """A round trip to the database; StoreError when it fails."""
        with self._transaction(write=False) as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchall()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def __enter__(self) -> PredictionStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _sql(self, statement: str) -> str:
        return statement.replace("?", self._dialect.placeholder)

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[Any]:
        with self._lock:
            if self._closed:
                raise StoreError(f"the store {self.url} is closed")
            try:
                if self._connection is None:
                    self._connection = self._connect()
                connection = self._connection
                cursor = connection.cursor()
                begin = self._dialect.begin_write if write else self._dialect.begin_read
                if begin:
                    cursor.execute(begin)
            except DATABASE_ERRORS as error:
                self._drop_connection()
                raise StoreError(f"{self.url}: {_one_line(error)}") from error
            try:
                yield cursor
                connection.commit()
            except DATABASE_ERRORS as error:
                self._rollback()
                raise StoreError(f"{self.url}: {_one_line(error)}") from error
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        try:
            self._connection.rollback()
        except DATABASE_ERRORS:
            self._drop_connection()  # broken (a PostgreSQL restart): the next call reconnects
            return
        if self._dialect is _POSTGRES and self._connection.broken:
            self._drop_connection()

    def _drop_connection(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            except DATABASE_ERRORS:
                pass  # already gone
        self._connection = None


def open_store(url: str, *, create: bool = True) -> PredictionStore:
    """The store at `url`: a file path or `sqlite:///path` (SQLite; its directory is created), or a
    `postgresql://` URL. ValueError for any other URL, StoreError when the database cannot be opened
    (or, with `create` False, when a SQLite file does not exist yet: a reader's typo, not a new store)."""
    if url.startswith(POSTGRES_PREFIXES):
        def connect_postgres() -> psycopg.Connection:
            return psycopg.connect(url, connect_timeout=10)

        return PredictionStore(redacted_url(url), _POSTGRES, connect_postgres)
    if url.startswith(SQLITE_PREFIX):
        path = Path(url[len(SQLITE_PREFIX):])
    elif "://" in url or not url.strip():
        raise ValueError(f"store URL {url!r}: use a file path, sqlite:///PATH or postgresql://USER@HOST:PORT/DB")
    else:
        path = Path(url)
    if path.is_dir():
        raise StoreError(f"store {str(path)!r} is a directory: name a database file in it")
    if not create and not path.is_file():
        raise StoreError(f"no prediction store at {str(path)!r}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StoreError(f"store {str(path)!r}: cannot create its directory ({error.strerror})") from None

    def connect_sqlite() -> sqlite3.Connection:
        # isolation_level=None: transactions are opened explicitly (BEGIN IMMEDIATE takes the write
        # lock up front, so two writers wait on busy_timeout instead of failing on upgrade).
        connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                     check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        return connection

    return PredictionStore(str(path), _SQLITE, connect_sqlite)


def feature_matrix(served: pd.DataFrame) -> np.ndarray:
    """The float64 `[N, len(FEATURES)]` features of `served`'s rows (NaN where the request is missing)."""
    matrix = np.full((len(served), len(FEATURES)), np.nan)
    for i, blob in enumerate(served["features"]):
        if blob is not None:
            matrix[i] = np.frombuffer(blob, dtype="<f8")
    return matrix


def redacted_url(url: str) -> str:
    """`url` without its password, for messages."""
    scheme, _, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
