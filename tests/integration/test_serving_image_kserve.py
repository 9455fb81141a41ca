"""Issue 18: the serving image started as KServe starts it.

The InferenceService is deployed on the dev cluster (KServe's real controller and webhooks, models in
MinIO): v1 rolled out, then v2 as a canary. Each container is taken from the pod KServe's pod webhook
admits for the Knative Service template KServe's controller wrote (a dry-run create, as Knative would
create the pod: the webhook adds the storage initializer, the /mnt/models mount and the agent), and
run with podman (`tests.podman_pod`): args, env and securityContext as written, only the image
replaced by the one `make images` built. The model directory each pod mounts read-only at /mnt/models
is filled by KServe's own storage-initializer code (`kserve-storage` from PyPI, in a venv of its
own) run with the initializer container's env and args, from MinIO.

Rewritten, and only these (a pod has its own network namespace and cluster DNS; here every container
shares the host's loopback): each container's `--http_port` (both say 8080) and an added
`--grpc_port` (KServe's default 8081 for both) get free ports; the transformer's `--predictor_host`
(the predictor's Knative route), `--shadow_hosts` (its `latest`/`prev` tag routes, cluster DNS names
on port 80) and `--logger_url` (the sink's Service) point at the v1 predictor container, the v1/v2
predictor containers and a prediction-log sink process on loopback. The predictor revision v1 runs
from the template KServe wrote before the canary patch (Knative's first revision keeps it).

Not run: KServe's agent sidecar (a Go binary the webhook injects for the request/response log) and
Knative's queue-proxy; the transformer's own posts (`--logger_events pairs`: shadow pairs) are.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from fraud.artifact_store import upload_artifact
from fraud.processes import LOOPBACK, ServerFailed, ServerProcess, free_port
from fraud.schema import FEATURES
from fraud_control.canary import operations as canary
from fraud_control.canary.deploy import spec_for_artifact
from fraud_control.inferenceservice import isvc
from fraud_control.inferenceservice.kube_store import KubeStore
from fraud_control.prediction_log.store import open_store
from fraud_devcluster import images
from fraud_devcluster.images import REPO
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kubernetes import client as k8s

from tests.cluster_fixtures import Namespace, admin_client
from tests.integration.serving_fixtures import Stack, metric_value, start_stack, v2_json
from tests.integration.test_serving_runtime import BAD_REQUESTS, JSON, OTHER_REQUESTS, OVERSIZED, bad_input_answers
from tests.pod_command import command_line
from tests.podman_pod import Container, run_args, with_flag
from tests.sink_process import SinkProcess, start_sink

pytestmark = pytest.mark.integration

#: KServe's storage initializer's code at the controller's version, as PyPI serves it; in a venv of
#: its own (not the project lock), cached by its requirement.
KSERVE_STORAGE = "kserve-storage==0.21.0"
STORAGE_VENV = REPO / ".fraud-rollout" / "cache" / "kserve-storage" / hashlib.sha256(KSERVE_STORAGE.encode()).hexdigest()[:12]
UV = str(Path(sys.executable).with_name("uv"))
#: The storage-initializer image's entrypoint (kserve python/storage-initializer/scripts/
#: initializer-entrypoint): argv is src_uri dest_path pairs, each downloaded by kserve_storage.
INITIALIZER = "import sys; from kserve_storage import Storage; Storage.download_files(sys.argv[1::2], sys.argv[2::2])"
BUCKET = "fraud-models"
S3_SECRET = "fraud-detector-s3"
MODEL_VOLUME, MODEL_MOUNT = "kserve-provision-location", "/mnt/models"
ACCOUNT_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
ROWS = 1_000
SAME_SCORES = 1e-6  # the container's probabilities against the in-process servers'
READY_TIMEOUT_S = 300.0
#: The uid the serving image's Dockerfile gives user "serving" (`useradd --uid 1000`).
IMAGE_USER = "serving"


@dataclass
class Served:
    """What the module deployed and started."""

    namespace: Namespace
    written: dict[str, dict]  # component → the Knative Service template (spec.template) KServe wrote
    pods: dict[str, dict]  # component → the spec of the pod KServe's webhook admits for it
    storage_uris: dict[str, str]  # component → what its storage initializer pulled
    model_dirs: dict[str, Path]  # component → its /mnt/models on the host
    account: Path  # the service-account volume on the host
    argv: dict[str, list[str]]  # component → the args its container was started with
    grpc_ports: dict[str, int]
    servers: dict[str, ServerProcess]  # component → its container's podman process, waited on
    containers: dict[str, Container]
    in_process: Stack
    sink: SinkProcess
    sink_store: Path

    def url(self, component: str) -> str:
        return self.servers[component].url

    @property
    def transformer(self) -> str:
        return self.url("transformer")

    @property
    def infer_url(self) -> str:
        return self.servers["transformer"].infer_url


@pytest.fixture(scope="module")
def storage_python() -> Path:
    """The python of a venv holding `kserve-storage` (created once, then reused)."""
    python = STORAGE_VENV / "bin" / "python"
    if not (STORAGE_VENV / ".installed").exists():
        for command in ([UV, "venv", "-q", "--clear", "--python", sys.executable, str(STORAGE_VENV)],
                        [UV, "pip", "install", "-q", "--python", str(python), KSERVE_STORAGE]):
            done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
            assert done.returncode == 0, f"{' '.join(command)}:\n{done.stderr[-2000:]}"
        (STORAGE_VENV / ".installed").touch()
    return python


def knative_template(admin: k8s.CustomObjectsApi, namespace: str, component: str) -> dict:
    return admin.get_namespaced_custom_object("serving.knative.dev", "v1", namespace, "services",
                                              f"{isvc.NAME}-{component}")["spec"]["template"]


def deploy_and_read_templates(admin: k8s.CustomObjectsApi, namespace: str, s3_settings, tiny_run) -> dict[str, dict]:
    """The deploy step's cluster side, in two steps to keep the template of the rolled-out predictor
    (v1; Knative's first revision holds it), then v2 as a canary: the three templates KServe wrote."""
    store = KubeStore(admin, namespace)
    v1, v2 = (spec_for_artifact(model, upload_artifact(model, BUCKET, settings=s3_settings), namespace=namespace,
                                prediction_log_url=isvc.prediction_log_url(namespace))
              for model in (tiny_run.v1, tiny_run.v2))
    canary.deploy_canary(store, v1, v1, timeout_s=60, poll_s=0.05)
    written = {"predictor-v1": knative_template(admin, namespace, "predictor")}
    canary.deploy_canary(store, v2, v1, timeout_s=60, poll_s=0.05)
    return written | {"predictor-v2": knative_template(admin, namespace, "predictor"),
                      "transformer": knative_template(admin, namespace, "transformer")}


def admit_pods(core: k8s.CoreV1Api, namespace: Namespace, s3_settings, templates: dict[str, dict]) -> dict[str, dict]:
    """The README's setup (the S3 Secret the storage initializer reads, MinIO's address here; the pods'
    account), then the pod KServe's pod webhook makes of each template (a dry-run create: no kubelet)."""
    core.create_namespaced_secret(namespace.name, {"metadata": {"name": S3_SECRET, "annotations": {
        "serving.kserve.io/s3-endpoint": s3_settings.endpoint, "serving.kserve.io/s3-usehttps": "0",
        "serving.kserve.io/s3-region": "us-east-1"}}, "stringData": s3_secret(s3_settings)})
    namespace.kubectl("apply", "-f", str(REPO / "manifests" / "base" / "serving-account.yaml"))
    pods = {}
    for component, template in templates.items():
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {**template["metadata"], "name": f"{component}-0"},
               "spec": template["spec"]}
        admitted = core.create_namespaced_pod(namespace.name, pod, dry_run="All")
        pods[component] = core.api_client.sanitize_for_serialization(admitted)["spec"]
    return pods


