"""replay, canary analyze and the demo report without model servers: bad input exits 2 naming the
value, the evidence policy, metrics round trips, the business-impact arithmetic, the demo report's
HTML, and Prometheus answers (from a loopback HTTP server)."""
from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from fraud import simulate
from fraud.processes import free_port
from fraud_canary.analysis import analyze, metrics_from_replay, supported_recall_drop
from fraud_canary.evidence import plan_recall_evidence
from fraud_canary.metrics import version_metrics
from fraud_canary.policy import CanaryPolicy, OfflineMetrics
from fraud_control.rollout.prometheus import prometheus_queries
from fraud_ops.demo_report import ImpactAssumptions, business_impact
from fraud_ops.replay_load import default_batch

from fraud_rollout.cli import main


@dataclass
class Result:
    returncode: int
    stderr: str


@pytest.fixture
def fraud_rollout(capsys, monkeypatch):
    """`fraud-rollout ARGS` in this process (argparse errors exit 2 like the console script)."""
    def run(*args, cwd) -> Result:
        monkeypatch.chdir(cwd)
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exit_:
            code = exit_.code
        return Result(code, capsys.readouterr().err)
    return run


@pytest.fixture(scope="module")
def holdout_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("holdout") / "holdout.parquet"
    simulate.generate(300, 3).to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("args, message", [
    (["--rate", "-5"], "--rate: '-5' must be a finite number ≥ 0"),
    (["--rate", "fast"], "'fast'"),
    (["--batch", "0"], "'0' must be at least 1"),
    (["--limit", "-1"], "'-1' must be at least 1"),
    (["--batch", "20000"], "--batch 20000"),
])
def test_bad_replay_numbers_are_named(fraud_rollout, tmp_path, holdout_file, args, message):
    result = fraud_rollout("replay", "--url", "http://127.0.0.1:9", "--holdout", str(holdout_file), *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_missing_holdout_and_report_are_named(fraud_rollout, tmp_path):
    result = fraud_rollout("replay", "--url", "http://127.0.0.1:9", "--holdout", str(tmp_path / "nope.parquet"),
                           cwd=tmp_path)
    assert result.returncode == 2 and "--holdout" in result.stderr and "nope.parquet" in result.stderr
    result = fraud_rollout("replay", "--url", "http://127.0.0.1:9", "--report", str(tmp_path / "gone.json"), cwd=tmp_path)
    assert result.returncode == 2 and "--report" in result.stderr and "gone.json" in result.stderr
    result = fraud_rollout("replay", "--url", "http://127.0.0.1:9", cwd=tmp_path)  # no default report here
    assert result.returncode == 2 and "--holdout" in result.stderr


def test_unreachable_url_is_named_before_anything_is_written(fraud_rollout, tmp_path, holdout_file):
    url = f"http://127.0.0.1:{free_port()}"
    result = fraud_rollout("replay", "--url", url, "--holdout", str(holdout_file), "--out", str(tmp_path / "r.json"),
                           cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"--url {url}: cannot reach the endpoint" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "r.json").exists()


def test_analyze_needs_exactly_one_evidence_source_and_names_bad_ones(fraud_rollout, tmp_path):
    result = fraud_rollout("canary", "analyze", cwd=tmp_path)
    assert result.returncode == 2 and "--replay-report" in result.stderr and "--prometheus" in result.stderr
    result = fraud_rollout("canary", "analyze", "--replay-report", str(tmp_path / "none.json"), cwd=tmp_path)
    assert result.returncode == 2 and "none.json" in result.stderr
    (tmp_path / "report.json").write_text(json.dumps({"models": {"v1": {}, "v2": {}}}))
    url = f"http://127.0.0.1:{free_port()}"
    result = fraud_rollout("canary", "analyze", "--prometheus", url, "--report", str(tmp_path / "report.json"),
                           cwd=tmp_path)
    assert result.returncode == 2 and f"--prometheus {url}: cannot reach Prometheus" in result.stderr
    result = fraud_rollout("canary", "analyze", "--prometheus", url, "--detectable-recall-difference", "2", cwd=tmp_path)
    assert result.returncode == 2 and "'2' must be between 0 and 1" in result.stderr


def test_default_batch_keeps_two_thousand_requests():
    assert default_batch(198_210) == 99 and default_batch(11_706) == 5 and default_batch(900) == 1


def test_supported_recall_drop_is_the_smallest_the_frauds_can_detect():
    policy = CanaryPolicy()
    drop = supported_recall_drop(0.36, 72, 252, policy)
    plan = plan_recall_evidence(0.36, drop, fraud_rate=math.nan, canary_share=0.2)
    assert plan.candidate_frauds_needed <= 72 and plan.baseline_frauds_needed <= 252
    smaller = plan_recall_evidence(0.36, round(drop - 0.01, 2), fraud_rate=math.nan, canary_share=0.2)
    assert smaller.candidate_frauds_needed > 72 or smaller.baseline_frauds_needed > 252
    assert supported_recall_drop(0.5, 0, 0, policy) is None
    assert supported_recall_drop(math.nan, 100, 400, policy) is None


def _online(n_base=8_000, n_canary=2_000, seed=1, canary_recall=0.85, base_recall=0.4, fraud_rate=0.02):
    rng = np.random.default_rng(seed)
    versions = np.array(["v1"] * n_base + ["v2"] * n_canary)
    labels = (rng.random(len(versions)) < fraud_rate).astype(int)
    recall = np.where(versions == "v2", canary_recall, base_recall)
    decisions = np.where(labels == 1, rng.random(len(versions)) < recall, rng.random(len(versions)) < 0.002).astype(int)
    return version_metrics(labels, decisions, versions, rng.uniform(5, 20, len(versions)), np.zeros(len(versions), bool))


def _offline(online):
    return {v: OfflineMetrics(m.precision, m.recall, m.flag_rate) for v, m in online.items()}


def test_auto_policy_states_its_detectable_difference_and_what_the_default_says():
    online = _online()
    by_default = analyze(online, _offline(online), baseline_version="v1", canary_version="v2")
    assert by_default["action"] == "hold"  # ≈ 40 canary frauds cannot rule out a 0.10 drop
    assert by_default["policy"]["detectable_recall_difference"] == 0.10
    auto = analyze(online, _offline(online), baseline_version="v1", canary_version="v2", detectable="auto")
    assert auto["policy"]["detectable_recall_difference"] == auto["policy"]["supported_recall_drop"] > 0.10
    assert auto["policy"]["detectable_recall_difference_choice"].startswith("auto")
    assert auto["default_policy"]["action"] == "hold" and auto["default_policy"]["requests_remaining"] > 0
    assert auto["action"] == "promote", auto["reasons"]


def test_replay_report_metrics_round_trip(tmp_path):
    from fraud.files import json_safe

    online = _online()
    text = json.dumps(json_safe({"versions": {v: m.to_dict() for v, m in online.items()}}), allow_nan=False)
    assert metrics_from_replay(json.loads(text)) == online


def test_prometheus_queries_select_the_job_and_window():
    lifetime = prometheus_queries()
    assert lifetime["rows"] == 'sum by (model_version, decision) (fraud_predictions_total{job="fraud-detector"})'
    windowed = prometheus_queries('job="x"', "15m")
    assert 'increase(fraud_predictor_errors_total{job="x"}[15m])' in windowed["failed_requests"]
    assert windowed["p99"].startswith("histogram_quantile(0.99, sum by (model_version, le) (increase(")


def test_business_impact_arithmetic_and_stated_assumptions():
    labels = np.array([1, 1, 0, 0, 0, 1])
    amount = np.array([100.0, 50.0, 10.0, 10.0, 10.0, 30.0])
    flags = {"v1": np.array([1, 0, 1, 0, 0, 0]), "v2": np.array([1, 1, 0, 0, 0, 1])}
    impact = business_impact(labels, amount, flags, assumptions=ImpactAssumptions(review_cost=2.0))
    v1, v2 = impact["if_serving_all"]["v1"], impact["if_serving_all"]["v2"]
    assert (v1["fraud_amount_caught"], v1["fraud_amount_missed"], v1["review_cost"], v1["net_benefit"]) == (100, 80, 4, 96)
    assert (v2["frauds_caught"], v2["false_alarms"], v2["net_benefit"]) == (3, 0, 174)
    assert impact["difference"]["net_benefit"] == 78
    assert any("2 per review" in a for a in impact["assumptions"])


def _demo_report(online):
    """A demo report.json as `fraud-rollout demo` assembles it, from `online` and a made-up holdout."""
    from fraud.files import json_safe
    from fraud_ops.demo_report import online_vs_offline

    curve = [0.0, 0.5, 1.0]
    models = {v: {"version": v, "holdout": {**m.to_dict(), "roc_auc": 0.97, "pr_auc": 0.8}, "threshold": 0.5,
                  "pre_drift": {**m.to_dict(), "roc_auc": 0.96, "pr_auc": 0.7},
                  "curves": {"pr": {"recall": curve, "precision": curve}, "roc": {"fpr": [1e-4, .5, 1], "tpr": curve}}}
              for v, m in online.items()}
    pipeline = {"models": models, "gate": {"decision": "promote"}, "mcnemar_p": 1.2e-9,
                "data": {"windows": {"holdout <i>": {"start": "2023-10-01T00:00", "end": "2023-12-31T23:59",
                                                      "rows": 10_000, "fraud": 200}}}}
    replay = {"versions": json_safe({v: m.to_dict() for v, m in online.items()}), "options": {"batch": 5},
              "skew": {"disagreements": 0, "compared_rows": 10_000,
                       "versions": {"v1": {"rows": 8_000, "disagreements": 0, "max_abs_probability_difference": 1.5e-7}}},
              "timing": {"requests": 2_000, "wall_seconds": 4.25, "rows_per_second": 2352.9},
              "totals": {"rows": 10_000, "failed_rows": 0}, "timeline": [{"start_s": 0, "rows": {"v1": 80, "v2": 20}}]}
    analysis = json_safe(analyze(online, _offline(online), baseline_version="v1", canary_version="v2"))
    vs = online_vs_offline(pipeline, replay, analysis)
    labels, amount = np.array([1, 0, 0]), np.array([100.0, 5.0, 7.0])
    impact = business_impact(labels, amount, {"v1": np.array([0, 0, 1]), "v2": np.array([1, 0, 0])})
    return {"pipeline": pipeline, "replay": replay, "analysis": analysis, "applied": {"detail": "not applied <yet>"},
            "traffic_after": {"summary": "v1 80 %, v2 20 %"}, "online_vs_offline": vs, "business_impact": impact,
            "checks": {"recall_within_interval": {r["version"]: r["within"] for r in vs if r["metric"] == "recall"}},
            "explore": ["fraud-rollout canary status", "curl -s 'http://127.0.0.1:8080' <&>"]}


def test_demo_report_html_shows_every_section_escaped():
    from fraud_ops.demo_report import report_html

    report = _demo_report(_online())
    page = report_html(report, None, None)
    for heading in ("<h2>1. Data and drift</h2>", "<h2>2. Offline evaluation", "<h2>3. The canary online",
                    "<h2>4. Recommendation: HOLD</h2>", "<h2>5. Business impact (estimate)</h2>",
                    "<h2>6. Explore further</h2>", "<h3>Training/serving skew</h3>"):
        assert heading in page, heading
    assert page.count('<img alt="plot" src="data:image/png;base64,') == 3  # PR curve, confusions, traffic + intervals
    assert "<b>Recommendation: HOLD</b>, applied: not applied &lt;yet&gt;." in page
    assert "<tr><td>holdout &lt;i&gt;</td><td>2023-10-01</td><td>2023-12-31</td><td>10,000</td><td>200</td></tr>" in page
    assert "10,000 transactions in 2,000 v2 requests of ≤ 5 rows, 4.2 s (2,353 transactions/s)" in page
    assert "<td>v1</td><td>8,000</td><td>0</td><td>1.50e-07</td>" in page
    assert "<span class='insufficient'>insufficient</span></td><td>hold</td>" in page
    assert "<pre>fraud-rollout canary status\ncurl -s &#39;http://127.0.0.1:8080&#39; &lt;&amp;&gt;</pre>" in page
    v2 = report["business_impact"]["if_serving_all"]["v2"]
    assert f"<tr><td>v2 serving all of the holdout</td><td>1 / 1</td><td>0</td><td>100</td><td>0</td>" \
           f"<td>{v2['review_cost']:,.0f}</td><td>{v2['net_benefit']:,.0f}</td></tr>" in page


def test_the_replay_sends_each_batchs_transaction_ids_and_its_request_id_as_ce_id():
    """A recording v2 server on loopback: every request carries its rows' ids as the BYTES
    `transaction_id` input and `Ce-Id` equal to its v2 id (what the prediction log keys on)."""
    from fraud_ops.replay_load import ReplayOptions, send

    seen: list[tuple[str, dict]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            seen.append((self.headers["ce-id"], body))
            rows = body["inputs"][0]["shape"][0]
            answer = json.dumps({"model_version": "v1", "id": body["id"], "outputs": [
                {"name": "fraud_probability", "data": [0.1] * rows}, {"name": "is_fraud", "data": [0] * rows}]})
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer.encode())

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    ids = [f"tx-3-{n}" for n in range(5)]
    try:
        rows = send(np.ones((5, 30)), ReplayOptions(f"http://127.0.0.1:{server.server_address[1]}", batch=2,
                                                    concurrency=1, progress=False), transaction_ids=ids)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert not rows.error.any()
    assert [ce_id for ce_id, _ in seen] == [body["id"] for _, body in seen] == [f"{rows.id_prefix}{i}" for i in range(3)]
    assert [body["inputs"][1] for _, body in seen] == [
        {"name": "transaction_id", "shape": [len(part)], "datatype": "BYTES", "data": part}
        for part in (ids[0:2], ids[2:4], ids[4:5])]
