"""manifests/monitoring: promtool checks and tests every rule, the deployed PrometheusRule carries
exactly the groups promtool tested, and the dashboard queries only the metrics the transformer exports.

Regenerate manifests/monitoring/prometheusrule.yaml after editing the plain rule file:
    .venv/bin/python tests/unit/test_monitoring_rules.py --write
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "manifests" / "monitoring"
RULES = MONITORING / "rules" / "fraud-detector.rules.yaml"
PROMETHEUS_RULE = MONITORING / "prometheusrule.yaml"
DASHBOARD = MONITORING / "dashboards" / "fraud-detector.json"
RULE_TESTS = sorted((MONITORING / "tests").glob("*.yaml"))
PROMTOOL = shutil.which("promtool")
KUBECTL = shutil.which("kubectl")

#: What the transformer exports (serving/fraud_serving/metrics.py) plus Prometheus' own `up`.
TRANSFORMER_METRICS = frozenset({
    "fraud_predictions_total",
    "fraud_score_bucket", "fraud_score_sum", "fraud_score_count",
    "fraud_rejected_requests_total",
    "fraud_predictor_errors_total",
    "fraud_predictor_retries_total",
    "fraud_request_seconds_bucket", "fraud_request_seconds_sum", "fraud_request_seconds_count",
})
SCRAPE_METRICS = frozenset({"up"})
#: The label-free signals computed from the prediction store (control/fraud_control/prediction_log/feedback_metrics.py).
FEEDBACK_METRICS = frozenset({
    "fraud_feedback_rows", "fraud_feedback_flag_rate", "fraud_feedback_score_psi", "fraud_feedback_score_ks",
    "fraud_feedback_score_ks_p_value", "fraud_feedback_estimated_precision", "fraud_feedback_estimated_recall",
    "fraud_feedback_paired_estimated_precision", "fraud_feedback_paired_estimated_recall",
    "fraud_feature_drift_psi", "fraud_feature_drift_adjusted_p", "fraud_feature_drifted",
})
#: Grafana's interval variables, replaced by fixed ranges to check the PromQL.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}

needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package `prometheus`; `make test` and CI install it)")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed (needed for `kubectl kustomize`)")


# --- the PrometheusRule is generated from the plain rule file ---------------------------------


class _BlockStyleDumper(yaml.SafeDumper):
    """Multi-line strings (PromQL) as `|` blocks, so the generated file reads like the source."""


_BlockStyleDumper.add_representer(
    str, lambda dumper, value: dumper.represent_scalar(
        "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None))


def render_prometheus_rule() -> str:
    """manifests/monitoring/prometheusrule.yaml: the plain rule file's groups in a PrometheusRule."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "fraud-detector", "labels": {"app.kubernetes.io/name": "fraud-detector"}},
        "spec": {"groups": groups},
    }
    header = ("# GENERATED from rules/fraud-detector.rules.yaml (the file promtool checks and tests); do not edit.\n"
              "# Regenerate: .venv/bin/python tests/unit/test_monitoring_rules.py --write\n"
              "# Prometheus picks PrometheusRules by label (its ruleSelector): add yours in an overlay.\n")
    return header + yaml.dump(rule, Dumper=_BlockStyleDumper, sort_keys=False, width=1_000_000, allow_unicode=True)


# --- PromQL helpers ------------------------------------------------------------------------------

_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
             "group_left", "group_right", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (identifiers that are not functions, keywords or
    labels). Enough for our expressions: strings, label matchers, ranges and grouping clauses are
    removed first."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = re.findall(r"(?<![\w.$])([A-Za-z_:][\w:]*)\b(?!\s*\()", e)
    return {n for n in names if n.lower() not in _KEYWORDS}


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title + refId, PromQL) of every target of every panel, rows' nested panels included."""
    dashboard = json.loads(DASHBOARD.read_text())
    panels = list(dashboard["panels"])
    queries = []
    while panels:
        panel = panels.pop(0)
        panels.extend(panel.get("panels", []))
        for target in panel.get("targets", []):
            queries.append((f"{panel['title']} [{target['refId']}]", target["expr"]))
    return queries