def s3_secret(s3_settings) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": s3_settings.access_key, "AWS_SECRET_ACCESS_KEY": s3_settings.secret_key}


def one(containers: list[dict], name: str) -> dict:
    (found,) = [c for c in containers if c["name"] == name]
    return found


def initialize_storage(storage_python: Path, pod: dict, secret: dict[str, str], into: Path) -> str:
    """Run the pod's storage-initializer container's args with its env (Secret keys resolved) through
    kserve_storage, its `/mnt/models` being `into`; returns the source URI."""
    initializer = one(pod["initContainers"], "storage-initializer")
    argv, env = command_line(initializer, {S3_SECRET: secret})
    source, destination = argv
    assert destination == MODEL_MOUNT
    assert {m["name"]: m["mountPath"] for m in initializer["volumeMounts"]}[MODEL_VOLUME] == MODEL_MOUNT
    into.mkdir(mode=0o755, parents=True)
    done = subprocess.run([str(storage_python), "-c", INITIALIZER, source, str(into)], capture_output=True, text=True,
                          timeout=300, check=False, env={"PATH": os.environ["PATH"], "HOME": str(into.parent), **env})
    assert done.returncode == 0, done.stderr[-3000:]
    return source


def loopback_args(component: str, written: list[str], http: dict[str, int], grpc: dict[str, int],
                  sink_url: str) -> list[str]:
    """The written args with the rewrites the module docstring lists."""
    args = with_flag(with_flag(written, "--http_port", str(http[component])), "--grpc_port", str(grpc[component]))
    if component == "transformer":
        v1, v2 = (f"http://{LOOPBACK}:{http[f'predictor-{v}']}" for v in ("v1", "v2"))
        args = with_flag(args, "--predictor_host", v1.removeprefix("http://"))
        args = with_flag(args, "--shadow_hosts", f"latest={v2},prev={v1}")
        args = with_flag(args, "--logger_url", sink_url)
    return args


