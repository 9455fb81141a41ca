"""Step records outside the rollout's state: JSON lines, and tags on the candidate's MLflow version
(a real registry on a temporary SQLite file)."""
from __future__ import annotations

import json

from fraud import registry
from fraud_control.rollout.record import JsonLinesLog, MlflowStepTags, step_line

from tests.mlflow_registry import registry_with_v1_and_v2

STEP = {"percent": 20, "decision": "advance", "next_percent": 50, "window": {"requests": 1200, "seconds": 60.0},
        "reasons": ["all 9 fast checks passed at 20 %: advance to 50 %"], "evidence": {"versions": {}}}


def test_step_line_and_json_lines(tmp_path):
    assert step_line(STEP) == "advance at 20 %, 1200 requests in 60 s: all 9 fast checks passed at 20 %: advance to 50 %"
    log = JsonLinesLog(tmp_path / "steps.jsonl")
    log.record(STEP)
    log.record({**STEP, "decision": "promote", "percent": 50})
    assert [json.loads(line)["decision"] for line in (tmp_path / "steps.jsonl").read_text().splitlines()] == [
        "advance", "promote"]


def test_decisions_tag_the_candidates_registered_version(tmp_path):
    from mlflow import MlflowClient

    uri = registry_with_v1_and_v2(tmp_path)
    client = MlflowClient(uri)
    tags = MlflowStepTags(uri, {"modelVersion": "v2", "storageUri": "s3://fraud-models/ns/v2"})
    tags.record(STEP)
    tags.record({**STEP, "percent": 50, "decision": "promote"})
    assert {k: v for k, v in client.get_model_version(registry.REGISTERED_MODEL, "2").tags.items()
            if k.startswith("rollout.")} == {"rollout.step.20": "advance", "rollout.step.50": "promote",
                                             "rollout.result": "promote"}
    assert not [k for k in client.get_model_version(registry.REGISTERED_MODEL, "1").tags if k.startswith("rollout.")]
