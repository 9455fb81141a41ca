"""The prediction store on a real SQLite file and a real PostgreSQL server: the same assertions on both."""
from __future__ import annotations

import contextlib
import sqlite3
from datetime import timedelta

import numpy as np
import pandas as pd
import psycopg
import pytest
from fraud.inference_log import REQUEST_EVENT, log_event
from fraud.labels import check_labels
from fraud_control.prediction_log.store import StoreError, feature_matrix, open_store

from tests.prediction_log import T0, features, request_body, served_pair, shadow_pair

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "log" / "predictions.db")  # the directory does not exist yet
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def store(store_url):
    opened = open_store(store_url)
    yield opened
    opened.close()


def refuse_event(url: str, event_id: str) -> None:
    """A trigger that makes the database fail on rows of `event_id`: a real failure mid-transaction."""
    if url.startswith("postgresql://"):
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute("CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'refused row'; "
                               "END $$ LANGUAGE plpgsql")
            connection.execute(f"CREATE TRIGGER refuse BEFORE INSERT ON predictions FOR EACH ROW "
                               f"WHEN (NEW.event_id = '{event_id}') EXECUTE FUNCTION refuse()")
    else:
        with contextlib.closing(sqlite3.connect(url, isolation_level=None)) as connection:
            connection.execute(f"CREATE TRIGGER refuse BEFORE INSERT ON predictions WHEN NEW.event_id = '{event_id}' "
                               "BEGIN SELECT RAISE(ABORT, 'refused row'); END")


def labels(rows: dict[str, int], at=T0 + timedelta(days=40)) -> pd.DataFrame:
    return check_labels(pd.DataFrame({"transaction_id": list(rows), "label": list(rows.values()),
                                      "label_time": [at.isoformat()] * len(rows)}))


def test_a_duplicate_event_is_skipped_and_changes_nothing(store):
    request, response = served_pair("e1", 3, transaction_prefix="t")
    first = store.record([request, response])
    assert (first.recorded, first.accepted, first.duplicates, first.rows) == ((True, True), 2, 0, 6)
    before = store.served()
    # the logger sends it again, and once more within one group commit
    again = store.record([response, request, request])
    assert (again.recorded, again.rows) == ((False, False, False), 0)
    pd.testing.assert_frame_equal(store.served(), before)
    assert store.counts() == {"logged": 1, "answered": 1, "rows": 3, "labelled": 0, "paired": 0, "per_version": {"v2": 3}}


def test_a_response_before_its_request_joins_into_one_row_per_request_row(store):
    request, response = served_pair("e1", 2, version="2", transaction_prefix="t")  # Triton's "2" is "v2"
    assert store.record([response]).rows == 2
    half = store.served()
    assert half["model_version"].tolist() == ["v2", "v2"] and half["features"].isna().all()
    assert half["transaction_id"].isna().all()
    store.record([request])
    served = store.served()
    assert served["event_id"].tolist() == ["e1", "e1"] and served["row"].tolist() == [0, 1]
    assert served["transaction_id"].tolist() == ["t-0", "t-1"]
    assert served["score"].tolist() == pytest.approx(response.body.fraud_probability.tolist())
    assert served["decision"].tolist() == response.body.is_fraud.tolist()
    assert (served["requested_at"] == pd.Timestamp(T0)).all()
    assert (served["answered_at"] == pd.Timestamp(T0 + timedelta(milliseconds=3))).all()
    np.testing.assert_array_equal(feature_matrix(served), features(2))
    assert store.counts() == {"logged": 1, "answered": 1, "rows": 2, "labelled": 0, "paired": 0, "per_version": {"v2": 2}}


def test_a_one_row_request_without_transaction_ids_is_known_by_its_request_id(store):
    store.record([log_event("e1", REQUEST_EVENT, T0, request_body(features(1), request_id="tx-42", columns=True))])
    served = store.served()
    assert served["transaction_id"].tolist() == ["tx-42"]
    assert served["model_version"].isna().all() and served["score"].isna().all()
    np.testing.assert_array_equal(feature_matrix(served), features(1))
    assert store.counts() == {"logged": 1, "answered": 0, "rows": 1, "labelled": 0, "paired": 0, "per_version": {}}


