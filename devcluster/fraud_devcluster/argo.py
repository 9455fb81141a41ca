"""Argo Rollouts' analysis controller and its CRDs, from the pinned github.com/argoproj/argo-rollouts
module: the real judge of AnalysisRuns whose `web` metric reads our analysis endpoint.

Only the analysis controller runs (`--controllers analysis`): it measures AnalysisRuns and needs no
Rollout, ReplicaSet, Ingress, service mesh or SMI API (the full manager waits for those informers).
Namespaced (`--namespaced` + `--namespace`), so it needs no cluster-wide RBAC and leaves other
tests' namespaces alone."""
from __future__ import annotations

from pathlib import Path

from fraud.processes import free_port

from fraud_devcluster import gobuild, kubectl, servers
from fraud_devcluster.pki import LOOPBACK
from fraud_devcluster.versions import ARGO_ROLLOUTS

CRD_FILES = ("analysis-run-crd.yaml", "analysis-template-crd.yaml", "cluster-analysis-template-crd.yaml")
CRDS = ("analysisruns.argoproj.io", "analysistemplates.argoproj.io", "clusteranalysistemplates.argoproj.io")


def crd_files() -> list[Path]:
    source = gobuild.module_dir(ARGO_ROLLOUTS.module, ARGO_ROLLOUTS.version, toolchain=ARGO_ROLLOUTS.toolchain)
    return [source / "manifests" / "crds" / name for name in CRD_FILES]


def install(kubeconfig: Path) -> None:
    """The analysis CRDs as Argo ships them (server-side: they are too big for client-side apply's
    last-applied annotation), until established."""
    kubectl.apply(kubeconfig, *crd_files(), server_side=True)
    kubectl.wait_established(kubeconfig, list(CRDS))


def start_controller(directory: Path, kubeconfig: Path, namespace: str, progress=print) -> servers.Started:
    """The controller on `namespace`, ready when its /healthz answers (its informers sync after;
    an AnalysisRun created before then is measured once they have)."""
    binary = gobuild.build(ARGO_ROLLOUTS, progress)
    metrics_port, healthz_port = free_port(), free_port()
    started = servers.spawn(f"rollouts-controller-{namespace}", [
        str(binary), "--kubeconfig", str(kubeconfig), "--namespace", namespace, "--namespaced",
        "--controllers", "analysis", "--leader-elect=false",
        "--metricsPort", str(metrics_port), "--healthzPort", str(healthz_port)], directory / "logs",
        # where it looks for its argo-rollouts-config map (absent: no plugins), instead of "argo-rollouts"
        env={"POD_NAMESPACE": namespace})
    servers.wait_until(started, lambda: servers.http_ok(f"http://{LOOPBACK}:{healthz_port}/healthz"))
    return started
