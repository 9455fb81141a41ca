"""Start the cluster's server processes in their own sessions (they outlive `fraud-rollout cluster
up`, which returns once all are ready), wait on each one's own readiness endpoint, stop them."""
from __future__ import annotations

import os
import signal
import ssl
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from fraud.processes import die_with_parent, log_tail
from fraud.waiting import poll

READY_TIMEOUT_S = 120.0
#: Set by `tie_to_this_process()`: servers get SIGTERM when the process that started them dies, so
#: a killed test run leaves no cluster behind (`make cluster`'s servers outlive the command).
_TIED = False


def tie_to_this_process() -> None:
    global _TIED
    _TIED = True


class ClusterFailed(RuntimeError):
    """A server of the cluster did not start; the message names it and the end of its log."""


@dataclass(frozen=True)
class Started:
    name: str
    pid: int
    log: Path


def spawn(name: str, args: list[str], log_dir: Path, env: dict[str, str] | None = None) -> Started:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env={**os.environ, **(env or {})}, start_new_session=True,
                                   preexec_fn=die_with_parent if _TIED else None)
    return Started(name, process.pid, log)


def group_alive(pgid: int) -> bool:
    """Whether any process of process group `pgid` still runs (zombies count as gone): a server's
    children (a Go server's, podman's conmon) can outlive its leader."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def wait_until(server: Started, ready: Callable[[], bool], timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll `ready()` until true; ClusterFailed when the process exits first or time runs out."""
    def exited() -> None:
        if not alive(server.pid):
            raise ClusterFailed(f"{server.name} exited while starting; end of {server.log}:\n"
                                f"{log_tail(server.log, 15)}")

    if not poll(ready, timeout_s=timeout_s, poll_s=0.2, give_up=exited):
        raise ClusterFailed(f"{server.name} not ready after {timeout_s:.0f} s; end of {server.log}:\n"
                            f"{log_tail(server.log, 15)}")


def http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        return httpx.get(url, timeout=2, verify=context or True).status_code == 200
    except (httpx.HTTPError, OSError, ssl.SSLError):
        return False


def stop(pid: int, timeout_s: float = 15.0) -> None:
    """SIGTERM the process group, SIGKILL what is left after `timeout_s`."""
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        if poll(lambda: not group_alive(pid), timeout_s=wait_s, poll_s=0.1):
            return