def start_container(pod: dict, name: str, args: list[str], http_port: int, volumes: dict[str, Path],
                    log_dir: Path) -> tuple[Container, ServerProcess]:
    """The pod's kserve-container under podman, with `args` and the host directories of its volumes."""
    container = one(pod["containers"], "kserve-container")
    flags = run_args(container, pod, image=images.built_image("serving"), name=name, argv=args,
                     host_paths={mount["name"]: volumes[mount["mountPath"]] for mount in container["volumeMounts"]
                                    if mount["mountPath"] in volumes})
    log_path = log_dir / f"{name}.log"
    started = Container.start(flags, log_path)
    return started, ServerProcess(name, started.process, http_port, isvc.NAME, log_path, flags)


@pytest.fixture(scope="module")
def served(kube_cluster, s3_settings, tiny_run, storage_python, tmp_path_factory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("serving_image_kserve")
    api_client = admin_client(kube_cluster)
    admin, core = k8s.CustomObjectsApi(api_client), k8s.CoreV1Api(api_client)
    namespace = Namespace(f"t-{secrets.token_hex(4)}", kube_cluster)
    core.create_namespace({"metadata": {"name": namespace.name}})
    written = deploy_and_read_templates(admin, namespace.name, s3_settings, tiny_run)
    pods = admit_pods(core, namespace, s3_settings, written)
    model_dirs = {component: root / component / "models" for component in pods}
    storage_uris = {component: initialize_storage(storage_python, pod, s3_secret(s3_settings), model_dirs[component])
                    for component, pod in pods.items()}
    # the projected service-account volume as far as the server reads it: the namespace (no token)
    account = root / "serviceaccount"
    account.mkdir()
    (account / "namespace").write_text(namespace.name)

    http, grpc = ({component: free_port() for component in pods} for _ in range(2))
    assert len({*http.values(), *grpc.values()}) == 2 * len(pods)
    sink_store = root / "prediction-log.db"
    with ExitStack() as stack:
        sink = start_sink(str(sink_store), root / "sink.log")
        stack.callback(sink.stop)
        argv = {component: loopback_args(component, one(pod["containers"], "kserve-container")["args"], http, grpc,
                                         sink.url) for component, pod in pods.items()}
        containers, servers = {}, {}
        for component, pod in pods.items():
            containers[component], servers[component] = start_container(
                pod, f"fraud-{namespace.name}-{component}", argv[component], http[component],
                {MODEL_MOUNT: model_dirs[component], ACCOUNT_MOUNT: account}, root)
            stack.callback(containers[component].remove)
        for server in servers.values():
            server.wait_ready(READY_TIMEOUT_S)
        # only now: a server's port is chosen free when it starts but bound only once TensorFlow has
        # loaded (seconds later), so servers started together can be handed one port, and a container
        # that lost it would have its readiness answered by the other process (one run here saw no
        # shadow pair at all, as if the v2 container's port answered v1)
        in_process = stack.enter_context(start_stack(tiny_run.v1, root / "in-process-logs"))
        assert [c.name for c in containers.values() if not c.running()] == []
        yield Served(namespace, written, pods, storage_uris, model_dirs, account, argv, grpc, servers, containers, in_process,
                     sink, sink_store)


@pytest.fixture(scope="module")
def holdout(tiny_run) -> np.ndarray:
    raw = tiny_run.windows["holdout"].loc[:, list(FEATURES)].to_numpy(dtype=np.float64)
    assert len(raw) >= ROWS
    return raw[:ROWS]


@pytest.fixture(scope="module")
def in_process_answer(served, holdout) -> dict:
    response = httpx.post(served.in_process.transformer.infer_url, content=v2_json(holdout), headers=JSON, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def outputs(body: dict) -> dict[str, np.ndarray]:
    return {output["name"]: np.asarray(output["data"]) for output in body["outputs"]}


def assert_same_scores(body: dict, reference: dict) -> None:
    got, expected = outputs(body), outputs(reference)
    assert got["fraud_probability"].shape == expected["fraud_probability"].shape == (ROWS,)
    np.testing.assert_allclose(got["fraud_probability"], expected["fraud_probability"], atol=SAME_SCORES, rtol=0)
    np.testing.assert_array_equal(got["is_fraud"], expected["is_fraud"])


def test_each_container_is_the_one_kserve_wrote_with_only_the_loopback_rewrites(served):
    ns = served.namespace.name
    for component, template in served.written.items():
        (written,) = template["spec"]["containers"]
        admitted = one(served.pods[component]["containers"], "kserve-container")
        # KServe's pod webhook changes only STORAGE_URI (to the mount) and adds the mounts
        assert admitted["args"] == written["args"] and admitted["securityContext"] == written["securityContext"]
        assert admitted["env"] == [{"name": "STORAGE_URI", "value": MODEL_MOUNT}, *written["env"][1:]]
        assert written["env"][0] == {"name": "STORAGE_URI", "value": served.storage_uris[component]}
        assert {m["mountPath"]: m.get("readOnly", False) for m in admitted["volumeMounts"]} == {
            MODEL_MOUNT: True, ACCOUNT_MOUNT: True}
        # what podman started: the args as rewritten, nothing else
        inspected = served.containers[component].inspect()
        assert inspected["Config"]["Cmd"] == served.argv[component]
        assert inspected["Config"]["Entrypoint"] == "python -m fraud_serving"  # no `command`: the image's (podman 4.3 joins it)
        assert {f"{e['name']}={e['value']}" for e in admitted["env"]} <= set(inspected["Config"]["Env"])
        assert inspected["Config"]["Image"] == images.built_image("serving")
        rewritten = dict(zip(served.argv[component][1::2], served.argv[component][2::2], strict=True))
        original = dict(zip(written["args"][1::2], written["args"][2::2], strict=True))
        assert original["--http_port"] == "8080" and "--grpc_port" not in original
        moved = {"--http_port", "--grpc_port"}
        if component == "transformer":
            assert original["--predictor_host"] == f"{isvc.NAME}-predictor.{ns}"
            assert original["--logger_url"] == isvc.prediction_log_url(ns)
            assert original["--shadow_hosts"] == (f"latest=http://latest-{isvc.NAME}-predictor.{ns},"
                                                  f"prev=http://prev-{isvc.NAME}-predictor.{ns}")
            moved |= {"--predictor_host", "--shadow_hosts", "--logger_url"}
            v1, v2 = served.servers["predictor-v1"].port, served.servers["predictor-v2"].port
            assert (rewritten["--predictor_host"], rewritten["--shadow_hosts"], rewritten["--logger_url"]) == (
                f"127.0.0.1:{v1}", f"latest=http://127.0.0.1:{v2},prev=http://127.0.0.1:{v1}", served.sink.url)
        else:
            assert written["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]  # = its --http_port
        assert {k: v for k, v in rewritten.items() if k not in moved} == {k: v for k, v in original.items()
                                                                          if k not in moved}
        assert served.argv[component][0] == written["args"][0] and set(rewritten) == {*original, "--grpc_port"}
        assert (rewritten["--http_port"], rewritten["--grpc_port"]) == (str(served.servers[component].port),
                                                                        str(served.grpc_ports[component]))


def test_every_container_runs_as_uid_1000_under_the_declared_security_context(served):
    """Read back from podman and the kernel, not from the flags passed."""
    for component, container in served.containers.items():
        declared = served.written[component]["spec"]["containers"][0]["securityContext"]
        assert declared == isvc.SECURITY_CONTEXT
        inspected = container.inspect()
        assert inspected["Config"]["User"] == str(declared["runAsUser"])
        assert inspected["HostConfig"]["SecurityOpt"] == ["no-new-privileges"]
        assert inspected["HostConfig"]["ReadonlyRootfs"] is False  # readOnlyRootFilesystem is not declared
        top = container.top("user", "group", "capeff", "capbnd", "seccomp", "args")
        assert top["user"] == top["group"] == IMAGE_USER, top
        assert (top["capeff"], top["capbnd"], top["seccomp"]) == ("none", "none", "filter"), top
        assert top["args"].startswith("python -m fraud_serving " + served.argv[component][0])
        status = container.process_status()
        assert status["Uid"].split() == status["Gid"].split() == ["1000"] * 4, status  # runAsNonRoot holds
        assert (status["CapEff"], status["CapPrm"], status["CapBnd"]) == ("0" * 16,) * 3  # drop: [ALL]
        assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2"  # allowPrivilegeEscalation: false; RuntimeDefault
        # limits as declared (resources.limits: cpu 1, memory 2Gi)
        assert (inspected["HostConfig"]["NanoCpus"], inspected["HostConfig"]["Memory"]) == (10**9, 2 * 2**30)


def test_the_storage_initializer_left_each_model_as_exported_and_it_is_mounted_read_only(served, tiny_run):
    def tree(root: Path) -> dict[str, str]:
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    exported = {"predictor-v1": tiny_run.v1, "predictor-v2": tiny_run.v2, "transformer": tiny_run.v1}
    for component, model_dir in served.model_dirs.items():
        assert served.storage_uris[component].startswith(f"s3://{BUCKET}/")
        assert tree(model_dir) == tree(exported[component]), component
        (mount,) = [m for m in served.containers[component].inspect()["Mounts"] if m["Destination"] == MODEL_MOUNT]
        assert (mount["Source"], mount["RW"]) == (str(model_dir.resolve()), False)
    write = served.containers["predictor-v1"]
    written = subprocess.run(["podman", "exec", write.name, "python", "-c", f"open('{MODEL_MOUNT}/x', 'w')"],
                             capture_output=True, text=True, env=images.podman_env(), timeout=60, check=False)
    assert written.returncode == 1 and "Read-only file system" in written.stderr, written.stderr


def test_v2_health_readiness_and_metadata(served):
    for path in ("/v2/health/ready", "/v2/health/live", "/v2"):
        assert httpx.get(f"{served.transformer}{path}", timeout=10).status_code == 200, path
    assert httpx.get(f"{served.transformer}/v2/models/{isvc.NAME}/ready", timeout=10).json() == {
        "name": isvc.NAME, "ready": True}
    metadata = httpx.get(f"{served.transformer}/v2/models/{isvc.NAME}", timeout=10).json()
    in_process = httpx.get(f"{served.in_process.transformer.url}/v2/models/{isvc.NAME}", timeout=10).json()
    assert metadata == in_process
    assert [i["name"] for i in metadata["inputs"]] == ["transactions", *FEATURES, "transaction_id"]
    predictor = httpx.get(f"{served.url('predictor-v1')}/v2/models/{isvc.NAME}", timeout=10).json()
    assert predictor["inputs"] == [{"name": "scaled_features", "datatype": "FP32", "shape": [-1, 30]}]


def test_1000_holdout_rows_score_as_in_the_in_process_servers_in_json(served, holdout, in_process_answer):
    response = httpx.post(served.infer_url, content=v2_json(holdout), headers=JSON, timeout=60)
    assert response.status_code == 200, response.text
    assert (response.json()["model_name"], response.json()["model_version"]) == (isvc.NAME, "v1")
    assert_same_scores(response.json(), in_process_answer)
    assert outputs(in_process_answer)["is_fraud"].sum() > 0  # both decisions compared


def test_1000_holdout_rows_score_as_in_the_in_process_servers_as_binary_tensor_data(served, holdout,
                                                                                    in_process_answer):
    """KServe's binary tensor extension: a JSON header of Inference-Header-Content-Length bytes, then
    the FP64 values raw."""
    header = json.dumps({"inputs": [{"name": "transactions", "shape": list(holdout.shape), "datatype": "FP64",
                                     "parameters": {"binary_data_size": holdout.nbytes}}]}).encode()
    response = httpx.post(served.infer_url, content=header + holdout.astype("<f8").tobytes(), timeout=60,
                          headers={"content-type": "application/octet-stream",
                                   "inference-header-content-length": str(len(header))})
    assert response.status_code == 200, response.text
    assert_same_scores(response.json(), in_process_answer)


@pytest.mark.parametrize("binary_data", [False, True])
def test_kserves_stock_rest_client_gets_the_same_scores(served, holdout, in_process_answer, binary_data):
    async def call():
        request_input = InferInput("transactions", list(holdout.shape), "FP64")
        request_input.set_data_from_numpy(holdout, binary_data=binary_data)
        client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=60))
        try:
            assert await client.is_server_ready(served.transformer)
            assert await client.is_model_ready(served.transformer, isvc.NAME)
            return await client.infer(served.transformer, InferRequest(isvc.NAME, [request_input]), model_name=isvc.NAME)
        finally:
            await client.close()

    response = asyncio.run(call())
    expected = outputs(in_process_answer)
    np.testing.assert_allclose(response.get_output_by_name("fraud_probability").as_numpy(),
                               expected["fraud_probability"], atol=SAME_SCORES, rtol=0)
    np.testing.assert_array_equal(response.get_output_by_name("is_fraud").as_numpy(), expected["is_fraud"])


def test_the_bad_input_matrix_gets_the_same_4xx_and_error_bodies_and_never_a_5xx(served):
    """tests/integration/test_serving_runtime.py's matrix, unchanged, against the container."""
    expected: dict[str, tuple[object, dict[str, object]]] = {
        name: (case[0], {"error": case[1]}) for name, case in (*BAD_REQUESTS.items(), *OTHER_REQUESTS.items(),
                                                                *OVERSIZED.items())}
    answers = bad_input_answers(served.infer_url, served.transformer)
    assert len(answers) >= 60
    assert not [name for name, (status, _) in answers.items() if not 400 <= status < 500]
    assert answers == expected
    assert served.containers["transformer"].running()
    assert httpx.get(f"{served.transformer}/v2/health/ready", timeout=10).status_code == 200


def test_metrics_count_the_containers_rows_and_decisions(served, holdout, in_process_answer):
    before = httpx.get(f"{served.transformer}/metrics", timeout=10).text
    predictor_before = httpx.get(f"{served.url('predictor-v1')}/metrics", timeout=10).text
    response = httpx.post(served.infer_url, content=v2_json(holdout), headers=JSON, timeout=60)
    assert response.status_code == 200
    after = httpx.get(f"{served.transformer}/metrics", timeout=10).text
    predictor_after = httpx.get(f"{served.url('predictor-v1')}/metrics", timeout=10).text
    frauds = int(outputs(in_process_answer)["is_fraud"].sum())

    def delta(name: str, **labels: str) -> float:
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    assert delta("fraud_predictions_total", model_version="v1", decision="fraud") == frauds
    assert delta("fraud_predictions_total", model_version="v1", decision="legit") == ROWS - frauds
    assert delta("fraud_score_count", model_version="v1") == ROWS
    assert delta("fraud_request_seconds_count", model_version="v1") == 1
    assert "request_predict_seconds" in after
    assert (metric_value(predictor_after, "request_predict_seconds_count", model_name=isvc.NAME)
            > metric_value(predictor_before, "request_predict_seconds_count", model_name=isvc.NAME))


def test_the_payload_logger_posts_the_shadow_pairs_to_the_sink(served, holdout):
    """`--logger_events pairs` (KServe's agent logs requests and responses in a cluster): each
    request shadow-scored on the other revision (v2, the `latest` tag) is one pair event, stored."""
    before = httpx.get(f"{served.transformer}/metrics", timeout=10).text
    with httpx.Client(timeout=30) as client:
        for n in range(200):  # 10 % are shadowed (the default share): ~20 pairs, none with p = 7e-10
            body = {"inputs": [{"name": "transactions", "shape": [1, 30], "datatype": "FP64",
                                "data": holdout[n].tolist()},
                               {"name": "transaction_id", "shape": [1], "datatype": "BYTES", "data": [f"tx-{n}"]}]}
            assert client.post(served.infer_url, json=body).status_code == 200

    def shadowed(text: str) -> float:
        return sum(metric_value(text, "fraud_shadow_rows_total", served_version="v1", shadow_version="v2",
                                served_decision=served_decision, shadow_decision=shadow_decision)
                   for served_decision in ("fraud", "legit") for shadow_decision in ("fraud", "legit"))

    def stored() -> int:
        with open_store(str(served.sink_store), create=False) as store:
            return store.counts()["paired"]

    # every shadow-paired row the transformer counted (this test's and any earlier test's) reaches the store
    deadline = time.monotonic() + 30
    while True:
        after = httpx.get(f"{served.transformer}/metrics", timeout=10).text
        if stored() == shadowed(after) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    shadow_lines = "\n".join(line for line in after.splitlines() if line.startswith(("fraud_shadow", "fraud_payload")))
    assert shadowed(after) - shadowed(before) > 0, shadow_lines
    assert stored() == shadowed(after) > 0
    assert metric_value(after, "fraud_payload_log_events_total", event_type="pair") > 0
    with open_store(str(served.sink_store), create=False) as store:
        counts = store.counts()
    assert (counts["logged"], counts["answered"]) == (0, 0)  # requests and responses: the agent's, not run here
    for reason in ("queue_full", "rejected", "shutdown"):
        assert metric_value(after, "fraud_payload_log_dropped_total", reason=reason) == 0, reason


def start_read_only_predictor(served: Served, log_dir: Path, tmp: bool) -> tuple[Container, ServerProcess]:
    """The v1 predictor's pod with `readOnlyRootFilesystem: true` added to its container (the
    InferenceService does not declare it: isvc.SECURITY_CONTEXT) and, with `tmp`, an emptyDir
    mounted at /tmp (podman: `--tmpfs /tmp`); nothing else is writable."""
    pod = json.loads(json.dumps(served.pods["predictor-v1"]))
    container = one(pod["containers"], "kserve-container")
    container["securityContext"]["readOnlyRootFilesystem"] = True
    if tmp:
        pod["volumes"].append({"name": "tmp", "emptyDir": {}})
        container["volumeMounts"].append({"name": "tmp", "mountPath": "/tmp"})
    http, grpc = free_port(), free_port()
    args = with_flag(with_flag(served.argv["predictor-v1"], "--http_port", str(http)), "--grpc_port", str(grpc))
    return start_container(pod, f"fraud-{served.namespace.name}-read-only-{'tmp' if tmp else 'bare'}", args, http,
                           {MODEL_MOUNT: served.model_dirs["predictor-v1"], ACCOUNT_MOUNT: served.account}, log_dir)


def test_on_a_read_only_root_filesystem_tensorflow_needs_a_writable_tmp(served, tmp_path):
    """Why the read-only variant below needs a tmpfs, and only at /tmp: importing TensorFlow imports
    absl.testing, which asks `tempfile.gettempdir()` at import time; with nothing writable the
    predictor exits before it listens. (serving/Dockerfile says the image is "fine on a read-only root
    filesystem": only with a writable /tmp.)"""
    container, server = start_read_only_predictor(served, tmp_path, tmp=False)
    try:
        with pytest.raises(ServerFailed) as failed:
            server.wait_ready(READY_TIMEOUT_S)
        assert container.inspect()["HostConfig"]["ReadonlyRootfs"] is True
        assert not container.inspect()["HostConfig"].get("Tmpfs")
    finally:
        container.remove()
    message = str(failed.value)
    assert "exited with 1" in message
    assert "No usable temporary directory found in ['/tmp', '/var/tmp', '/usr/tmp', '/home/serving']" in message
    assert "absl/testing/absltest.py" in message


def test_with_a_tmpfs_at_tmp_only_the_predictor_serves_on_a_read_only_root_filesystem(served, tiny_run, holdout,
                                                                                       tmp_path):
    container, server = start_read_only_predictor(served, tmp_path, tmp=True)
    try:
        server.wait_ready(READY_TIMEOUT_S)
        inspected = container.inspect()
        assert inspected["HostConfig"]["ReadonlyRootfs"] is True
        assert list(inspected["HostConfig"]["Tmpfs"]) == ["/tmp"]
        writes = {path: subprocess.run(["podman", "exec", container.name, "python", "-c", f"open('{path}/x', 'w')"],
                                       capture_output=True, text=True, env=images.podman_env(), timeout=60,
                                       check=False).returncode
                  for path in ("/tmp", "/home/serving", "/var/tmp", MODEL_MOUNT)}
        assert writes == {"/tmp": 0, "/home/serving": 1, "/var/tmp": 1, MODEL_MOUNT: 1}
        scaled = tiny_run.contract.transform(holdout)
        body = {"inputs": [{"name": "scaled_features", "shape": list(scaled.shape), "datatype": "FP32",
                            "data": scaled.astype(np.float32).tolist()}]}
        answers = [httpx.post(f"{url}/v2/models/{isvc.NAME}/infer", json=body, timeout=60)
                   for url in (server.url, served.url("predictor-v1"))]
    finally:
        container.remove()
    assert [a.status_code for a in answers] == [200, 200], answers[0].text
    assert outputs(answers[0].json())["fraud_probability"].tolist() == \
        outputs(answers[1].json())["fraud_probability"].tolist()
