"""etcd and kube-apiserver on loopback, and an admin kubeconfig (client certificate in
system:masters). RBAC is the only authorizer, so a ServiceAccount token gets exactly what its
Roles grant. There is no kube-controller-manager: nothing garbage-collects or finalizes, so tests
use a namespace each instead of deleting."""
from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import yaml
from fraud.processes import free_port

from fraud_devcluster import gobuild, servers
from fraud_devcluster.pki import LOOPBACK, Pki
from fraud_devcluster.versions import ETCD, KUBE_APISERVER

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
#: Every write to an InferenceService, one JSON line each in logs/audit.log: tests count what a
#: command sent (verb, user, user agent, and the request body: a rollout's canaryTrafficPercent
#: sequence) from the API server's own record.
AUDIT_POLICY = {"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"], "rules": [
    {"level": "Request", "verbs": ["create", "update", "patch", "delete"],
     "resources": [{"group": "serving.kserve.io", "resources": ["inferenceservices"]}]},
    {"level": "None"}]}


@dataclass(frozen=True)
class ControlPlane:
    url: str
    kubeconfig: Path
    etcd: servers.Started
    apiserver: servers.Started


def start_etcd(directory: Path, progress=print) -> tuple[servers.Started, str]:
    binary = gobuild.build(ETCD, progress)
    client, peer = free_port(), free_port()
    url = f"http://{LOOPBACK}:{client}"
    started = servers.spawn("etcd", [
        str(binary), "--name", "devcluster", "--data-dir", str(directory / "etcd"),
        "--listen-client-urls", url, "--advertise-client-urls", url,
        "--listen-peer-urls", f"http://{LOOPBACK}:{peer}", "--initial-advertise-peer-urls", f"http://{LOOPBACK}:{peer}",
        "--initial-cluster", f"devcluster=http://{LOOPBACK}:{peer}",
        # a throwaway cluster: no fsync (a test's crash loses nothing that matters)
        "--unsafe-no-fsync", "--log-level", "warn"], directory / "logs")
    servers.wait_until(started, lambda: servers.http_ok(f"{url}/health"))
    return started, url


def write_kubeconfig(path: Path, url: str, pki: Pki, namespace: str = "default") -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "devcluster",
        "clusters": [{"name": "devcluster", "cluster": {"server": url, "certificate-authority": str(pki.ca)}}],
        "users": [{"name": "admin", "user": {"client-certificate": str(pki.path("admin.crt")),
                                             "client-key": str(pki.path("admin.key"))}}],
        "contexts": [{"name": "devcluster", "context": {"cluster": "devcluster", "user": "admin",
                                                        "namespace": namespace}}]}))
    path.chmod(0o600)
    return path


def admin_tls(pki: Pki) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.load_cert_chain(str(pki.path("admin.crt")), str(pki.path("admin.key")))
    return context


def start(directory: Path, pki: Pki, progress=print) -> ControlPlane:
    """etcd, then kube-apiserver; returns once `/readyz` (RBAC bootstrap roles included) says ok."""
    binary = gobuild.build(KUBE_APISERVER, progress)
    etcd, etcd_url = start_etcd(directory, progress)
    port = free_port()
    url = f"https://{LOOPBACK}:{port}"
    policy = directory / "audit-policy.yaml"
    policy.write_text(yaml.safe_dump(AUDIT_POLICY))
    apiserver = servers.spawn("kube-apiserver", [
        str(binary), "--etcd-servers", etcd_url, "--bind-address", LOOPBACK, "--advertise-address", LOOPBACK,
        "--secure-port", str(port), "--tls-cert-file", str(pki.path("apiserver.crt")),
        "--tls-private-key-file", str(pki.path("apiserver.key")), "--client-ca-file", str(pki.ca),
        "--service-account-key-file", str(pki.path("sa.pub")),
        "--service-account-signing-key-file", str(pki.path("sa.key")),
        "--service-account-issuer", SERVICE_ACCOUNT_ISSUER, "--authorization-mode", "RBAC",
        "--service-cluster-ip-range", "10.96.0.0/16", "--allow-privileged=true", "--profiling=false",
        "--cert-dir", str(directory / "apiserver-certs"), "--audit-policy-file", str(policy),
        "--audit-log-path", str(directory / "logs" / "audit.log"), "--audit-log-format", "json",
        "--audit-log-mode", "blocking"], directory / "logs")
    servers.wait_until(apiserver, lambda: servers.http_ok(f"{url}/readyz", admin_tls(pki)))
    kubeconfig = write_kubeconfig(directory / "kubeconfig", url, pki)
    return ControlPlane(url, kubeconfig, etcd, apiserver)
