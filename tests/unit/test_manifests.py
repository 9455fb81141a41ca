"""The kustomize manifests render: the one-time setup (base, the kubeflow overlay) holds the
namespace-scoped accounts and RBAC and no InferenceService; the reference InferenceService (and its
Triton overlay) holds exactly what the deploy step creates; the prediction-log sink's is the Service
KServe's logger posts to, a non-root Deployment that reads its store URL from a Secret, and the
command that creates that Secret."""
from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from fraud_control.inferenceservice import isvc
from fraud_control.inferenceservice.kserve_canary import BASE_MANIFEST_SPEC, manifest_yaml
from fraud_control.prediction_log.sink import STORE_ENV
from fraud_devcluster.images import REPO, copied, instructions

from tests.docs import docs_text
from tests.manifests import (
    KUBECTL,
    MANIFESTS,
    PREDICTION_LOG,
    STORE_SECRET,
    STORE_SECRET_KEY,
    commented_commands,
    one,
    render,
)
from tests.pod_command import command_line, container_port, expand

KUSTOMIZATIONS = ["base", "inferenceservice", PREDICTION_LOG,
                  *sorted(f"overlays/{p.name}" for p in (MANIFESTS / "overlays").iterdir() if p.is_dir())]
#: What `kubectl apply -k` in the README's one-time setup applies; the others are for reading,
#: except the prediction-log sink's, applied with -n into the InferenceService's namespace.
SETUP = ["base", "overlays/kubeflow"]
NAMESPACED = [k for k in KUSTOMIZATIONS if k != PREDICTION_LOG]
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed: `kubectl kustomize` renders the manifests")


def test_there_are_overlays_to_render():
    assert {"overlays/kubeflow", "overlays/triton", PREDICTION_LOG} <= set(KUSTOMIZATIONS)
    assert set(KUSTOMIZATIONS) == {str(p.parent.relative_to(MANIFESTS)) for p in MANIFESTS.rglob("kustomization.yaml")
                                   if "monitoring" not in p.parts}


def test_committed_reference_inferenceservice_is_the_builders_output():
    committed = (MANIFESTS / "inferenceservice" / "inferenceservice.yaml").read_text()
    assert committed == manifest_yaml(BASE_MANIFEST_SPEC), (
        "manifests/inferenceservice/inferenceservice.yaml is stale; regenerate it with the command in its header")


@needs_kubectl
@pytest.mark.parametrize("kustomization", NAMESPACED)
def test_every_kustomization_renders_in_one_namespace(kustomization):
    namespaces = {d["metadata"].get("namespace") for d in render(kustomization)}
    assert len(namespaces) == 1 and None not in namespaces, "every object in one namespace"


@needs_kubectl
@pytest.mark.parametrize("kustomization", [k for k in NAMESPACED if k not in SETUP])
def test_the_reference_kustomizations_render_only_the_inferenceservice(kustomization):
    docs = render(kustomization)
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [("InferenceService", isvc.NAME)]


