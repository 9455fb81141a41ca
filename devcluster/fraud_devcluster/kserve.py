"""KServe's CRDs, its `inferenceservice-config`, its admission webhooks and its controller manager,
all from the pinned github.com/kserve/kserve module, plus Knative Serving's CRDs and the config
maps KServe reads (from the Knative module KServe is built against). The webhooks' service references become loopback URLs signed by the
cluster's CA: KServe's defaulter and validator run on every InferenceService write."""
from __future__ import annotations

import base64
import shutil
from pathlib import Path

import yaml
from fraud.processes import free_port

from fraud_devcluster import gobuild, kubectl, servers
from fraud_devcluster.pki import LOOPBACK, Pki
from fraud_devcluster.versions import KNATIVE_SERVING, KSERVE

NAMESPACE = "kserve"
KSERVE_CRDS = ("inferenceservices", "trainedmodels", "clusterservingruntimes", "servingruntimes", "inferencegraphs",
               "clusterstoragecontainers")
KNATIVE_CRDS = ("service", "configuration", "revision", "route")
#: Knative Serving's config maps KServe's controller reads (the autoscaler's defaults).
KNATIVE_CONFIGMAPS = ("autoscaler", "defaults", "deployment", "features")


def crd_files() -> list[Path]:
    kserve = gobuild.module_dir(KSERVE.module, KSERVE.version) / "config" / "crd" / "full"
    knative = gobuild.module_dir(*KNATIVE_SERVING) / "config" / "core" / "300-resources"
    return ([kserve / f"serving.kserve.io_{name}.yaml" for name in KSERVE_CRDS[:-1]]
            + [kserve / "clusterstoragecontainer" / "serving.kserve.io_clusterstoragecontainers.yaml"]
            + [knative / f"{name}.yaml" for name in KNATIVE_CRDS])


def webhook_configurations(port: int, pki: Pki) -> list[dict]:
    """KServe's config/webhook/manifests.yaml with each service reference turned into a loopback URL."""
    source = gobuild.module_dir(KSERVE.module, KSERVE.version) / "config" / "webhook" / "manifests.yaml"
    ca_bundle = base64.b64encode(pki.ca.read_bytes()).decode()
    documents = [d for d in yaml.safe_load_all(source.read_text()) if d]
    for document in documents:
        for webhook in document["webhooks"]:
            path = webhook["clientConfig"]["service"]["path"]
            webhook["clientConfig"] = {"url": f"https://{LOOPBACK}:{port}{path}", "caBundle": ca_bundle}
    return documents


def install(kubeconfig: Path) -> None:
    """CRDs (server-side: KServe's are too big for client-side apply's annotation), then the
    namespace, the controller's config map and the default storage container, as KServe ships them."""
    files = crd_files()
    kubectl.apply(kubeconfig, *files, server_side=True)
    kubectl.wait_established(kubeconfig, [f"{name}.serving.kserve.io" for name in KSERVE_CRDS]
                             + [f"{name}s.serving.knative.dev" for name in KNATIVE_CRDS])
    kubectl.apply_documents(kubeconfig, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
                                         for name in (NAMESPACE, "knative-serving")])
    configmap = gobuild.module_dir(KSERVE.module, KSERVE.version) / "config" / "configmap" / "inferenceservice.yaml"
    knative = gobuild.module_dir(*KNATIVE_SERVING) / "config" / "core" / "configmaps"
    kubectl.apply(kubeconfig, configmap, *[knative / f"{name}.yaml" for name in KNATIVE_CONFIGMAPS], server_side=True)
    # The ClusterStorageContainer `default` (kustomize sets its image): the storage initializer KServe's
    # pod webhook injects for an s3:// model, as config/base installs it.
    storage = gobuild.module_dir(KSERVE.module, KSERVE.version) / "config" / "storagecontainers"
    kubectl.run(kubeconfig, "apply", "-k", str(storage))


def start_controller(directory: Path, kubeconfig: Path, pki: Pki, progress=print) -> servers.Started:
    """The manager with its webhook server on a loopback port, then the webhook configurations that
    point there. Ready when its own /readyz (the webhook server started) answers."""
    binary = gobuild.build(KSERVE, progress)
    webhook_port, probe_port = free_port(), free_port()
    # controller-runtime reads the serving certificate from $TMPDIR/k8s-webhook-server/serving-certs
    tmp = directory / "kserve-tmp"
    certs = tmp / "k8s-webhook-server" / "serving-certs"
    certs.mkdir(parents=True, exist_ok=True)
    shutil.copy(pki.path("webhook.crt"), certs / "tls.crt")
    shutil.copy(pki.path("webhook.key"), certs / "tls.key")
    manager = servers.spawn("kserve-controller-manager", [
        str(binary), "--metrics-addr", "0", "--health-probe-addr", f"{LOOPBACK}:{probe_port}",
        "--webhook-port", str(webhook_port), "--leader-elect=false"], directory / "logs",
        env={"KUBECONFIG": str(kubeconfig), "POD_NAMESPACE": NAMESPACE, "TMPDIR": str(tmp)})
    servers.wait_until(manager, lambda: servers.http_ok(f"http://{LOOPBACK}:{probe_port}/readyz"))
    kubectl.apply_documents(kubeconfig, webhook_configurations(webhook_port, pki))
    return manager
