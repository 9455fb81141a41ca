"""Issue 19 on the real control plane: `deploy --target kserve` into a namespace that does not exist,
and with its API server unreachable after the upload (MinIO answers, the kubeconfig's server does
not), each exit 2 with one line naming the value and what to do."""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_cli_errors import exported_layout
from tests.unit.test_cli_errors_exits import one_error_line
from tests.unit.test_cli_errors_kube import closed_port_kubeconfig

pytestmark = pytest.mark.integration


def deploy(kube, kubeconfig: Path, namespace: str, cwd: Path) -> subprocess.CompletedProcess:
    """`fraud-rollout deploy --target kserve` with the cluster's MinIO settings (S3_*, AWS_*) only."""
    exported_layout(cwd / "v1")
    exported_layout(cwd / "v2", 2)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "KUBECONFIG"))},
           **{k: v for k, v in kube.environment().items() if k != "KUBECONFIG"}}
    return subprocess.run([sys.executable, "-m", "fraud_rollout", "deploy", "--target", "kserve", "--namespace",
                           namespace, "--kubeconfig", str(kubeconfig), "--baseline", "v1", "--candidate", "v2",
                           "--timeout", "10"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_deploy_into_a_namespace_that_does_not_exist_names_it(kube_cluster, tmp_path):
    absent = f"absent-{secrets.token_hex(4)}"
    result = deploy(kube_cluster, Path(kube_cluster.kubeconfig), absent, tmp_path)
    assert one_error_line(result) == (
        f"fraud-rollout deploy: error: --namespace {absent}: no such namespace on {kube_cluster.url}; create it "
        f"(`kubectl create namespace {absent}`) or pass the namespace the InferenceService belongs in")
    assert result.stdout == ""


def test_deploy_with_the_api_server_unreachable_names_it(kube_cluster, tmp_path):
    kubeconfig, server = closed_port_kubeconfig(tmp_path / "kubeconfig")
    line = one_error_line(deploy(kube_cluster, kubeconfig, "fraud", tmp_path))
    assert line == (f"fraud-rollout deploy: error: --target kserve: cannot reach the Kubernetes API server at {server} "
                    "([Errno 111] Connection refused); check the kubeconfig's context (--context), that the VPN is "
                    "up, and that `kubectl cluster-info` answers")
