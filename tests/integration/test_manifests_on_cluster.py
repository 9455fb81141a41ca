"""The manifests against the real API server, KServe's CRDs and webhooks: the README's one-time
setup applies as written, and the reference InferenceServices (ours and Triton's) pass KServe's
defaulting and validating webhooks and the CRD schema (server-side dry run, strict fields)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from kubernetes import client

from tests.cluster_fixtures import admin_client

pytestmark = pytest.mark.integration

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
PROFILE = "kubeflow-user-example-com"  # the kubeflow overlay's namespace


def kubectl(kube, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["kubectl", "--kubeconfig", kube.kubeconfig, *args], input=stdin, capture_output=True,
                          text=True, timeout=120)


def test_the_one_time_setup_applies_and_creates_no_inferenceservice(kube_cluster):
    core = client.CoreV1Api(admin_client(kube_cluster))
    if PROFILE not in {n.metadata.name for n in core.list_namespace().items}:
        core.create_namespace({"metadata": {"name": PROFILE}})
    applied = kubectl(kube_cluster, "apply", "-k", str(MANIFESTS / "overlays" / "kubeflow"))
    assert applied.returncode == 0, applied.stderr
    applied_objects = sorted(line.split()[0] for line in applied.stdout.splitlines())
    assert applied_objects == ["role.rbac.authorization.k8s.io/fraud-rollout-inferenceservices",
                               "rolebinding.rbac.authorization.k8s.io/fraud-rollout-inferenceservices",
                               "serviceaccount/fraud-detector-serving", "serviceaccount/fraud-rollout-pipeline"]
    listed = kubectl(kube_cluster, "get", "isvc", "-n", PROFILE, "-o", "name")
    assert (listed.returncode, listed.stdout) == (0, "")


@pytest.mark.parametrize("kustomization", ["inferenceservice", "overlays/triton"])
def test_the_reference_inferenceservices_pass_kserves_webhooks(kube_cluster, namespace, kustomization):
    rendered = kubectl(kube_cluster, "kustomize", str(MANIFESTS / kustomization))
    assert rendered.returncode == 0, rendered.stderr
    dry = kubectl(kube_cluster, "apply", "--dry-run=server", "--validate=strict", "-n", namespace.name, "-f", "-",
                  stdin=rendered.stdout.replace("namespace: fraud-rollout", f"namespace: {namespace.name}"))
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.strip() == "inferenceservice.serving.kserve.io/fraud-detector created (server dry run)"
