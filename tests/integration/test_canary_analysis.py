"""Online validation on real servers: replay through the local canary runtime, a real Prometheus
scraping the transformer, and killing the canary predictor mid-replay.

One `fraud-rollout serve` (v1 rolled out, v2 at 20 %) on the tiny models serves the module; the kill
test, which rolls its canary back and clears its MLflow challenger, has a runtime and a pipeline
report (registry) of its own, so that the module's tests pass in any order.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from fraud import registry
from fraud.export import SignatureScorer
from fraud.schema import FEATURES, DataError
from fraud_control.local_runtime.runtime import read_runtime
from fraud_control.rollout.prometheus import metrics_from_prometheus
from fraud_ops.local_canary import local_subject
from fraud_ops.replay_load import ReplayOptions
from fraud_ops.replay_report import read_replay
from fraud_ops.replay_run import run_replay
from fraud_ops.replay_source import ReplaySource
from mlflow import MlflowClient

from tests.integration.serving_fixtures import canary_runtime, fresh_canary_runtime, metric_value  # noqa: F401
from tests.prometheus_server import prometheus_api, prometheus_scraping

pytestmark = pytest.mark.integration
DEADLINE_SECONDS = 120


def _counts(labels: np.ndarray, flagged: np.ndarray) -> dict:
    fraud, flagged = labels.astype(bool), flagged.astype(bool)
    tp, fp = int((fraud & flagged).sum()), int((~fraud & flagged).sum())
    fn, tn = int((fraud & ~flagged).sum()), int((~fraud & ~flagged).sum())
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "precision": tp / (tp + fp) if tp + fp else None,
            "recall": tp / (tp + fn) if tp + fn else None}


def write_pipeline_report(tiny_run, root: Path) -> Path:
    """A pipeline report for the tiny models in `root`: their holdout metrics (their own
    signatures), the holdout as Parquet, and an MLflow registry where v1 is champion and v2
    challenger."""
    holdout = tiny_run.windows["holdout"].reset_index(drop=True)
    holdout.to_parquet(root / "holdout.parquet", index=False)
    scaled = tiny_run.contract.transform(holdout.loc[:, list(FEATURES)].to_numpy(dtype=np.float64))
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri)
    client.create_registered_model(registry.REGISTERED_MODEL)
    models = {}
    for version, artifact in (("v1", tiny_run.v1), ("v2", tiny_run.v2)):
        decided = SignatureScorer(artifact)(scaled)["is_fraud"]
        registered = client.create_model_version(registry.REGISTERED_MODEL, source=str(artifact)).version
        models[version] = {"version": version, "artifact": str(artifact), "registered_version": int(registered),
                           "holdout": _counts(holdout["Class"].to_numpy(), decided)}
    registry.set_alias(tracking_uri, registry.CHAMPION, 1)
    registry.set_alias(tracking_uri, registry.CHALLENGER, 2)
    report = {"models": models, "artifacts": {"holdout": str(root / "holdout.parquet")},
              "mlflow": {"tracking_uri": tracking_uri}, "data": {"n_transactions": 40_000}}
    (root / "report.json").write_text(json.dumps(report))
    return root / "report.json"


@pytest.fixture(scope="module")
def pipeline_report(tiny_run, tmp_path_factory) -> Path:
    """`write_pipeline_report` once for the module (no test may change its registry)."""
    return write_pipeline_report(tiny_run, tmp_path_factory.mktemp("tiny_pipeline"))


@pytest.fixture(scope="module")
def source(tiny_run, pipeline_report) -> ReplaySource:
    from fraud_ops.replay_source import load_source

    return load_source(None, pipeline_report)


def transformer_metrics(runtime) -> str:
    with urllib.request.urlopen(f"{runtime.url}/metrics", timeout=10) as response:
        return response.read().decode()


def _no_nan(text: str) -> dict:
    def refuse(constant):
        raise AssertionError(f"{constant} in a JSON report")
    return json.loads(text, parse_constant=refuse)


# --- replay ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def replayed(canary_runtime, source, tmp_path_factory):
    out = tmp_path_factory.mktemp("replay") / "replay.json"
    before = transformer_metrics(canary_runtime)
    result = run_replay(source, ReplayOptions(url=canary_runtime.url, progress=False), out)
    return result, before, transformer_metrics(canary_runtime)


def test_replay_counts_add_up_share_is_twenty_percent_and_no_skew(replayed, source):
    result, _, _ = replayed
    report = _no_nan(result.report_path.read_text())
    rows = len(source.frame)
    versions = report["versions"]
    assert set(versions) == {"v1", "v2"}, versions
    assert sum(v["requests"] for v in versions.values()) == rows
    assert report["totals"]["failed_rows"] == 0 and report["errors"]["requests_by_status"] == {}
    for m in versions.values():  # confusion counts cover exactly the version's answered rows
        assert m["tp"] + m["fp"] + m["fn"] + m["tn"] == m["requests"] and m["tp"] + m["fp"] == m["flagged"]
    assert sum(m["tp"] + m["fn"] for m in versions.values()) == int(source.frame["Class"].sum())
    assert report["timing"]["requests"] >= 2_000  # default batch: enough requests to measure the split
    assert 0.16 <= versions["v2"]["traffic_share"] <= 0.24, versions["v2"]["traffic_share"]
    skew = report["skew"]
    assert skew["compared_rows"] == rows and skew["disagreements"] == 0, skew
    assert set(skew["versions"]) == {"v1", "v2"} and skew["versions_without_artifact"] == []
    assert sum(sum(p["rows"].values()) for p in report["timeline"]) == rows
    _, frame = read_replay(result.report_path)
    assert len(frame) == rows and set(frame["model_version"]) == {"v1", "v2"}


def test_transformer_counters_equal_the_replay(replayed):
    result, before, after = replayed
    for version, m in result.report["versions"].items():
        for decision, expected in (("fraud", m["flagged"]), ("legit", m["requests"] - m["flagged"])):
            delta = (metric_value(after, "fraud_predictions_total", model_version=version, decision=decision)
                     - metric_value(before, "fraud_predictions_total", model_version=version, decision=decision))
            assert delta == expected, (version, decision)


def test_analyze_cli_reads_the_replay_report(replayed, pipeline_report, canary_runtime, tmp_path):
    result, _, _ = replayed
    analysis_path = tmp_path / "analysis.json"
    done = canary_runtime.cli("canary", "analyze", "--replay-report", str(result.report_path),
                              "--report", str(pipeline_report), "--analysis-out", str(analysis_path))
    assert done.returncode == 0, done.stderr
    analysis = _no_nan(analysis_path.read_text())
    assert f"RECOMMENDATION: {analysis['action'].upper()}" in done.stdout
    assert len(analysis["reasons"]) == len(analysis["checks"]) >= 14
    for reason in analysis["reasons"]:
        assert reason in done.stdout
    assert analysis["online"]["v2"]["requests"] == result.report["versions"]["v2"]["requests"]
    # without --apply nothing moves
    assert canary_runtime.service.get()["spec"]["predictor"]["canaryTrafficPercent"] == 20


# --- a real Prometheus ------------------------------------------------------------------------


def wait_for(predicate, what: str, timeout: float = DEADLINE_SECONDS):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)  # between polls of the Prometheus API


@pytest.fixture(scope="module")
def prometheus(canary_runtime, tmp_path_factory):
    with prometheus_scraping(canary_runtime.url, tmp_path_factory.mktemp("prometheus")) as url:
        yield url


def test_prometheus_per_version_queries_return_the_replayed_counts(prometheus, canary_runtime, source, tmp_path):
    def per_version() -> dict[str, float]:
        return {s["metric"]["model_version"]: float(s["value"][1]) for s in
                prometheus_api(prometheus, 'sum by (model_version) (fraud_predictions_total{job="fraud-detector"})')}

    # what Prometheus has before: the transformer's current counters, once scraped
    current = transformer_metrics(canary_runtime)
    expected_before = {v: metric_value(current, "fraud_predictions_total", model_version=v, decision="fraud")
                       + metric_value(current, "fraud_predictions_total", model_version=v, decision="legit")
                       for v in ("v1", "v2")}
    wait_for(lambda: all(per_version().get(v, 0.0) == n for v, n in expected_before.items()),
             f"Prometheus to show the counters {expected_before}")

    limit = 3_000
    result = run_replay(source, ReplayOptions(url=canary_runtime.url, limit=limit, batch=1, concurrency=8,
                                              progress=False), tmp_path / "replay.json", skew=False)
    replayed = {v: m["requests"] for v, m in result.report["versions"].items()}
    assert sum(replayed.values()) == limit and set(replayed) == {"v1", "v2"}
    expected = {v: expected_before[v] + replayed[v] for v in replayed}
    wait_for(lambda: per_version() == expected, f"Prometheus to show {expected}")

    flagged = {s["metric"]["model_version"]: float(s["value"][1]) for s in prometheus_api(
        prometheus, 'sum by (model_version) (increase(fraud_predictions_total{job="fraud-detector",decision="fraud"}[1h]))')}
    assert set(flagged) <= {"v1", "v2"}
    # `canary analyze --prometheus` builds its per-version metrics from the same series
    online, queries = metrics_from_prometheus(prometheus)
    assert {v: m.answered for v, m in online.items()} == {v: int(n) for v, n in expected.items()}
    assert all(m.errors == 0 and m.confusion is None for m in online.values())
    assert 0 < online["v2"].latency_p99_ms < 10_000 and 'job="fraud-detector"' in queries["rows"]


def test_a_failed_query_and_a_server_that_is_not_prometheus_are_named(prometheus, canary_runtime):
    # Prometheus's own refusal of a query (a window it cannot parse), with its words
    with pytest.raises(DataError) as refused:
        metrics_from_prometheus(prometheus, window="5x")
    assert str(refused.value).startswith(
        f"--prometheus {prometheus}: query 'sum by (model_version, decision) "
        f"(increase(fraud_predictions_total{{job=\"fraud-detector\"}}[5x]))' failed: ")
    assert "parse error" in str(refused.value)
    # a live server that is not Prometheus (the transformer) answers the API path with its own error
    with pytest.raises(DataError) as wrong:
        metrics_from_prometheus(canary_runtime.url)
    assert str(wrong.value).startswith(f"--prometheus {canary_runtime.url}: query 'sum by (model_version, decision) "
                                       f"(fraud_predictions_total{{job=\"fraud-detector\"}})' failed: ")


def test_analyze_cli_from_prometheus_never_promotes_without_labels(prometheus, canary_runtime, pipeline_report):
    done = canary_runtime.cli("canary", "analyze", "--prometheus", prometheus, "--report", str(pipeline_report))
    assert done.returncode == 0, done.stderr
    assert "RECOMMENDATION: HOLD" in done.stdout
    assert "INSUFFICIENT canary.recall_vs_offline: labels unknown" in done.stdout


# --- kill the canary ---------------------------------------------------------------------------


def canary_predictor_pid(runtime) -> int:
    """The pid of the predictor process serving the canary revision (a child of `serve`)."""
    status = runtime.service.get()["status"]["components"]["predictor"]
    port = read_runtime(runtime.state_dir)["predictors"][status["latestReadyRevision"]].rsplit(":", 1)[1]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent == runtime.process.pid and b"predictor" in argv and port.encode() in argv:
            return int(entry.name)
    raise LookupError(f"no predictor on port {port} under serve (pid {runtime.process.pid})")


def test_killing_the_canary_predictor_fails_no_client_request_and_its_retries_roll_it_back(
        fresh_canary_runtime, tiny_run, tmp_path):
    from fraud_ops.replay_source import load_source

    # its own runtime and registry: the kill, the rollback and the cleared challenger stay with this test
    canary_runtime = fresh_canary_runtime
    (tmp_path / "pipeline").mkdir()
    pipeline_report = write_pipeline_report(tiny_run, tmp_path / "pipeline")
    source = load_source(None, pipeline_report)
    pid = canary_predictor_pid(canary_runtime)
    before = transformer_metrics(canary_runtime)
    limit, kill_at = 4_000, 800
    passed_kill_point = threading.Event()
    outcome: dict = {}
    seen = local_subject(canary_runtime.service.state_dir)  # what the replay's evidence is about

    def progress(done_rows: int) -> None:
        if done_rows >= kill_at:
            passed_kill_point.set()

    def replay() -> None:
        try:
            # paced, so that most of the replay happens after the kill
            outcome["result"] = run_replay(source, ReplayOptions(url=canary_runtime.url, limit=limit, batch=2,
                                                                 rate=600, concurrency=4, progress=False),
                                           tmp_path / "replay.json", skew=False, on_progress=progress, subject=seen)
        except BaseException as error:  # reported by the main thread
            outcome["error"] = error
            passed_kill_point.set()

    thread = threading.Thread(target=replay)
    thread.start()
    assert passed_kill_point.wait(DEADLINE_SECONDS)
    os.kill(pid, signal.SIGKILL)
    thread.join(DEADLINE_SECONDS)
    assert not thread.is_alive() and "error" not in outcome, outcome.get("error")
    report = outcome["result"].report
    after = transformer_metrics(canary_runtime)

    def delta(metric: str, version: str) -> float:
        return (metric_value(after, metric, model_version=version)
                - metric_value(before, metric, model_version=version))

    # the transformer retried every call the dying canary failed on v1: no client saw a failure
    assert report["totals"]["failed_requests"] == 0, report["errors"]
    retried = report["totals"]["retried_requests"]
    assert retried > 0
    assert delta("fraud_predictor_errors_total", "v1") == 0
    assert delta("fraud_predictor_retries_total", "v2") == delta("fraud_predictor_errors_total", "v2") == retried
    # the replay still counts those requests against the version they were routed to
    assert report["versions"]["v2"]["errors"] == 2 * retried  # batch=2: rows
    assert report["versions"]["v1"]["errors"] == 0 and report["totals"]["unattributed_rows"] == 0

    done = canary_runtime.cli("canary", "analyze", "--replay-report", str(tmp_path / "replay.json"),
                              "--report", str(pipeline_report), "--apply")
    assert done.returncode == 0, done.stderr
    assert "RECOMMENDATION: ROLLBACK" in done.stdout
    assert "FAIL canary.error_rate" in done.stdout
    assert "MLflow: challenger cleared, champion stays 1" in done.stdout
    tracking_uri = json.loads(pipeline_report.read_text())["mlflow"]["tracking_uri"]
    assert registry.aliases(tracking_uri) == {"champion": 1}
    manifest = canary_runtime.service.get()
    assert manifest["spec"]["predictor"]["canaryTrafficPercent"] == 0
    revisions = canary_runtime.service.revisions()
    assert {revisions[e["revisionName"]]["modelVersion"]: e["percent"]
            for e in manifest["status"]["components"]["predictor"]["traffic"] if e["percent"]} == {"v1": 100}
    canary_runtime.wait_applied()
    probe = run_replay(source, ReplayOptions(url=canary_runtime.url, limit=300, batch=1, progress=False),
                       tmp_path / "probe.json", skew=False)
    assert {v: m["requests"] for v, m in probe.report["versions"].items()} == {"v1": 300}
