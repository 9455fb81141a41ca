"""The real control plane (fraud_devcluster: kube-apiserver, etcd, KServe's controller and
webhooks, MinIO, the Knative stand-in) for the cluster tests: one per session, one namespace per
test (nothing garbage-collects here, so tests never share or delete a namespace)."""
from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from fraud.artifact_store import S3Settings, s3_client
from fraud_control.inferenceservice.isvc import IsvcSpec
from fraud_devcluster import cluster, servers
from fraud_devcluster.cluster import Cluster
from kubernetes import client, config

ROOT = Path(__file__).resolve().parents[1]
PIPELINE_RBAC = ROOT / "manifests" / "base" / "pipeline-rbac.yaml"
PIPELINE_ACCOUNT = "fraud-rollout-pipeline"


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory) -> Iterator[Cluster]:
    directory = tmp_path_factory.mktemp("cluster")
    servers.tie_to_this_process()  # a killed test run takes its cluster with it
    running = cluster.up(directory)
    yield running
    cluster.down(directory)


def admin_client(kube: Cluster) -> client.ApiClient:
    return config.new_client_from_config(config_file=kube.kubeconfig)


@dataclass(frozen=True)
class Namespace:
    name: str
    kube: Cluster

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["kubectl", "--kubeconfig", self.kube.kubeconfig, "-n", self.name, *args], input=stdin,
                              capture_output=True, text=True, timeout=60, check=check)

    def writes(self) -> list[dict]:
        """Writes to InferenceServices here by anyone but KServe's controller (audit log)."""
        return [w for w in self.kube.writes(self.name) if not w["userAgent"].startswith("kserve-manager/")]

    def apply_pipeline_rbac(self, drop_verb: str | None = None) -> None:
        """manifests/base/pipeline-rbac.yaml in this namespace (as kustomize sets namespaces), with
        one verb removed from its Role when `drop_verb`."""
        documents = [d for d in yaml.safe_load_all(PIPELINE_RBAC.read_text()) if d]
        for document in documents:
            document["metadata"]["namespace"] = self.name
            for subject in document.get("subjects", []):
                subject["namespace"] = self.name
            for rule in document.get("rules", []):
                rule["verbs"] = [v for v in rule["verbs"] if v != drop_verb]
            if "rules" in document:  # a rule left without verbs is invalid (the events rule has only create)
                document["rules"] = [rule for rule in document["rules"] if rule["verbs"]]
        self.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(documents))

    def token(self, account: str = PIPELINE_ACCOUNT) -> str:
        """A real token of the ServiceAccount `account` here (TokenRequest, as kubectl create token)."""
        return client.CoreV1Api(admin_client(self.kube)).create_namespaced_service_account_token(
            account, self.name, {"spec": {"expirationSeconds": 3600}}).status.token

    def token_api(self, account: str = PIPELINE_ACCOUNT) -> client.CustomObjectsApi:
        """A CustomObjectsApi that authenticates with a real token of `account`."""
        token = self.token(account)
        configuration = client.Configuration(host=self.kube.url)
        configuration.api_key = {"authorization": f"Bearer {token}"}
        configuration.ssl_ca_cert = str(Path(self.kube.directory) / "pki" / "ca.crt")
        return client.CustomObjectsApi(client.ApiClient(configuration))


@pytest.fixture
def namespace(kube_cluster) -> Namespace:
    name = f"t-{secrets.token_hex(4)}"
    client.CoreV1Api(admin_client(kube_cluster)).create_namespace({"metadata": {"name": name}})
    return Namespace(name, kube_cluster)


@pytest.fixture
def admin_api(kube_cluster) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(admin_client(kube_cluster))


@pytest.fixture(scope="session")
def s3_settings(kube_cluster) -> S3Settings:
    return S3Settings.from_env(kube_cluster.environment())


def store_objects_at(uri: str, settings: S3Settings) -> str:
    """Put one object under `s3://bucket/prefix`, so a revision with that storage URI turns Ready."""
    import io

    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    s3 = s3_client(settings)
    if not s3.bucket_exists(bucket):
        s3.make_bucket(bucket)
    s3.put_object(bucket, f"{prefix}/metadata.json", io.BytesIO(b"{}"), 2)
    return uri


def model_spec(namespace: str, version: str, s3_settings: S3Settings, *, contract_id: str, stored: bool = True,
               **fields) -> IsvcSpec:
    """The IsvcSpec of model `version` at `s3://fraud-models/<namespace>/<version>`; with `stored`,
    an object is put there first, so its revision turns Ready (without, it never does)."""
    uri = f"s3://fraud-models/{namespace}/{version}"
    if stored:
        store_objects_at(uri, s3_settings)
    return IsvcSpec(**{"storage_uri": uri, "model_version": version, "contract_id": contract_id,
                       "namespace": namespace, **fields})
