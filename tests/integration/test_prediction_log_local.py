"""The local runtime's prediction log end to end: `serve --prediction-log` starts the sink, the
transformer posts KServe's CloudEvents and its shadow pairs to it, every answered request is in the
store exactly once with the version that answered, every shadow pair once, and late labels join
both on the transaction ids the client sent."""
import subprocess
from collections import Counter

import httpx
import numpy as np
import pandas as pd
import pytest
from fraud.protocol import request_body
from fraud.schema import FEATURES
from fraud_control.local_runtime.runtime import PAIRS_FILE, read_runtime
from fraud_control.prediction_log.store import open_store
from fraud_control.rollout.store_evidence import store_evidence
from fraud_ops.replay_pairs import paired_from_log, read_pairs, wait_drained, wait_logged
from fraud_ops.serving_session import FRAUD_ROLLOUT, LocalServing
from fraud_serving.client import infer_url
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration

REQUESTS, ROWS = 40, 5


def feedback_gauges(sink: str, name: str) -> dict[str, float]:
    """One feedback gauge per model version, as the sink's /metrics reports it."""
    families = text_string_to_metric_families(httpx.get(f"{sink}/metrics").text)
    return {s.labels["model_version"]: s.value for f in families for s in f.samples if s.name == name}


def test_every_answered_request_is_logged_once_and_labels_join(tiny_run, tmp_path):
    holdout = tiny_run.windows["holdout"].iloc[: REQUESTS * ROWS]
    raw = holdout.loc[:, list(FEATURES)].to_numpy(dtype=np.float64)
    ids = holdout["transaction_id"].astype(str).tolist()
    store_path = tmp_path / "prediction-log.sqlite"
    answered: Counter = Counter()
    with LocalServing(tmp_path / "state", baseline=tiny_run.v1, candidate=tiny_run.v2, canary_percent=50,
                      log_dir=tmp_path / "logs", shadow_percent=100, prediction_log=str(store_path)) as serving:
        with httpx.Client(timeout=30) as client:
            for i in range(REQUESTS):
                rows = slice(i * ROWS, (i + 1) * ROWS)
                response = client.post(infer_url(serving.url), json=request_body(raw[rows], f"req-{i}", ids[rows]),
                                       headers={"Ce-Id": f"req-{i}"})
                assert response.status_code == 200, response.text
                answered[response.json()["model_version"]] += ROWS
        wait_drained(serving.url)  # every shadow pair is in the pair log and queued for the sink
        wait_logged(serving.url)
        # the sink reports the feedback signals of both models the runtime serves, over what it stored
        sink = read_runtime(tmp_path / "state")["predictionLog"]["sink"]
        feedback_rows = feedback_gauges(sink, "fraud_feedback_rows")
        flag_rates = feedback_gauges(sink, "fraud_feedback_flag_rate")
    assert set(answered) == {"v1", "v2"}  # a 50 % split over 40 requests reaches both
    assert feedback_rows == dict(answered)
    assert 0 <= flag_rates["v2"] <= 1

    with open_store(str(store_path)) as store:
        counts = store.counts()
        assert (counts["logged"], counts["answered"], counts["rows"]) == (REQUESTS, REQUESTS, REQUESTS * ROWS)
        assert counts["per_version"] == dict(answered)
        assert counts["paired"] == REQUESTS * ROWS  # every request shadowed on the other version
        served = store.served()
    assert sorted(served["transaction_id"]) == sorted(ids)
    assert served["event_id"].nunique() == REQUESTS and served["label"].isna().all()

    labels = pd.DataFrame({"transaction_id": ids, "label": holdout["Class"].to_numpy(),
                           "label_time": pd.Timestamp.now(tz="UTC")})
    labels_file = tmp_path / "labels.csv"
    labels.to_csv(labels_file, index=False)
    result = subprocess.run([*FRAUD_ROLLOUT, "labels", "ingest", str(labels_file), "--store", str(store_path)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"labels: {REQUESTS * ROWS} read, {REQUESTS * ROWS} joined to served predictions, 0 unknown"
    with open_store(str(store_path)) as store:
        served = store.served()
    by_id = dict(zip(holdout["transaction_id"].astype(str), holdout["Class"].astype(int)))
    assert [int(x) for x in served["label"]] == [by_id[t] for t in served["transaction_id"]]

    # the store's pairs are the pair log's, now with the late labels: the same paired evidence
    by_request = {f"req-{i}": holdout["Class"].to_numpy()[i * ROWS:(i + 1) * ROWS] for i in range(REQUESTS)}
    expected = paired_from_log(read_pairs(tmp_path / "state" / PAIRS_FILE), by_request,
                               baseline_version="v1", canary_version="v2")
    evidence = store_evidence(str(store_path), ("v1", "v2"))
    assert evidence.paired == expected and evidence.feedback["paired"] == REQUESTS * ROWS


def test_a_new_canary_joins_the_sinks_feedback_signals_and_nothing_is_lost(tiny_run, tmp_path):
    """`serve` of v1 alone, then `deploy` of the canary v2 from another process: the runtime starts
    the sink again with both models, and every request answered before and after the restart is stored."""
    holdout = tiny_run.windows["holdout"].iloc[: 2 * REQUESTS * ROWS]
    raw = holdout.loc[:, list(FEATURES)].to_numpy(dtype=np.float64)
    ids = holdout["transaction_id"].astype(str).tolist()
    store_path, state = tmp_path / "prediction-log.sqlite", tmp_path / "state"
    answered: Counter = Counter()

    def send(client: httpx.Client, first: int) -> None:
        for i in range(first, first + REQUESTS):
            rows = slice(i * ROWS, (i + 1) * ROWS)
            response = client.post(infer_url(serving.url), json=request_body(raw[rows], f"req-{i}", ids[rows]))
            assert response.status_code == 200, response.text
            answered[response.json()["model_version"]] += ROWS

    with LocalServing(state, baseline=tiny_run.v1, log_dir=tmp_path / "logs", shadow_percent=0,
                      prediction_log=str(store_path)) as serving, httpx.Client(timeout=30) as client:
        send(client, 0)
        wait_logged(serving.url)
        sink = read_runtime(state)["predictionLog"]["sink"]
        assert feedback_gauges(sink, "fraud_feedback_rows") == {"v1": REQUESTS * ROWS}
        deployed = subprocess.run([*FRAUD_ROLLOUT, "deploy", "--target", "local", "--state-dir", str(state),
                                   "--baseline", str(tiny_run.v1), "--candidate", str(tiny_run.v2),
                                   "--canary-percent", "50"], capture_output=True, text=True, check=False)
        assert deployed.returncode == 0, deployed.stderr
        serving.wait_applied()
        send(client, REQUESTS)
        wait_logged(serving.url)
        assert read_runtime(state)["predictionLog"]["sink"] == sink  # the same port: the logger's URL
        assert feedback_gauges(sink, "fraud_feedback_rows") == dict(answered)
    assert answered["v2"] > 0
    with open_store(str(store_path)) as store:
        assert store.counts()["per_version"] == dict(answered)


def test_bench_logging_comparison_reports_that_nothing_was_lost(tiny_run, tmp_path):
    """A smoke run with tiny numbers (the real run is `fraud-rollout bench serving`): the logging
    transformer posts to a real sink, and once each run's backlog drained, every request wrk had
    answered has its two events acknowledged."""
    from fraud.processes import stop_all
    from fraud_control.local_runtime.servers import start_predictor, start_sink, start_transformer
    from fraud_ops.bench_serving import BenchReport, logging_comparison

    logs = tmp_path / "logs"
    predictor = start_predictor(tiny_run.v1, logs)
    sink = start_sink(str(tmp_path / "bench.sqlite"), logs)
    servers = [predictor, sink]
    try:
        transformers = {"off": start_transformer(tiny_run.v1, logs, predictor_url=predictor.url, shadow_percent=0,
                                                 label="off"),
                        "on": start_transformer(tiny_run.v1, logs, predictor_url=predictor.url, shadow_percent=0,
                                                logger_url=sink.url, label="on")}
        servers += list(transformers.values())
        for server in servers:
            server.wait_ready()
        report = BenchReport()
        logging_comparison(report, transformers, requests=40, duration=1, connections=4, workdir=tmp_path,
                           sink="test sink", rounds=2)
    finally:
        stop_all(servers)
    assert report.value("logging on: errors (c=4)") == 0
    drained = next(m for m in report.measurements
                   if m.name == "logging on: events acknowledged per request answered, once drained")
    assert drained.ok and drained.value >= 2.0, drained
    assert report.value("logging on: backlog drained after a run (max)") >= 0
    names = [m.name for m in report.measurements if m.target]
    assert "logging on vs off: p50 increase (median of 2 rounds)" in names