def test_labels_join_by_transaction_id_and_a_reingest_overwrites(store):
    store.record([*served_pair("e1", 2, transaction_prefix="a"), *served_pair("e2", 1, version="v1",
                                                                           transaction_prefix="b")])
    result = store.ingest_labels(labels({"a-0": 1, "b-0": 0, "never-served": 1}))
    assert (result.joined, result.unknown, result.total) == (2, 1, 3)
    served = store.served().set_index("transaction_id")
    assert served["label"].fillna(-1).to_dict() == {"a-0": 1, "a-1": -1, "b-0": 0}
    assert served.loc["a-0", "label_time"] == pd.Timestamp(T0 + timedelta(days=40))
    # a corrected chargeback: the later file wins
    corrected = store.ingest_labels(labels({"a-0": 0}, at=T0 + timedelta(days=60)))
    assert (corrected.joined, corrected.unknown, corrected.total) == (1, 0, 1)
    served = store.served().set_index("transaction_id")
    assert served.loc["a-0", "label"] == 0
    assert served.loc["a-0", "label_time"] == pd.Timestamp(T0 + timedelta(days=60))
    assert store.counts() == {"logged": 2, "answered": 2, "rows": 3, "labelled": 2, "paired": 0,
                              "per_version": {"v1": 1, "v2": 2}}


def test_served_since_and_retention_follow_the_prediction_time(store):
    old, recent = T0 - timedelta(days=120), T0
    store.record([*served_pair("old", 2, at=old, transaction_prefix="o"),
                  *served_pair("new", 1, at=recent, transaction_prefix="n")])
    store.ingest_labels(labels({"o-0": 1}, at=old + timedelta(days=5)))
    store.ingest_labels(labels({"n-0": 0}, at=recent + timedelta(days=5)))
    assert store.served(since=T0 - timedelta(days=1))["event_id"].tolist() == ["new"]
    assert store.served()["event_id"].tolist() == ["old", "old", "new"]
    assert store.delete_older_than(T0 - timedelta(days=90)) == 2
    assert store.served()["transaction_id"].tolist() == ["n-0"]
    assert store.counts() == {"logged": 1, "answered": 1, "rows": 1, "labelled": 1, "paired": 0, "per_version": {"v2": 1}}
    # the old events are gone with their rows: the store keeps nothing older than the cutoff
    assert store.ingest_labels(labels({"o-0": 1})).joined == 0


def test_a_reopened_store_keeps_its_rows(store_url):
    with open_store(store_url) as store:
        store.record(served_pair("e1", 2))
    with open_store(store_url) as reopened:  # the schema is created idempotently
        assert reopened.counts() == {"logged": 1, "answered": 1, "rows": 2, "labelled": 0, "paired": 0, "per_version": {"v2": 2}}
        assert reopened.record(served_pair("e1", 2)).duplicates == 2


def test_a_failed_group_commit_writes_nothing_and_the_store_carries_on(store, store_url):
    store.record(served_pair("before", 1))
    refuse_event(store_url, "poison")
    with pytest.raises(StoreError, match="refused row"):
        store.record([*served_pair("e1", 2), *served_pair("poison", 1), *served_pair("e2", 1)])
    assert store.counts() == {"logged": 1, "answered": 1, "rows": 1, "labelled": 0, "paired": 0, "per_version": {"v2": 1}}
    assert store.record([*served_pair("e1", 2), *served_pair("e2", 1)]).accepted == 4  # nothing half-written
    assert store.served()["event_id"].tolist() == ["before", "e1", "e1", "e2"]


def test_a_closed_store_refuses_calls(store):
    store.close()
    with pytest.raises(StoreError, match="is closed"):
        store.record(served_pair("e1", 1))


@pytest.mark.parametrize("url, message", [
    ("mysql://h/db", "store URL 'mysql://h/db': use a file path, sqlite:///PATH or postgresql://USER@HOST:PORT/DB"),
    ("", "store URL '': use a file path, sqlite:///PATH or postgresql://USER@HOST:PORT/DB"),
])
def test_an_unknown_store_url_is_refused_naming_it(url, message):
    with pytest.raises(ValueError) as error:
        open_store(url)
    assert str(error.value) == message