@needs_kubectl
@pytest.mark.parametrize("kustomization", SETUP)
def test_the_setup_creates_accounts_and_least_privilege_rbac_and_no_inferenceservice(kustomization):
    """No InferenceService with placeholders: the first deploy step creates it from the model, and
    its contract id then matches every later candidate's."""
    docs = render(kustomization)
    namespaces = {d["metadata"]["namespace"] for d in docs}
    assert sorted(d["kind"] for d in docs) == ["Role", "RoleBinding", "ServiceAccount", "ServiceAccount"]
    role = one(docs, "Role", "fraud-rollout-inferenceservices")
    assert role["rules"] == [{"apiGroups": ["serving.kserve.io"], "resources": ["inferenceservices"],
                              "verbs": ["get", "list", "watch", "create", "patch", "update"]},
                             {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "patch"]},
                             {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}]
    binding = one(docs, "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert {"kind": "ServiceAccount", "name": "fraud-rollout-pipeline", "namespace": namespaces.pop()} in binding["subjects"]
    serving = one(docs, "ServiceAccount", "fraud-detector-serving")
    assert serving["secrets"] == [{"name": "fraud-detector-s3"}]
    assert not [d for d in docs if d["kind"] == "Secret"], "the S3 Secret is a template, never applied"


@needs_kubectl
def test_rendered_inferenceservice_equals_what_the_deploy_step_creates():
    rendered = one(render("inferenceservice"), "InferenceService")
    assert rendered == isvc.inference_service(BASE_MANIFEST_SPEC)


@needs_kubectl
def test_kubeflow_overlay_grants_the_profile_runner_the_role():
    binding = one(render("overlays/kubeflow"), "RoleBinding")
    assert {"kind": "ServiceAccount", "name": "default-editor", "namespace": "kubeflow-user-example-com"} in binding["subjects"]


@needs_kubectl
def test_triton_overlay_serves_the_same_artifact_with_our_transformer():
    rendered = one(render("overlays/triton"), "InferenceService")
    expected = isvc.inference_service(BASE_MANIFEST_SPEC)
    assert rendered["spec"]["predictor"] == isvc.triton_predictor_spec(BASE_MANIFEST_SPEC)
    assert rendered["spec"]["transformer"] == expected["spec"]["transformer"]
    assert rendered["metadata"] == expected["metadata"]
    model = rendered["spec"]["predictor"]["model"]
    assert (model["modelFormat"], model["protocolVersion"], model["runtime"]) == (
        {"name": "tensorflow"}, "v2", "kserve-tritonserver")
    assert model["storageUri"] == isvc.predictor_storage_uri(expected)


def test_canary_manifest_has_the_split_v2_protocol_transformer_and_non_root_containers():
    """What the deploy step leaves in the cluster for v2 at 20 %."""
    manifest = isvc.inference_service(replace(BASE_MANIFEST_SPEC, storage_uri="s3://fraud-models/v2",
                                              model_version="v2", canary_percent=20))
    predictor, transformer = manifest["spec"]["predictor"], manifest["spec"]["transformer"]
    assert predictor["canaryTrafficPercent"] == 20
    args = transformer["containers"][0]["args"]
    assert args[args.index("--predictor_protocol") + 1] == "v2"
    for container in predictor["containers"] + transformer["containers"]:
        assert container["name"] == "kserve-container"
        assert container["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert manifest["metadata"]["annotations"][isvc.DEPLOYMENT_MODE_ANNOTATION] == "Knative"


def test_tag_hosts_follow_knatives_tag_template_and_kserves_predictor_host_form():
    """Read in the source, not remembered: knative.dev/networking pkg/config/config.go:60
    `DefaultTagTemplate = "{{.Tag}}-{{.Name}}"`; knative.dev/serving@v0.48.1
    pkg/reconciler/route/resources/service.go:45-57 names the tag's Service
    `HostnameFromTemplate(route.Name, tag)` in the route's namespace; kserve@v0.20.0
    pkg/constants/constants.go:803 names the route `name + "-" + "predictor"` and
    pkg/apis/serving/v1beta1/transformer_custom.go:77 gives the transformer
    `fmt.Sprintf("%s.%s", predictorHost[0], metadata.Namespace)`; ksvc_reconciler.go:140,150 tag
    the targets "latest" and "prev"."""
    assert isvc.tag_host("fraud-detector", "fraud-rollout", "prev") == "prev-fraud-detector-predictor.fraud-rollout"
    assert isvc.TRAFFIC_TAGS == ("latest", "prev")
    args = isvc.transformer_spec(replace(BASE_MANIFEST_SPEC, namespace="team-a"))["containers"][0]["args"]
    assert args[args.index("--shadow_hosts") + 1] == (
        "latest=http://latest-fraud-detector-predictor.team-a,prev=http://prev-fraud-detector-predictor.team-a")
    assert "--shadow_percent" not in args  # the default share


def test_s3_secret_template_holds_placeholders_and_the_keys_both_readers_need():
    template = yaml.safe_load((MANIFESTS / "base" / "s3-secret.template.yaml").read_text())
    assert template["metadata"]["name"] == "fraud-detector-s3"
    annotations = template["metadata"]["annotations"]
    assert {"serving.kserve.io/s3-endpoint", "serving.kserve.io/s3-usehttps", "serving.kserve.io/s3-region"} <= set(annotations)
    from fraud.artifact_store import REQUIRED_ENV_VARS

    data = template["stringData"]
    assert set(REQUIRED_ENV_VARS) <= set(data)
    assert data["AWS_ACCESS_KEY_ID"].startswith("REPLACE-") and data["AWS_SECRET_ACCESS_KEY"].startswith("REPLACE-")
    kustomization = yaml.safe_load((MANIFESTS / "base" / "kustomization.yaml").read_text())
    assert "s3-secret.template.yaml" not in kustomization["resources"]




def setup_block() -> list[str]:
    """The shell block of the README's "One-time cluster setup", as lines."""
    text = docs_text()
    section = text[text.index("### One-time cluster setup"):]
    block = section[section.index("```sh\n") + len("```sh\n"):]
    return block[:block.index("```")].splitlines()


def test_the_readme_setup_creates_the_secret_first_then_applies_only_the_setup():
    lines = setup_block()
    commands = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    secret = next(i for i, line in enumerate(commands) if "create secret generic fraud-detector-s3" in line)
    applies = [line for line in commands if "kubectl apply" in line]
    assert applies == ["| kubectl apply -f -", "kubectl apply -k manifests/overlays/kubeflow"]
    assert secret < commands.index("kubectl apply -k manifests/overlays/kubeflow")
    assert "inferenceservice" not in "\n".join(commands).lower()


@needs_kubectl
def test_the_readme_secret_command_makes_the_secret_both_readers_need(tmp_path):
    """Runs the README's Secret command as written, up to its final `kubectl apply -f -` (no API
    server here), with the settings in the environment; the Secret lands in the setup's namespace
    under the name the serving account lists, with every key the deploy step maps to env vars."""
    import base64
    import os

    from fraud.artifact_store import REQUIRED_ENV_VARS

    script = "\n".join(setup_block())
    script = script[:script.index("| kubectl apply -f -")]
    values = {"AWS_ACCESS_KEY_ID": "test-access", "AWS_SECRET_ACCESS_KEY": "test-secret",
              "S3_ENDPOINT": "minio-service.kubeflow:9000", "S3_USE_HTTPS": "0"}
    env = {**{k: v for k, v in os.environ.items() if k not in values}, **values,
           "KUBECONFIG": str(tmp_path / "none"), "PATH": f"{Path(KUBECTL).parent}:{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, env=env,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    secret = yaml.safe_load(result.stdout)
    setup = render("overlays/kubeflow")
    serving = one(setup, "ServiceAccount", "fraud-detector-serving")
    assert secret["kind"] == "Secret" and {"name": secret["metadata"]["name"]} in serving["secrets"]
    assert secret["metadata"]["namespace"] == serving["metadata"]["namespace"]
    assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == values
    assert set(REQUIRED_ENV_VARS) <= set(secret["data"])
    template = yaml.safe_load((MANIFESTS / "base" / "s3-secret.template.yaml").read_text())
    assert secret["metadata"]["annotations"] == {
        "serving.kserve.io/s3-endpoint": "minio-service.kubeflow:9000", "serving.kserve.io/s3-usehttps": "0",
        "serving.kserve.io/s3-region": "us-east-1"}
    assert set(secret["metadata"]["annotations"]) == set(template["metadata"]["annotations"])


def sink_objects() -> tuple[dict, dict, dict]:
    """The prediction-log kustomization's ServiceAccount, Service and Deployment."""
    docs = render(PREDICTION_LOG)
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == [
        ("Deployment", isvc.PREDICTION_LOG_SERVICE), ("Service", isvc.PREDICTION_LOG_SERVICE),
        ("ServiceAccount", isvc.PREDICTION_LOG_SERVICE)]
    return one(docs, "ServiceAccount"), one(docs, "Service"), one(docs, "Deployment")


def sink_container(deployment: dict) -> dict:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


@needs_kubectl
def test_the_sink_is_the_service_kserves_logger_posts_to_in_the_namespace_it_is_applied_to():
    account, service, deployment = sink_objects()
    assert [d["metadata"].get("namespace") for d in (account, service, deployment)] == [None] * 3, (
        "no namespace: `kubectl apply -k -n NS` puts the sink beside the InferenceService")
    assert isvc.prediction_log_url("team-a") == f"http://{service['metadata']['name']}.team-a.svc.cluster.local"
    container = sink_container(deployment)
    (port,) = service["spec"]["ports"]
    assert port["port"] == 80, "the logger URL names no port"
    args = container["args"]
    assert container_port(container, port["targetPort"]) == int(args[args.index("--port") + 1]) == 8090
    assert args[args.index("--host") + 1] == "0.0.0.0", "the Service reaches the pod's address, not its loopback"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"].items() <= labels.items()


@needs_kubectl
def test_the_sink_runs_as_non_root_with_no_api_token_and_one_replica():
    account, _, deployment = sink_objects()
    pod = deployment["spec"]["template"]["spec"]
    container = sink_container(deployment)
    assert container["securityContext"] == isvc.SECURITY_CONTEXT
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert account["automountServiceAccountToken"] is False and pod["automountServiceAccountToken"] is False
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    assert container["resources"] == {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}}
    assert container["image"] == "ghcr.io/fraud-rollout/components:0.1.0"


@needs_kubectl
def test_the_components_image_holds_the_sink_and_runs_it_as_the_manifests_user():
    """components/Dockerfile copies control/ (the sink) and installs the root lock (psycopg for
    PostgreSQL), has no entry point (the manifest's command is the whole argv) and runs as the pod's
    user (the built image's user: tests/integration/test_images.py)."""
    dockerfile = REPO / "components" / "Dockerfile"
    steps = instructions(dockerfile)
    pod = sink_objects()[2]["spec"]["template"]["spec"]
    assert [rest for keyword, rest in steps if keyword == "USER"] == [str(pod["securityContext"]["runAsUser"])]
    assert not [keyword for keyword, _ in steps if keyword in ("ENTRYPOINT", "CMD")]
    assert {"control", "requirements.lock"} <= set(copied(dockerfile))
    pinned = {line.split("==")[0] for line in (REPO / "requirements.lock").read_text().splitlines() if "==" in line}
    assert {"psycopg", "psycopg-binary", "uvicorn", "starlette", "cloudevents"} <= pinned


@needs_kubectl
def test_the_sink_is_ready_while_its_store_answers_and_alive_while_it_serves():
    container = sink_container(sink_objects()[2])
    probes = {name: (container[name]["httpGet"]["path"], container_port(container, container[name]["httpGet"]["port"]))
              for name in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes == {"startupProbe": ("/metrics", 8090), "readinessProbe": ("/healthz", 8090),
                      "livenessProbe": ("/metrics", 8090)}


@needs_kubectl
def test_the_sinks_store_url_comes_from_the_secret_only():
    rendered = subprocess.run([KUBECTL, "kustomize", str(MANIFESTS / PREDICTION_LOG)], capture_output=True, text=True,
                              timeout=60, check=True).stdout
    assert "postgresql://" not in rendered and "password" not in rendered.lower()
    container = sink_container(sink_objects()[2])
    url = "postgresql://sink:s3cret@db.example:5432/predictions"
    argv, env = command_line(container, {STORE_SECRET: {STORE_SECRET_KEY: url}})
    # the URL reaches the sink in its environment only: never in the command line the node's
    # process list shows (the sink reads PREDICTION_LOG_STORE_URL when --store is absent)
    assert argv == ["python", "-m", "fraud_control.prediction_log.sink", "--host", "0.0.0.0", "--port", "8090",
                    "--retention-days", "90"]
    assert env == {STORE_ENV: url} and not any(url in arg for arg in argv)
    with pytest.raises(ValueError, match="env PREDICTION_LOG_STORE_URL: no key 'url' in Secret 'fraud-prediction-log-store'"):
        command_line(container, {})


@needs_kubectl
def test_the_sinks_secret_command_makes_the_secret_its_deployment_reads(tmp_path):
    """The kustomization header's Secret command as written, up to its final `kubectl apply -f -`
    (no API server here; tests/integration/test_manifests_on_cluster.py runs it all on one)."""
    import base64
    import os

    secret_command, apply_command = commented_commands(PREDICTION_LOG)
    assert apply_command == f'kubectl apply -k manifests/{PREDICTION_LOG} -n "$NS"'
    offline = secret_command[:secret_command.index("| kubectl apply -f -")]
    url = "postgresql://sink:s3cret@db.example:5432/predictions"
    env = {**os.environ, "NS": "team-a", "PREDICTION_LOG_STORE_URL": url, "KUBECONFIG": str(tmp_path / "none"),
           "PATH": f"{Path(KUBECTL).parent}:{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", offline], capture_output=True, text=True, env=env,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    secret = yaml.safe_load(result.stdout)
    assert (secret["kind"], secret["metadata"]["name"], secret["metadata"]["namespace"]) == ("Secret", STORE_SECRET, "team-a")
    assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == {STORE_SECRET_KEY: url}
    reference = sink_container(sink_objects()[2])["env"][0]["valueFrom"]["secretKeyRef"]
    assert reference == {"name": STORE_SECRET, "key": STORE_SECRET_KEY}


@pytest.mark.parametrize(("text", "expected"), [
    # cases of kubernetes v1.34.4 third_party/forked/golang/expansion/expand_test.go
    ("$(VAR_A)-$(VAR_A)", "A-A"), ("$$(VAR_B)_$(VAR_A)", "$(VAR_B)_A"), ("f000-$$VAR_A", "f000-$VAR_A"),
    ("$(VAR_A$(VAR_B))", "$(VAR_A$(VAR_B))"), ("foo$(VAR_EMPTY)bar", "foobar"), ("foo$(VAR_Awhoops!", "foo$(VAR_Awhoops!"),
    ("$(VAR_DNE)", "$(VAR_DNE)"), ("$$$$$$$(VAR_A)", "$$$A"), ("$$$$$$(BIG_MONEY)", "$$$(BIG_MONEY)"),
    ("${VAR_A}", "${VAR_A}"), ("$(VAR_C)_______$(", "C_______$("), ("$(VAR_A)foobarzab$", "Afoobarzab$"),
    ("--$($($($($--", "--$($($($($--"), ("$(foo$$var)", "$(foo$$var)"), ("prefix-$€-suffix", "prefix-$€-suffix"),
])
def test_args_expand_as_the_kubelet_expands_them(text, expected):
    assert expand(text, {"VAR_A": "A", "VAR_B": "B", "VAR_C": "C", "VAR_EMPTY": ""}) == expected
