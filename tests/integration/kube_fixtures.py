"""The FAKE API server with the fraud-detector canary already deployed (v1 rolled out, v2 at
20 %) by the real deploy code through the real `kubernetes` client, and a kubeconfig for it."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml
from fraud_control import canary
from fraud_control.isvc import IsvcSpec
from fraud_control.kube_store import KubeStore

from tests.fake_kube import FakeKServeController, FakeKubeApiServer

NS = "kubeflow-user-example-com"
V1 = IsvcSpec(storage_uri="s3://fraud-models/fraud-detector/v1-aa", model_version="v1", contract_id="c1", namespace=NS)
V2 = IsvcSpec(storage_uri="s3://fraud-models/fraud-detector/v2-bb", model_version="v2", contract_id="c1", namespace=NS)


@contextmanager
def canary_cluster(directory: Path) -> Iterator[tuple[FakeKubeApiServer, Path]]:
    """Yields the fake and the path of a kubeconfig (context namespace NS) written in `directory`."""
    with FakeKubeApiServer(FakeKServeController(observe_delay=0.05, ready_delay=0.1)) as fake:
        with fake.custom_objects_api() as api:
            canary.deploy_canary(KubeStore(api, NS), V2, V1, timeout_s=10, poll_s=0.02)
        kubeconfig = directory / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": fake.url}}],
            "users": [{"name": "fake", "user": {}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": NS}}]}))
        yield fake, kubeconfig
