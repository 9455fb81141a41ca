"""The fraud-detector canary already deployed on the REAL control plane (v1 rolled out, v2 at
20 %) by the deploy code through the real `kubernetes` client, as the pipeline's ServiceAccount,
in a namespace of its own, with a kubeconfig whose context namespace is that one."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from fraud_control.canary import operations as canary
from fraud_control.inferenceservice.kube_store import KubeStore

from tests.cluster_fixtures import Namespace, model_spec

CONTRACT = "c1"


@dataclass(frozen=True)
class CanaryCluster:
    namespace: Namespace
    kubeconfig: Path

    @property
    def ns(self) -> str:
        return self.namespace.name


def kubeconfig_for(namespace: Namespace, path: Path, token: str | None = None) -> Path:
    """The cluster's admin kubeconfig with `namespace` as its context's namespace (and a bearer
    token instead of the admin certificate when given)."""
    config = yaml.safe_load(Path(namespace.kube.kubeconfig).read_text())
    config["contexts"][0]["context"]["namespace"] = namespace.name
    if token:
        config["users"][0]["user"] = {"token": token}
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def canary_cluster(namespace, s3_settings, tmp_path) -> CanaryCluster:
    namespace.apply_pipeline_rbac()
    v1, v2 = (model_spec(namespace.name, v, s3_settings, contract_id=CONTRACT) for v in ("v1", "v2"))
    canary.deploy_canary(KubeStore(namespace.token_api(), namespace.name), v2, v1, timeout_s=60, poll_s=0.05)
    return CanaryCluster(namespace, kubeconfig_for(namespace, tmp_path / "kubeconfig"))