def _run(*args: str, cwd: Path = MONITORING) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


def _rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


# --- promtool --------------------------------------------------------------------------------


@needs_promtool
def test_promtool_check_rules_passes():
    result = _run(PROMTOOL, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


@needs_promtool
def test_promtool_test_rules_passes():
    assert len(RULE_TESTS) >= 5
    result = _run(PROMTOOL, "test", "rules", *(str(p.relative_to(MONITORING)) for p in RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS), result.stdout


def test_every_alert_has_a_case_that_fires_and_one_that_stays_silent():
    alerts = {rule["alert"] for rule in _rules() if "alert" in rule}
    assert len(alerts) >= 5
    fires: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TESTS:
        spec = yaml.safe_load(path.read_text())
        assert spec["rule_files"] == ["../rules/fraud-detector.rules.yaml"], path  # tests the deployed rules
        for case in spec["tests"]:
            for check in case.get("alert_rule_test", []):
                assert check["alertname"] in alerts, f"{path.name}: unknown alert {check['alertname']}"
                (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    assert alerts - fires == set(), "alerts without a firing case"
    assert alerts - silent == set(), "alerts without a silent case"


def test_rules_use_only_exported_metrics_and_their_own_recordings():
    rules = _rules()
    recorded = {rule["record"] for rule in rules if "record" in rule}
    used = set().union(*(metric_names(rule["expr"]) for rule in rules))
    assert used - recorded - TRANSFORMER_METRICS - SCRAPE_METRICS - FEEDBACK_METRICS == set()
    assert {"fraud_request_seconds_count", "fraud_predictor_errors_total", "fraud_predictions_total",
            "fraud_request_seconds_bucket", "up"} <= used


# --- the PrometheusRule that gets deployed ----------------------------------------------------


def test_prometheusrule_groups_equal_the_plain_rule_file():
    deployed = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert deployed["apiVersion"] == "monitoring.coreos.com/v1" and deployed["kind"] == "PrometheusRule"
    assert deployed["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"], (
        "prometheusrule.yaml is stale: run .venv/bin/python tests/unit/test_monitoring_rules.py --write")
    assert PROMETHEUS_RULE.read_text() == render_prometheus_rule()


@needs_kubectl
def test_kustomize_renders_the_tested_rules_and_the_dashboard():
    result = _run(KUBECTL, "kustomize", str(MONITORING), cwd=ROOT)
    assert result.returncode == 0, result.stderr
    docs = {doc["kind"]: doc for doc in yaml.safe_load_all(result.stdout)}
    assert set(docs) == {"PrometheusRule", "ConfigMap"}
    assert docs["PrometheusRule"]["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    config_map = docs["ConfigMap"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["fraud-detector.json"]) == json.loads(DASHBOARD.read_text())


# --- the dashboard -------------------------------------------------------------------------------


def test_metric_name_extraction_sees_what_it_must():
    expr = ('histogram_quantile(0.99, sum by (model_version, le) (rate(fraud_request_seconds_bucket{job="x"}[5m])))'
            ' / ignoring (le) group_left () sum(rate(other_metric[$__rate_interval])) and on () up == 1e3')
    assert metric_names(expr) == {"fraud_request_seconds_bucket", "other_metric", "up"}


def test_dashboard_queries_only_transformer_metrics():
    queries = dashboard_queries()
    assert len(queries) >= 8
    for where, expr in queries:
        names = metric_names(expr)
        assert names, f"{where}: selects no metric"
        assert names <= TRANSFORMER_METRICS | SCRAPE_METRICS, f"{where}: {sorted(names - TRANSFORMER_METRICS)}"
        assert 'job="fraud-detector"' in expr, f"{where}: not restricted to the fraud-detector job"


def test_dashboard_has_the_required_views():
    exprs = [expr for _, expr in dashboard_queries()]

    def some(*parts: str) -> bool:
        return any(all(p in e for p in parts) for e in exprs)

    assert some("fraud_request_seconds_count", "by (model_version)")  # traffic per version
    assert some("histogram_quantile(0.50", "fraud_request_seconds_bucket", "model_version")  # p50
    assert some("histogram_quantile(0.99", "fraud_request_seconds_bucket", "model_version")  # p99
    assert some("fraud_predictor_errors_total", "fraud_request_seconds_count")  # error rate
    assert some("fraud_score_bucket", "model_version")  # score distribution
    assert some('decision="fraud"', "fraud_predictions_total", "by (model_version)")  # flag rate
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and dashboard["uid"]
    assert all(p["datasource"]["uid"] == "${datasource}" for p in dashboard["panels"])


@needs_promtool
def test_dashboard_promql_is_accepted_by_promtool(tmp_path):
    rules = []
    for i, (where, expr) in enumerate(dashboard_queries()):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"{where}: unknown Grafana variable in {expr}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = _run(PROMTOOL, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


# --- the contract with the transformer -------------------------------------------------------


def test_metric_names_are_the_ones_the_transformer_exports():
    from fraud_serving.metrics import TransformerMetrics
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    TransformerMetrics(registry=registry)
    exported: set[str] = set()
    for family in registry.collect():
        if family.type == "counter":
            exported.add(family.name + "_total")
        elif family.type == "histogram":
            exported |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
    assert TRANSFORMER_METRICS <= exported


def test_feedback_metric_names_are_the_ones_the_collector_exports():
    from fraud_canary.feature_drift import FeatureDrift
    from fraud_canary.feedback import FeedbackSignals, VersionSignals
    from fraud_canary.performance import Estimate
    from fraud_control.prediction_log.feedback_metrics import FeedbackCollector
    from prometheus_client import CollectorRegistry

    interval = Estimate(0.5, 0.4, 0.6)
    signals = FeedbackSignals((VersionSignals("v1", 1, 0.0, 0.0, 0.0, 1.0, interval, interval),),
                              (FeatureDrift("V4", 0.0, 0.0, 1.0, 1.0, False),))
    registry = CollectorRegistry()
    registry.register(FeedbackCollector(lambda: signals))
    assert {family.name for family in registry.collect()} == FEEDBACK_METRICS
    used = set().union(*(metric_names(rule["expr"]) for rule in _rules()))
    assert {"fraud_feature_drift_adjusted_p", "fraud_feedback_score_ks", "fraud_feedback_estimated_recall"} <= used


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(f"usage: {sys.argv[0]} --write   (regenerates {PROMETHEUS_RULE.relative_to(ROOT)})")
    PROMETHEUS_RULE.write_text(render_prometheus_rule())
    print(f"wrote {PROMETHEUS_RULE.relative_to(ROOT)}")


def test_the_feedback_alerts_use_the_thresholds_the_report_applies():
    """`fraud_canary.feedback.feedback_alerts` (the demo report's alerts) decides as the rules do."""
    from fraud_canary.feature_drift import DRIFT_ALPHA
    from fraud_canary.feedback import RECALL_FLOOR, SCORE_SHIFT_KS, SCORE_SHIFT_P

    exprs = {rule["alert"]: rule["expr"] for group in yaml.safe_load(RULES.read_text())["groups"]
             for rule in group["rules"] if "alert" in rule}
    assert exprs["FraudFeatureDrift"] == f"fraud_feature_drift_adjusted_p < {DRIFT_ALPHA:g}"
    assert exprs["FraudScoreShift"] == (f"fraud_feedback_score_ks > {SCORE_SHIFT_KS:g} and "
                                        f"fraud_feedback_score_ks_p_value < {SCORE_SHIFT_P:g}")
    assert exprs["FraudEstimatedRecallLow"] == f'fraud_feedback_estimated_recall{{bound="upper"}} < {RECALL_FLOOR:.2f}'
    assert exprs["FraudPairedRecallLow"] == (f'fraud_feedback_paired_estimated_recall{{bound="upper"}} < '
                                             f'{RECALL_FLOOR:.2f}')
