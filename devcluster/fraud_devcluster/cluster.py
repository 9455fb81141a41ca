"""`up`: the whole cluster in a directory (default `.fraud-rollout/cluster`), `down`: stop it.

`up` leaves `kubeconfig`, `env` (KUBECONFIG and MinIO's S3_* / AWS_* variables, for `set -a; .
env`) and `cluster.json` (pids, URLs) there, and returns once every server is ready: KServe's
webhooks answer and the Knative stand-in runs. A second `up` on a running cluster returns it; on a
stopped one it starts an empty cluster (ports change between starts, and etcd's data names them)."""
from __future__ import annotations

import json
import shlex
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fraud_devcluster import controlplane, kserve, minio, pki, servers

DEFAULT_DIR = Path(".fraud-rollout/cluster")


@dataclass(frozen=True)
class Cluster:
    directory: str
    url: str
    kubeconfig: str
    s3_endpoint: str
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def env_file(self) -> Path:
        return Path(self.directory) / "env"

    def environment(self) -> dict[str, str]:
        """KUBECONFIG and the S3 variables, as the env file holds them."""
        pairs = (line.removeprefix("export ").split("=", 1) for line in self.env_file.read_text().splitlines() if line)
        return {name: shlex.split(value)[0] if value else "" for name, value in pairs}

    def writes(self, namespace: str) -> list[dict]:
        """Completed writes to InferenceServices in `namespace`, from the API server's audit log:
        verb, subresource, code, user, userAgent and the request body each."""
        events = []
        for line in (Path(self.directory) / "logs" / "audit.log").read_text().splitlines():
            event = json.loads(line)
            ref = event.get("objectRef", {})
            if event.get("stage") == "ResponseComplete" and ref.get("namespace") == namespace:
                events.append({"verb": event["verb"], "subresource": ref.get("subresource", ""),
                               "code": event.get("responseStatus", {}).get("code"),
                               "user": event["user"]["username"], "userAgent": event.get("userAgent", ""),
                               "body": event.get("requestObject")})
        return events

    def running(self) -> bool:
        return bool(self.pids) and all(servers.alive(pid) for pid in self.pids.values())


def read(directory: Path = DEFAULT_DIR) -> Cluster | None:
    try:
        return Cluster(**json.loads((directory / "cluster.json").read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def _write_env(directory: Path, values: dict[str, str]) -> None:
    path = directory / "env"
    path.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in values.items()))
    path.chmod(0o600)


def start_standin(directory: Path, kubeconfig: Path, env: dict[str, str]) -> servers.Started:
    started = servers.spawn("knative-standin", [sys.executable, "-m", "fraud_devcluster.knative",
                                                "--kubeconfig", str(kubeconfig)], directory / "logs", env=env)
    log = started.log
    servers.wait_until(started, lambda: log.exists() and "reconciling" in log.read_text(errors="replace"))
    return started


def up(directory: Path = DEFAULT_DIR, progress=print) -> Cluster:
    directory = directory.resolve()
    existing = read(directory)
    if existing and existing.running():
        return existing
    if existing:
        down(directory)
    # A cluster starts empty: etcd's stored member URLs name the ports of the last start.
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    certificates = pki.create(directory / "pki")
    started: list[servers.Started] = []
    try:
        plane = controlplane.start(directory, certificates, progress)
        started += [plane.etcd, plane.apiserver]
        keys = minio.credentials()
        store, endpoint = minio.start(directory, keys, progress)
        started.append(store)
        env = {"KUBECONFIG": str(plane.kubeconfig), "S3_ENDPOINT": endpoint, **keys, "S3_USE_HTTPS": "0"}
        _write_env(directory, env)
        kserve.install(plane.kubeconfig)
        started.append(kserve.start_controller(directory, plane.kubeconfig, certificates, progress))
        started.append(start_standin(directory, plane.kubeconfig, env))
    except BaseException:
        for server in reversed(started):
            servers.stop(server.pid)
        raise
    cluster = Cluster(str(directory), plane.url, str(plane.kubeconfig), endpoint, {s.name: s.pid for s in started})
    (directory / "cluster.json").write_text(json.dumps(asdict(cluster), indent=2))
    return cluster


def down(directory: Path = DEFAULT_DIR) -> list[str]:
    """Stop every server of the cluster in `directory` (newest first); returns their names."""
    cluster = read(directory.resolve())
    if cluster is None:
        return []
    for pid in reversed(list(cluster.pids.values())):
        servers.stop(pid)
    (directory.resolve() / "cluster.json").unlink(missing_ok=True)
    return list(cluster.pids)
