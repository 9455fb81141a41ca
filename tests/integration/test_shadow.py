"""Shadow (paired) scoring at the transformer, on real KServe servers on loopback (DESIGN 14).

One local canary runtime with `--shadow-percent 100` (v1 rolled out, v2 at 20 %), and transformer
processes of our own in front of its two predictors, each with a routes file (v1 at 100 %, the
other revision at 0 %: `Routes.other` still finds it) so that every answer comes from v1.
"""
from __future__ import annotations

import collections
import json
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from fraud.processes import ServerProcess, free_port
from fraud.routes import Backend, write_routes
from fraud.schema import FEATURES
from fraud_control.local_runtime.runtime import PAIRS_FILE
from fraud_control.local_runtime.servers import start_predictor, start_server
from fraud_ops.replay_load import ReplayOptions
from fraud_ops.replay_pairs import read_pairs, wait_drained
from fraud_ops.replay_run import run_replay
from fraud_ops.replay_source import load_source
from fraud_serving.answer import RETRIED_FROM_HEADER

from tests.integration.serving_fixtures import metric_value, predictor_of, start_local_runtime

pytestmark = pytest.mark.integration

JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def shadow_runtime(tiny_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("shadow_runtime")
    with start_local_runtime(root / "state", tiny_run.v1, tiny_run.v2, 20, root / "logs",
                             shadow_percent=100) as handle:
        yield handle


@pytest.fixture(scope="module")
def holdout(tiny_run) -> np.ndarray:
    return tiny_run.windows["holdout"].loc[:, list(FEATURES)].to_numpy(dtype=np.float64)


def body(rows: np.ndarray, request_id: str) -> bytes:
    return json.dumps({"id": request_id, "inputs": [{"name": "transactions", "shape": list(rows.shape),
                                                      "datatype": "FP64", "data": rows.tolist()}]}).encode()


def post(url: str, content: bytes) -> httpx.Response:
    return httpx.post(url, content=content, headers=JSON, timeout=30)


def metrics(server) -> str:
    return httpx.get(f"{server.url}/metrics", timeout=10).text


@pytest.fixture
def start_v1_transformer(shadow_runtime, tiny_run, tmp_path):
    """Start transformers in front of the runtime's v1 predictor (100 %) and `other_url` (v2, 0 %)."""
    started: list[ServerProcess] = []
    v1 = predictor_of(shadow_runtime, "v1").url

    def start(other_url: str, shadow_percent: float, pairs_log: Path, *extra: str) -> ServerProcess:
        routes = tmp_path / f"routes-{len(started)}.json"
        write_routes(routes, [Backend(v1, "r1", "v1", 100), Backend(other_url, "r2", "v2", 0)], 1)
        server = start_server("transformer", ["--predictor_protocol", "v2", "--contract_dir", str(tiny_run.v1),
                                              "--routes_file", str(routes), "--shadow_percent", f"{shadow_percent:g}",
                                              "--pairs_log", str(pairs_log), *extra], tmp_path / "logs")
        started.append(server)
        return server.wait_ready()

    yield start
    for server in started:
        server.stop()


def test_shadow_does_not_change_the_answer_and_logs_every_request_once(start_v1_transformer, shadow_runtime,
                                                                       holdout, tmp_path):
    v2 = predictor_of(shadow_runtime, "v2").url
    on = start_v1_transformer(v2, 100, tmp_path / "on.jsonl")
    off = start_v1_transformer(v2, 0, tmp_path / "off.jsonl")
    ids = [f"same-{i}" for i in range(40)]
    for i, request_id in enumerate(ids):
        content = body(holdout[i * 5:(i + 1) * 5], request_id)
        with_shadow, without = post(on.infer_url, content), post(off.infer_url, content)
        assert with_shadow.status_code == without.status_code == 200, with_shadow.text
        assert with_shadow.content == without.content  # byte for byte: shadow never changes the answer
    wait_drained(on.url)
    records = read_pairs(tmp_path / "on.jsonl")
    assert sorted(r["id"] for r in records) == sorted(ids)
    assert {(r["served_version"], r["shadow_version"]) for r in records} == {("v1", "v2")}
    assert all(len(r["served_is_fraud"]) == len(r["shadow_is_fraud"]) == 5 for r in records)
    assert not (tmp_path / "off.jsonl").exists()  # shadow off: no pair log at all
    text = metrics(on)
    # shadow scores never count as predictions: 40 requests of 5 rows, all answered by v1
    assert metric_value(text, "fraud_predictions_total", model_version="v2", decision="legit") == 0
    assert sum(metric_value(text, "fraud_predictions_total", model_version="v1", decision=d)
               for d in ("fraud", "legit")) == 200


def test_canary_runtime_at_100_percent_pairs_every_request_and_the_table_equals_the_log(shadow_runtime, holdout):
    ids = [f"canary-{i}" for i in range(200)]
    versions = collections.Counter()
    for i, request_id in enumerate(ids):
        response = post(shadow_runtime.infer_url, body(holdout[i % 100:i % 100 + 2], request_id))
        assert response.status_code == 200, response.text
        versions[response.json()["model_version"]] += 1
    assert set(versions) == {"v1", "v2"}
    wait_drained(shadow_runtime.url)
    records = [r for r in read_pairs(shadow_runtime.state_dir / PAIRS_FILE) if r["id"] in set(ids)]
    assert collections.Counter(r["id"] for r in records) == collections.Counter(ids)  # each once
    assert collections.Counter(r["served_version"] for r in records) == versions
    assert all({r["served_version"], r["shadow_version"]} == {"v1", "v2"} for r in records)
    table = collections.Counter()
    for r in read_pairs(shadow_runtime.state_dir / PAIRS_FILE):  # the counters cover every request so far
        for served, shadow in zip(r["served_is_fraud"], r["shadow_is_fraud"]):
            table[(r["served_version"], r["shadow_version"], "fraud" if served else "legit",
                   "fraud" if shadow else "legit")] += 1
    text = httpx.get(f"{shadow_runtime.url}/metrics", timeout=10).text
    for (served_version, shadow_version, served, shadow), rows in table.items():
        cell = {"served_version": served_version, "shadow_version": shadow_version, "served_decision": served,
                "shadow_decision": shadow}
        assert metric_value(text, "fraud_shadow_rows_total", **cell) == rows
        # each version's scores of the cell's rows: its fraud_shadow_score series counts every one
        assert [metric_value(text, "fraud_shadow_score_count", scored_version=v, **cell)
                for v in (served_version, shadow_version)] == [rows, rows]
    assert sum(table.values()) == sum(
        metric_value(text, "fraud_shadow_rows_total", served_version=a, shadow_version=b, served_decision=c,
                     shadow_decision=d)
        for a, b in (("v1", "v2"), ("v2", "v1")) for c in ("fraud", "legit") for d in ("fraud", "legit"))


def test_a_dead_other_revision_costs_the_client_nothing_and_is_counted(start_v1_transformer, holdout, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    server = start_v1_transformer(dead, 100, tmp_path / "dead.jsonl")
    for i in range(25):
        response = post(server.infer_url, body(holdout[i:i + 1], f"dead-{i}"))
        assert response.status_code == 200, response.text
        assert response.json()["model_version"] == "v1"
    wait_drained(server.url)
    text = metrics(server)
    assert metric_value(text, "fraud_shadow_errors_total", model_version="v2") == 25
    assert metric_value(text, "fraud_predictor_errors_total", model_version="v1") == 0
    assert read_pairs(tmp_path / "dead.jsonl") == []


def test_one_shadow_in_flight_under_concurrency_drops_and_counts_the_rest(start_v1_transformer, shadow_runtime,
                                                                          holdout, tmp_path):
    v2 = predictor_of(shadow_runtime, "v2").url
    server = start_v1_transformer(v2, 100, tmp_path / "busy.jsonl", "--shadow_max_in_flight", "1")
    requests = 96
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda i: post(server.infer_url, body(holdout[i:i + 1], f"busy-{i}")).status_code,
                                 range(requests)))
    assert statuses == [200] * requests
    wait_drained(server.url)
    dropped = metric_value(metrics(server), "fraud_shadow_dropped_total", reason="busy")
    logged = len(read_pairs(tmp_path / "busy.jsonl"))
    assert dropped > 0
    assert logged + dropped == requests  # every request is either paired or counted as dropped


