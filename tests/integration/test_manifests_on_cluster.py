"""The manifests against the real API server, KServe's CRDs and webhooks: the README's one-time
setup applies as written, the reference InferenceServices (ours and Triton's) pass KServe's
defaulting and validating webhooks and the CRD schema (server-side dry run, strict fields), and the
prediction-log sink's commands create its Secret and objects, whose pod Pod Security "restricted"
admits and whose command line is the one tests/integration/test_prediction_sink_container.py runs."""
from __future__ import annotations

import base64
import copy
import json
import os
import subprocess
from pathlib import Path

import pytest
from fraud_control.inferenceservice import isvc
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.cluster_fixtures import admin_client
from tests.docs import blocks, docs_text
from tests.manifests import PREDICTION_LOG, REPO, STORE_SECRET, STORE_SECRET_KEY, commented_commands, one, render
from tests.pod_command import command_line

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


def test_the_sinks_commands_create_its_secret_and_objects_and_restricted_pod_security_admits_its_pod(
        kube_cluster, namespace, postgres_url):
    """The two commands of manifests/prediction-log's header, as written, with NS and the store URL
    in the environment; then what the API server holds, read back."""
    env = {**os.environ, "NS": namespace.name, "PREDICTION_LOG_STORE_URL": postgres_url,
           "KUBECONFIG": kube_cluster.kubeconfig}
    ran = subprocess.run(["bash", "-euo", "pipefail", "-c", "\n".join(commented_commands(PREDICTION_LOG))],
                         capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == [f"secret/{STORE_SECRET} created", "serviceaccount/fraud-prediction-log created",
                                       "service/fraud-prediction-log created", "deployment.apps/fraud-prediction-log created"]
    api = admin_client(kube_cluster)
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    secret = core.read_namespaced_secret(STORE_SECRET, namespace.name)
    assert {k: base64.b64decode(v).decode() for k, v in secret.data.items()} == {STORE_SECRET_KEY: postgres_url}
    service = core.read_namespaced_service(isvc.PREDICTION_LOG_SERVICE, namespace.name)
    assert isvc.prediction_log_url(namespace.name) == f"http://{service.metadata.name}.{namespace.name}.svc.cluster.local"
    assert [(p.port, p.target_port) for p in service.spec.ports] == [(80, "http")]
    assert service.spec.cluster_ip.startswith("10.96."), "a ClusterIP from the API server's service range"
    deployment = apps.read_namespaced_deployment(isvc.PREDICTION_LOG_SERVICE, namespace.name)
    template = api.sanitize_for_serialization(deployment.spec.template)
    assert service.spec.selector.items() <= template["metadata"]["labels"].items()
    # The stored container (with the API server's defaults) starts the same command line as the
    # rendered one, with the Secret's value where the kubelet expands $(PREDICTION_LOG_STORE_URL).
    (stored,) = template["spec"]["containers"]
    (rendered,) = one(render(PREDICTION_LOG), "Deployment")["spec"]["template"]["spec"]["containers"]
    stored_secrets = {STORE_SECRET: {k: base64.b64decode(v).decode() for k, v in secret.data.items()}}
    assert command_line(stored, stored_secrets) == command_line(rendered, {STORE_SECRET: {STORE_SECRET_KEY: postgres_url}})

    # The pod its ReplicaSet would create, in a namespace that enforces Pod Security "restricted"
    # (no controller manager here makes it): admitted, with no API token mounted.
    core.patch_namespace(namespace.name, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "fraud-prediction-log-0", **template["metadata"]},
           "spec": template["spec"]}
    created = core.create_namespaced_pod(namespace.name, pod)
    assert created.spec.service_account_name == "fraud-prediction-log"
    assert [v.name for v in created.spec.volumes or []] == []
    # Without the pod's seccomp profile (the house container context alone), restricted refuses it.
    unconfined = copy.deepcopy(pod)
    unconfined["metadata"]["name"] = "fraud-prediction-log-1"
    del unconfined["spec"]["securityContext"]["seccompProfile"]
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod(namespace.name, unconfined)
    assert refused.value.status == 403
    message = json.loads(refused.value.body)["message"]
    assert message == ('pods "fraud-prediction-log-1" is forbidden: violates PodSecurity "restricted:latest": seccompProfile '
                       '(pod or container "sink" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")')


def readme_sink_block() -> list[str]:
    """The docs' "The sink on a cluster" block, line by line (the next, `rollout status`, waits for a pod)."""
    section = docs_text().split("### The sink on a cluster", 1)[1]
    return next(b for b in blocks() if b.text in section).text.splitlines()


def test_the_readmes_sink_block_sets_the_built_image_and_a_second_apply_keeps_it(kube_cluster, namespace,
                                                                                 postgres_url, tmp_path):
    """The docs' block, verbatim but for `make images` (the suite built them), in a working dir like a
    checkout: the Deployment runs the image `make images` built, and applying again keeps it
    (`kubectl set image`, the README's way before, was reverted by the next `apply -k`)."""
    import sys

    lines = readme_sink_block()
    assert lines[-1] == 'kubectl apply -k .fraud-rollout/prediction-log -n "$NS"' and lines[1].startswith("make images ")
    (tmp_path / "manifests").symlink_to(REPO / "manifests")
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parents[1])
    env = {**os.environ, "PREDICTION_LOG_STORE_URL": postgres_url, "KUBECONFIG": kube_cluster.kubeconfig}
    script = "\n".join(lines[:1] + lines[2:]).replace("NS=kubeflow-user-example-com", f"NS={namespace.name}", 1)
    apps = client.AppsV1Api(admin_client(kube_cluster))
    built = subprocess.run([sys.executable, "-m", "fraud_devcluster.images", "--print", "components"],
                           capture_output=True, text=True, check=True).stdout.strip()
    for _ in range(2):
        ran = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, env=env,
                             cwd=tmp_path, timeout=120)
        assert ran.returncode == 0, ran.stderr
        deployment = apps.read_namespaced_deployment(isvc.PREDICTION_LOG_SERVICE, namespace.name)
        assert [c.image for c in deployment.spec.template.spec.containers] == [built]
