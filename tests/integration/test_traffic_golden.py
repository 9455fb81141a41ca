"""Golden traffic semantics: the rollout sequence of `traffic_sequence` against KServe's real
controller gives the recorded traffic and rolled-out fields (tests/golden/traffic-sequence.json),
and the local runtime's `canary status` gives the same. Where they differ, the controller is right.

Re-record after a KServe upgrade: FRAUD_ROLLOUT_RECORD_GOLDEN=1 pytest tests/integration/test_traffic_golden.py
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from fraud_control.inferenceservice.isvc import IsvcSpec
from fraud_control.inferenceservice.kube_store import KubeStore
from fraud_control.inferenceservice.local_store import LocalStore

from tests.cluster_fixtures import model_spec
from tests.integration.traffic_sequence import Models, run_sequence

pytestmark = pytest.mark.integration

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "traffic-sequence.json"
CONTRACT = "3f6c2a1b9d0e4f57"


def test_kserve_controller_gives_the_recorded_sequence(namespace, admin_api, s3_settings):
    def spec(version: str, stored: bool = True) -> IsvcSpec:
        return model_spec(namespace.name, version, s3_settings, contract_id=CONTRACT, stored=stored)

    models = Models(spec("v1"), spec("v2"), spec("v3"), spec("v4"), broken=spec("v9", stored=False))
    record = run_sequence(KubeStore(admin_api, namespace.name), models, timeout_s=60, poll_s=0.05,
                          never_ready_timeout_s=2)
    if os.environ.get("FRAUD_ROLLOUT_RECORD_GOLDEN"):
        GOLDEN.write_text(json.dumps(record, indent=2) + "\n")
    assert record == json.loads(GOLDEN.read_text())


def test_local_runtime_gives_the_same_sequence(tmp_path, tiny_run):
    def spec(version: str, source: Path | None) -> IsvcSpec:
        root = tmp_path / "models" / version
        if source is not None:
            shutil.copytree(source, root)
        return IsvcSpec(storage_uri=str(root), model_version=version, contract_id=tiny_run.contract.id)

    models = Models(spec("v1", tiny_run.v1), spec("v2", tiny_run.v2), spec("v3", tiny_run.v1),
                    spec("v4", tiny_run.v2), broken=spec("v9", None))
    record = run_sequence(LocalStore(tmp_path / "state"), models, timeout_s=5, poll_s=0.05, never_ready_timeout_s=1)
    assert record == json.loads(GOLDEN.read_text())
