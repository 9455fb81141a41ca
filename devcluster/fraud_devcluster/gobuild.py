"""Build a pinned Go server once and cache the binary: `~/.cache/fraud-rollout/go/<name>-<version>/`.

Each server is built inside a small module of its own that requires the pinned version, because
`go install module@version` refuses modules whose go.mod has replace directives (KServe's and
Kubernetes' do). A server whose go.mod asks for a newer Go than the machine's (Argo Rollouts') is
built with the toolchain its `GoServer` names, through GOTOOLCHAIN (the go command takes it from the
module proxy, once). A lock file keeps parallel test runs from building the same binary twice.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from fraud_devcluster.versions import GoServer

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fraud-rollout" / "go"


class BuildFailed(RuntimeError):
    """`go` is missing or a build failed; the message names the server and the log."""


def _go() -> str:
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        raise BuildFailed("the Go toolchain is not on PATH (nor /usr/local/go/bin/go); install Go 1.26 to build "
                          "the control plane's servers")
    return go


def _run(args: list[str], cwd: Path, log: Path, env: dict[str, str]) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(args)}\n")
        out.flush()
        done = subprocess.run(args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env, check=False)
    if done.returncode != 0:
        tail = log.read_text().splitlines()[-5:]
        raise BuildFailed(f"{' '.join(args[:3])} failed in {cwd} (exit {done.returncode}); last lines of {log}:\n"
                          + "\n".join(tail))


def module_dir(module: str, version: str, go: str | None = None, toolchain: str | None = None) -> Path:
    """The downloaded source of `module@version` in the module cache (read-only); `toolchain` for a
    module whose go.mod asks for a newer Go (the download refuses it otherwise)."""
    env = {**os.environ, "GOTOOLCHAIN": toolchain} if toolchain else None
    out = subprocess.run([go or _go(), "mod", "download", "-json", f"{module}@{version}"], capture_output=True,
                         text=True, check=False, env=env)
    info = json.loads(out.stdout or "{}")
    if out.returncode != 0 or "Dir" not in info:
        raise BuildFailed(f"go mod download {module}@{version} failed: {info.get('Error') or out.stderr.strip()}")
    return Path(info["Dir"])


def staging_replaces(server: GoServer, go: str) -> list[tuple[str, str]]:
    """k8s.io/kubernetes' `k8s.io/x => ./staging/src/k8s.io/x` replaces, pointed at the proxy's v0.<minor>."""
    gomod = (module_dir(server.module, server.version, go).joinpath("go.mod")).read_text()
    staged = re.findall(r"^\s*(k8s\.io/[\w.-]+) => \./staging/", gomod, flags=re.MULTILINE)
    return [(name, f"{name}@v0{server.version[2:]}") for name in staged]


def _replaces(server: GoServer, go: str) -> list[tuple[str, str]]:
    return list(server.replaces) or (staging_replaces(server, go) if server.module == "k8s.io/kubernetes" else [])


def _prepare(server: GoServer, work: Path, go: str, env: dict[str, str]) -> None:
    """The wrapper module: init, the replaces, `go get` (downloads; network-bound)."""
    log = work / "build.log"
    if not (work / "go.mod").exists():
        _run([go, "mod", "init", f"fraud-rollout.local/{server.name}"], work, log, env)
    for old, new in _replaces(server, go):
        _run([go, "mod", "edit", f"-replace={old}={new}"], work, log, env)
    _run([go, "get", f"{server.package}@{server.version}"], work, log, env)
    (work / ".prepared").touch()


def _env(server: GoServer) -> dict[str, str]:
    toolchain = {"GOTOOLCHAIN": server.toolchain} if server.toolchain else {}
    return {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod -buildvcs=false", **toolchain}


def build(server: GoServer, progress=print) -> Path:
    """The cached binary of `server`, built first if absent."""
    work = CACHE / server.key
    binary = work / "bin" / server.name
    if binary.exists():
        return binary
    work.mkdir(parents=True, exist_ok=True)
    with (work / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.exists():  # built by whoever held the lock
            return binary
        go, env, log = _go(), _env(server), work / "build.log"
        progress(f"building {server.name} {server.version} from {server.module} (once; log: {log})")
        started = time.monotonic()
        if not (work / ".prepared").exists():
            _prepare(server, work, go, env)
        _run([go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(binary) + ".tmp", server.package], work, log, env)
        os.replace(str(binary) + ".tmp", binary)
        progress(f"built {server.name} in {time.monotonic() - started:.0f} s")
    return binary


def build_all(servers: tuple[GoServer, ...], progress=print) -> list[Path]:
    """Every server: all downloads at once (the network, not the 2 cores, is their limit), then
    the builds one after another (each already uses every core)."""
    from concurrent.futures import ThreadPoolExecutor

    missing = [s for s in servers if not (CACHE / s.key / "bin" / s.name).exists()
               and not (CACHE / s.key / ".prepared").exists()]
    go = _go()
    for server in missing:
        (CACHE / server.key).mkdir(parents=True, exist_ok=True)
    if missing:
        progress(f"downloading the modules of {', '.join(s.name for s in missing)}")
    with ThreadPoolExecutor(max_workers=max(1, len(missing))) as pool:
        list(pool.map(lambda s: _prepare(s, CACHE / s.key, go, _env(s)), missing))
    return [build(server, progress) for server in servers]


def main() -> int:
    """`python -m fraud_devcluster.gobuild`: build every server (CI warms the cache with it)."""
    from fraud_devcluster.versions import SERVERS

    try:
        for binary in build_all(SERVERS, progress=lambda line: print(line, flush=True)):
            print(binary)
    except BuildFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