def test_a_replay_with_shadow_on_reports_paired_outcomes(shadow_runtime, tiny_run, tmp_path):
    holdout_path = tmp_path / "holdout.parquet"
    tiny_run.windows["holdout"].to_parquet(holdout_path)
    source = load_source(holdout_path, None)
    result = run_replay(source, ReplayOptions(url=shadow_runtime.url, limit=2_000, batch=20, progress=False),
                        tmp_path / "replay.json", skew=False, pairs_log=shadow_runtime.state_dir / PAIRS_FILE)
    paired = result.report["paired"]
    assert result.report["totals"]["failed_rows"] == 0
    assert paired["baseline_version"] == "v1" and paired["canary_version"] == "v2"  # v1 carries 80 %
    assert paired["pairs"] == 2_000  # every row of every request, paired at 100 %
    assert paired["frauds"]["pairs"] == int(source.frame["Class"].iloc[:2_000].sum())
    assert paired["decisions"]["method"] == "mcnemar-exact"


def test_cluster_wiring_learns_which_tag_host_serves_the_other_version(shadow_runtime, tiny_run, holdout, tmp_path):
    """One --predictor_host (Knative's split behind it) plus --shadow_hosts, as in a cluster: the first
    tag asked serves the answered version (no pair, counted), after that only the other tag is asked."""
    v1, v2 = predictor_of(shadow_runtime, "v1").url, predictor_of(shadow_runtime, "v2").url
    pairs_log = tmp_path / "tags.jsonl"
    server = start_server("transformer", ["--predictor_protocol", "v2", "--contract_dir", str(tiny_run.v1),
                                          "--predictor_host", v1.removeprefix("http://"), "--shadow_percent", "100",
                                          "--shadow_hosts", f"prev={v1},latest={v2}", "--pairs_log", str(pairs_log)],
                          tmp_path / "logs")
    try:
        server.wait_ready()
        for i in range(30):
            assert post(server.infer_url, body(holdout[i:i + 1], f"tag-{i}")).status_code == 200
            wait_drained(server.url)  # one at a time: each shadow score learns before the next is sent
        text = metrics(server)
    finally:
        server.stop()
    records = read_pairs(pairs_log)
    assert metric_value(text, "fraud_shadow_dropped_total", reason="same_version") == 1  # prev, asked first
    assert [r["id"] for r in records] == [f"tag-{i}" for i in range(1, 30)]
    assert {(r["served_version"], r["shadow_version"]) for r in records} == {("v1", "v2")}


