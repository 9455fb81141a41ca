"""A MinIO server on loopback with credentials made for this cluster (never written to the
repository: they live in the cluster directory's env file, mode 0600)."""
from __future__ import annotations

import secrets
from pathlib import Path

from fraud.processes import free_port

from fraud_devcluster import gobuild, servers
from fraud_devcluster.pki import LOOPBACK
from fraud_devcluster.versions import MINIO


def credentials() -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": f"devcluster-{secrets.token_hex(4)}", "AWS_SECRET_ACCESS_KEY": secrets.token_hex(20)}


def start(directory: Path, keys: dict[str, str], progress=print) -> tuple[servers.Started, str]:
    """Returns the process and `host:port` of the S3 API, once /minio/health/ready answers."""
    binary = gobuild.build(MINIO, progress)
    port, console = free_port(), free_port()
    endpoint = f"{LOOPBACK}:{port}"
    started = servers.spawn("minio", [
        str(binary), "server", str(directory / "minio-data"), "--address", endpoint,
        "--console-address", f"{LOOPBACK}:{console}", "--quiet"], directory / "logs",
        env={"MINIO_ROOT_USER": keys["AWS_ACCESS_KEY_ID"], "MINIO_ROOT_PASSWORD": keys["AWS_SECRET_ACCESS_KEY"],
             "MINIO_BROWSER": "off", "MINIO_UPDATE": "off"})
    servers.wait_until(started, lambda: servers.http_ok(f"http://{endpoint}/minio/health/ready"))
    return started, endpoint
