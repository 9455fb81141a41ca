"""Child processes on loopback: a free port, who holds a taken one, a server process that is ready
when an HTTP path answers 200, stopping it, the end of its log.

Generic (no project imports): the control plane's local runtime
(`fraud_control.local_runtime.servers` starts the servers), the dev cluster, the pipeline's
container runner, the benchmarks and the tests use it.
"""
from __future__ import annotations

import ctypes
import errno
import os
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from fraud.waiting import poll

LOOPBACK = "127.0.0.1"
ALL_INTERFACES = "0.0.0.0"  # where KServe's HTTP server listens
READY_TIMEOUT_SECONDS = 180.0
POLL_SECONDS = 0.1


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


class PortInUse(ValueError):
    """A port a server needs is taken; the message names the port and the process holding it."""


def port_holder(port: int) -> str | None:
    """`pid N (command)` of the process listening on TCP `port`, as /proc shows it (None if unseen)."""
    sockets = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()  # local_address is HEXIP:HEXPORT, state 0A is LISTEN, field 9 the inode
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                sockets.add(f"socket:[{fields[9]}]")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or not sockets:
            continue
        try:
            if any(os.readlink(fd) in sockets for fd in (proc / "fd").iterdir()):
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                return f"pid {proc.name} ({command[:100]})"
        except OSError:  # the process ended or hides its descriptors
            continue
    return None


def check_port_free(port: int, option: str | None = None) -> None:
    """Raise PortInUse naming the holder when `port` cannot be bound on all interfaces, as KServe binds it
    (SO_REUSEADDR as uvicorn sets it, so a closed connection in TIME_WAIT does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((ALL_INTERFACES, port))
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise PortInUse(f"{option or 'port'} {port}: cannot listen there ({error.strerror}); "
                                f"{'pass another ' + option if option else 'use another port'}") from None
            holder = port_holder(port) or "another process"
            instead = f" or pass another {option}" if option else ""
            raise PortInUse(f"{option or 'port'} {port}: already in use by {holder}; stop that process{instead}") \
                from None


def die_with_parent() -> None:
    """`preexec_fn` for children: SIGTERM when the parent dies, even by SIGKILL (a child outliving
    a killed runtime would hold its port)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class ServerFailed(RuntimeError):
    """A server process exited or did not turn ready; the message holds the end of its log."""

    def __init__(self, message: str, log_path: Path | None = None) -> None:
        super().__init__(message)
        self.log_path = log_path

    def one_line(self) -> str:
        """What failed, the last line its log has (usually the exception), and where the log is."""
        summary = str(self).splitlines()[0].rstrip(":")
        if self.log_path is None:
            return summary
        last = next((line.strip() for line in reversed(log_tail(self.log_path, 30).splitlines()) if line.strip()), "")
        return f"{summary} ({last}); full log: {self.log_path}"


@dataclass
class ServerProcess:
    role: str
    process: subprocess.Popen
    port: int
    model_name: str
    log_path: Path
    args: list[str] = field(default_factory=list)
    ready_path: str | None = None  # None: KServe's /v2/models/<name>/ready

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def infer_url(self) -> str:
        return f"{self.url}/v2/models/{self.model_name}/infer"

    def ready(self) -> bool:
        path = self.ready_path or f"/v2/models/{self.model_name}/ready"
        try:
            return httpx.get(f"{self.url}{path}", timeout=2).status_code == 200
        except (httpx.HTTPError, OSError):
            return False

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> ServerProcess:
        def exited() -> None:
            if not self.alive():
                raise ServerFailed(f"{self.role} on port {self.port} exited with {self.process.returncode}:\n"
                                   f"{self.log_tail()}", self.log_path)

        if not poll(self.ready, timeout_s=timeout, poll_s=POLL_SECONDS, give_up=exited):
            self.stop()
            raise ServerFailed(f"{self.role} on port {self.port} not ready after {timeout:.0f} s:\n"
                               f"{self.log_tail()}", self.log_path)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        stop_process(self.process, timeout)

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.log_path, lines)


def stop_process(process: subprocess.Popen | None, timeout: float) -> None:
    """SIGTERM, then SIGKILL if it is still running after `timeout` seconds."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def log_tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def stop_all(servers: list[ServerProcess]) -> None:
    for server in servers:
        if server.alive():
            server.process.terminate()
    for server in servers:
        server.stop()