def test_bench_shadow_comparison_runs_and_reports_its_targets(start_v1_transformer, shadow_runtime, tmp_path):
    """A smoke run with tiny numbers (the real run is `fraud-rollout bench serving`)."""
    from fraud_ops.bench_serving import BenchReport, shadow_comparison
    from fraud_serving.shadow import DEFAULT_SHADOW_PERCENT

    v2 = predictor_of(shadow_runtime, "v2").url
    servers = {percent: start_v1_transformer(v2, percent, tmp_path / f"bench-{percent:g}.jsonl")
               for percent in (0.0, DEFAULT_SHADOW_PERCENT)}
    report = BenchReport()
    shadow_comparison(report, servers, requests=40, duration=1, connections=4, workdir=tmp_path, rounds=2)
    default = f"{DEFAULT_SHADOW_PERCENT:g}"
    assert report.value(f"shadow {default} %: errors (c=4)") == 0
    assert report.value("shadow 0 %: via transformer req/s (c=4)") > 0
    assert report.value("shadow 0 %: transformer CPU per request (median)") > 0
    names = [m.name for m in report.measurements if m.target]
    assert f"shadow {default} % vs off: p50 increase (median of 2 rounds)" in names
    assert f"shadow {default} % vs off: req/s decrease (c=4, median of 2 rounds)" in names


def test_cluster_wiring_retries_on_prev_when_the_canary_dies_after_pairing_both(shadow_runtime, tiny_run, holdout,
                                                                                tmp_path):
    """As in a cluster: one --predictor_host (here the canary v2 itself) and the tag hosts. While both
    live, v2's answers are paired with prev (v1); once v2 is killed, every call through the one host
    fails, of a version the transformer cannot know, and is retried on prev: every client gets v1's 200."""
    v1 = predictor_of(shadow_runtime, "v1").url
    canary = start_predictor(tiny_run.v2, tmp_path / "logs")  # our own process: this test kills it
    pairs_log = tmp_path / "tags.jsonl"
    server = None
    try:
        canary.wait_ready()
        server = start_server("transformer", ["--predictor_protocol", "v2", "--contract_dir", str(tiny_run.v1),
                                              "--predictor_host", canary.url.removeprefix("http://"),
                                              "--shadow_percent", "100", "--shadow_hosts",
                                              f"latest={canary.url},prev={v1}", "--pairs_log", str(pairs_log)],
                              tmp_path / "logs").wait_ready()
        for i in range(5):
            response = post(server.infer_url, body(holdout[i:i + 1], f"alive-{i}"))
            assert (response.status_code, response.json()["model_version"]) == (200, "v2")
            wait_drained(server.url)  # one at a time: each shadow score learns before the next is sent
        os.kill(canary.process.pid, signal.SIGKILL)
        canary.process.wait(timeout=30)
        answers = [post(server.infer_url, body(holdout[i:i + 1], f"dead-{i}")) for i in range(5, 15)]
        wait_drained(server.url)
        text = metrics(server)
    finally:
        if server is not None:
            server.stop()
        canary.stop()
    assert [(a.status_code, a.json()["model_version"], a.headers.get(RETRIED_FROM_HEADER)) for a in answers] == [
        (200, "v1", "unknown")] * 10
    assert metric_value(text, "fraud_predictor_retries_total", model_version="unknown") == 10
    assert metric_value(text, "fraud_predictor_errors_total", model_version="unknown") == 10
    assert metric_value(text, "fraud_predictor_errors_total", model_version="v1") == 0
    # the first shadow score asked latest (v2, the served version: no pair); then prev, every time
    assert metric_value(text, "fraud_shadow_dropped_total", reason="same_version") == 1
    records = read_pairs(pairs_log)
    assert [(r["id"], r["served_version"], r["shadow_version"]) for r in records] == [
        (f"alive-{i}", "v2", "v1") for i in range(1, 5)]
    # after the kill v1's answers are shadowed on latest, which is gone: counted, never seen by a client
    assert metric_value(text, "fraud_shadow_errors_total", model_version="v2") == 10
