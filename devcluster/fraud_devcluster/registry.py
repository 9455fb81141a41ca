"""A container registry on loopback (CNCF Distribution, built from its Go module): the place the
README's cluster path pushes its images to on this machine. Plain HTTP on 127.0.0.1, so podman is
told it is insecure through a registries.conf of its own (CONTAINERS_REGISTRIES_CONF), never the
machine's."""
from __future__ import annotations

from pathlib import Path

from fraud.processes import free_port

from fraud_devcluster import gobuild, servers
from fraud_devcluster.pki import LOOPBACK
from fraud_devcluster.versions import REGISTRY


def start(directory: Path, progress=print) -> tuple[servers.Started, str]:
    """The registry's process and `host:port`, once its API (`/v2/`) answers; and a registries.conf
    in `directory` that lets podman push to it over HTTP (`registries_conf`)."""
    binary = gobuild.build(REGISTRY, progress)
    address = f"{LOOPBACK}:{free_port()}"
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "registry.yml"
    config.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: "
                      f"{directory / 'data'}\nhttp:\n  addr: {address}\n")
    (directory / "registries.conf").write_text(f'[[registry]]\nlocation = "{address}"\ninsecure = true\n')
    started = servers.spawn("registry", [str(binary), "serve", str(config)], directory / "logs")
    servers.wait_until(started, lambda: servers.http_ok(f"http://{address}/v2/"))
    return started, address


def registries_conf(directory: Path) -> Path:
    return directory / "registries.conf"
