"""`fraud-rollout canary analyze --apply --target kserve` against the real control plane: the
recommendation is carried out with the same patches as `canary promote|rollback`, and the MLflow
aliases follow (the registry named by the pipeline report)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from fraud import registry
from fraud.files import json_safe
from fraud_canary.metrics import version_metrics

from fraud_rollout.cli import main
from tests.integration.test_canary_cli_kserve import cluster, tracking_uri  # noqa: F401

pytestmark = pytest.mark.integration


def cluster_subject(kubeconfig: str, ns: str) -> dict:
    """What `fraud-rollout replay --target kserve` records: the canary the evidence is about."""
    import argparse

    from fraud.settings import Settings

    from fraud_rollout.targets import current_subject

    return current_subject(argparse.Namespace(target="kserve", namespace=ns, name="fraud-detector",
                                              kubeconfig=kubeconfig, context=None, settings=Settings()))


def write_reports(tmp_path, tracking_uri: str, canary_errors: int = 0, subject: dict | None = None) -> tuple[str, str]:
    """A replay report (v1 80 %, v2 20 %, v2 catching more fraud) and the pipeline report whose
    offline metrics those online numbers agree with."""
    rng = np.random.default_rng(5)
    versions = np.array(["v1"] * 16_000 + ["v2"] * 4_000)
    labels = (rng.random(versions.size) < 0.03).astype(int)
    recall = np.where(versions == "v2", 0.85, 0.40)
    decisions = np.where(labels == 1, rng.random(versions.size) < recall, rng.random(versions.size) < 0.002)
    errors = np.zeros(versions.size, dtype=bool)
    errors[np.flatnonzero(versions == "v2")[:canary_errors]] = True
    online = version_metrics(labels, decisions.astype(int), versions, rng.uniform(5, 30, versions.size), errors)
    replay = {"kind": "fraud-rollout replay", "source": {"pipeline_report": None},
              "versions": {v: m.to_dict() for v, m in online.items()}, "subject": subject}
    models = {v: {"version": v, "holdout": {"precision": m.precision, "recall": m.recall, "tp": m.confusion.tp,
                                             "fp": m.confusion.fp, "fn": m.confusion.fn, "tn": m.confusion.tn}}
              for v, m in online.items()}
    (tmp_path / "replay.json").write_text(json.dumps(json_safe(replay)))
    (tmp_path / "report.json").write_text(json.dumps({"models": models, "mlflow": {"tracking_uri": tracking_uri}}))
    return str(tmp_path / "replay.json"), str(tmp_path / "report.json")


def analyze(kubeconfig: str, ns: str, replay: str, report: str) -> int:
    return main(["canary", "analyze", "--target", "kserve", "--namespace", ns, "--kubeconfig", kubeconfig,
                 "--replay-report", replay, "--report", report, "--detectable-recall-difference", "auto", "--apply"])


def traffic(ns: str, kubeconfig: str, capsys) -> list[tuple[str, int]]:
    capsys.readouterr()
    assert main(["canary", "status", "--target", "kserve", "--namespace", ns, "--kubeconfig", kubeconfig, "--json"]) == 0
    return [(t["revisionName"][-5:], t["percent"]) for t in json.loads(capsys.readouterr().out)["status"]["traffic"]]


def test_promote_is_applied_to_the_cluster_and_the_registry(cluster, tracking_uri, tmp_path, capsys):
    deployed, kubeconfig = cluster
    replay, report = write_reports(tmp_path, tracking_uri, subject=cluster_subject(kubeconfig, deployed.ns))
    assert analyze(kubeconfig, deployed.ns, replay, report) == 0
    out = capsys.readouterr().out
    assert "RECOMMENDATION: PROMOTE" in out and "MLflow: champion = version 2, challenger cleared" in out
    assert registry.aliases(tracking_uri) == {"champion": 2}
    assert traffic(deployed.ns, kubeconfig, capsys) == [("00002", 100)]


def test_a_failing_canary_is_rolled_back(cluster, tracking_uri, tmp_path, capsys):
    deployed, kubeconfig = cluster
    replay, report = write_reports(tmp_path, tracking_uri, canary_errors=200, subject=cluster_subject(kubeconfig, deployed.ns))  # 5 % of the canary's rows
    assert analyze(kubeconfig, deployed.ns, replay, report) == 0
    out = capsys.readouterr().out
    assert "RECOMMENDATION: ROLLBACK" in out and "FAIL canary.error_rate" in out
    assert "MLflow: challenger cleared, champion stays 1" in out
    assert registry.aliases(tracking_uri) == {"champion": 1}
    assert dict(traffic(deployed.ns, kubeconfig, capsys))["00001"] == 100


def test_stale_evidence_is_refused(cluster, tracking_uri, tmp_path, capsys):
    deployed, kubeconfig = cluster
    seen = cluster_subject(kubeconfig, deployed.ns)
    assert main(["canary", "rollback", "--target", "kserve", "--namespace", deployed.ns, "--kubeconfig", kubeconfig]) == 0
    replay, report = write_reports(tmp_path, tracking_uri, subject=seen)
    capsys.readouterr()
    assert analyze(kubeconfig, deployed.ns, replay, report) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fraud-rollout canary analyze --apply: refused: the evidence was gathered")
    assert err[0].endswith("replay again against the current canary")
    assert dict(traffic(deployed.ns, kubeconfig, capsys))["00001"] == 100  # nothing was applied
