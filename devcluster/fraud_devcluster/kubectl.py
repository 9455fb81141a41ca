"""kubectl against the cluster: how the setup applies manifests, as a user would."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import yaml
from fraud.waiting import poll

from fraud_devcluster.servers import ClusterFailed


def run(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    binary = shutil.which("kubectl")
    if binary is None:
        raise ClusterFailed("kubectl is not on PATH; install it (Debian: kubernetes-client) and retry")
    done = subprocess.run([binary, "--kubeconfig", str(kubeconfig), *args], input=stdin, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise ClusterFailed(f"kubectl {' '.join(args[:3])} failed: {done.stderr.strip()}")
    return done.stdout


def apply(kubeconfig: Path, *files: Path, server_side: bool = False) -> None:
    extra = ["--server-side", "--force-conflicts", "--field-manager", "fraud-devcluster"] if server_side else []
    run(kubeconfig, "apply", *extra, *[arg for f in files for arg in ("-f", str(f))])


def apply_documents(kubeconfig: Path, documents: list[dict]) -> None:
    run(kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump_all(documents))


def wait_established(kubeconfig: Path, crds: list[str], timeout_s: float = 60.0) -> None:
    """Until every CRD's Established condition is True (`kubectl wait` fails at once on a CRD
    that has no conditions yet)."""
    pending: list[str] = []

    def established() -> bool:
        items = json.loads(run(kubeconfig, "get", "crd", *crds, "-o", "json"))["items"]
        pending[:] = [i["metadata"]["name"] for i in items if not any(
            c["type"] == "Established" and c["status"] == "True" for c in (i.get("status") or {}).get("conditions") or [])]
        return not pending

    if not poll(established, timeout_s=timeout_s, poll_s=0.2):
        raise ClusterFailed(f"CRDs not established after {timeout_s:.0f} s: {', '.join(pending)}")
