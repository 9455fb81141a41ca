"""kubectl against the cluster: how the setup applies manifests, as a user would."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

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