def test_an_unwritable_or_unreachable_store_is_a_store_error(tmp_path, postgres_server):
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError, match="cannot create its directory"):
        open_store(str(tmp_path / "file" / "predictions.db"))
    with pytest.raises(StoreError, match="is a directory"):
        open_store(str(tmp_path))
    with pytest.raises(StoreError) as error:
        open_store(f"postgresql://postgres:secret@127.0.0.1:{postgres_server.port}/no_such_database")
    assert "no_such_database" in str(error.value) and "secret" not in str(error.value)


def test_shadow_pairs_are_kept_once_and_joined_with_late_labels(store):
    pair = shadow_pair("p1", [1, 0, 0], [1, 1, 0], ["t-0", "t-1", None])
    assert store.record([pair, pair]).recorded == (True, False)
    assert store.record([pair]).duplicates == 1
    store.ingest_labels(labels({"t-0": 1, "t-1": 0}))
    pairs = store.pairs()
    assert pairs["transaction_id"].tolist() == ["t-0", "t-1", None]
    assert (pairs["served_version"].unique().tolist(), pairs["shadow_version"].unique().tolist()) == (["v1"], ["v2"])
    assert (pairs["served_decision"].tolist(), pairs["shadow_decision"].tolist()) == ([1, 0, 0], [1, 1, 0])
    assert (pairs["served_score"].tolist(), pairs["shadow_score"].tolist()) == ([0.9, 0.1, 0.1], [0.9, 0.9, 0.1])
    assert pairs["label"].tolist()[:2] == [1, 0] and pd.isna(pairs["label"].iloc[2])
    assert store.counts()["paired"] == 3 and store.counts()["rows"] == 0  # pairs are not predictions
    assert len(store.pairs(since=T0 + timedelta(seconds=1))) == 0
    assert store.delete_older_than(T0 + timedelta(days=1)) == 0 and store.counts()["paired"] == 0


def test_two_writers_with_the_same_events_in_opposite_orders_never_deadlock(postgres_url):
    """Two sinks during a rolling update get the logger's retries of the same events: rows are
    written in key order, so their transactions lock in one order (in arrival order two such
    writers deadlocked in 81 of 200 rounds)."""
    import threading

    stores = [open_store(postgres_url), open_store(postgres_url)]
    failures: list[BaseException] = []

    def write(store, batch) -> None:
        try:
            store.record(batch)
        except StoreError as error:
            failures.append(error)

    try:
        for round_ in range(40):
            batch = [event for i in range(32) for event in served_pair(f"r{round_}-d{i}", 2)]
            threads = [threading.Thread(target=write, args=(stores[0], batch)),
                       threading.Thread(target=write, args=(stores[1], batch[::-1]))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        assert failures == []
        assert stores[0].counts()["logged"] == 40 * 32
    finally:
        for store in stores:
            store.close()


def test_the_window_of_served_rows_is_read_by_an_index(store_url):
    """Every window (the sink's /metrics: the last hour) filters on the prediction's time,
    COALESCE(requested_at, answered_at); without an index on that expression a window scanned the
    whole table (`fraud-rollout bench sink`: seconds per 10M stored rows). A store opened once has it,
    and the planner uses it."""
    with open_store(store_url):
        pass
    query = ("SELECT p.event_id FROM predictions p WHERE COALESCE(p.requested_at, p.answered_at) >= {}")
    if store_url.startswith("postgresql"):
        with psycopg.connect(store_url) as connection:
            definition = connection.execute(
                "SELECT indexdef FROM pg_indexes WHERE indexname = 'predictions_time'").fetchone()
            assert definition is not None and "COALESCE(requested_at, answered_at)" in definition[0]
            connection.execute("SET enable_seqscan = off")  # an empty table: ask whether the index can serve
            plan = "\n".join(row[0] for row in connection.execute(
                "EXPLAIN " + query.format("now()")).fetchall())
        assert "predictions_time" in plan, plan
    else:
        with sqlite3.connect(store_url) as connection:
            plan = connection.execute("EXPLAIN QUERY PLAN " + query.format("?"), ("2026-01-01",)).fetchall()
        assert any("USING INDEX predictions_time" in row[-1] or "USING COVERING INDEX predictions_time" in row[-1]
                   for row in plan), plan
