"""Start `python -m fraud_serving …` servers on loopback, wait until they are ready, stop them.

Used by the local runtime, the benchmark and the tests. Readiness is KServe's own
`/v2/models/<name>/ready` (a predictor turns ready only after its artifact is loaded and checked);
the prediction-log sink's is its `/healthz` (200 once its store is open).
"""
from __future__ import annotations

import ctypes
import errno
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fraud_control.isvc import NAME

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
        try:
            path = self.ready_path or f"/v2/models/{self.model_name}/ready"
            with urllib.request.urlopen(f"{self.url}{path}", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> ServerProcess:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if not self.alive():
                raise ServerFailed(f"{self.role} on port {self.port} exited with {self.process.returncode}:\n"
                                   f"{self.log_tail()}", self.log_path)
            if time.monotonic() > deadline:
                self.stop()
                raise ServerFailed(f"{self.role} on port {self.port} not ready after {timeout:.0f} s:\n"
                                   f"{self.log_tail()}", self.log_path)
            time.sleep(POLL_SECONDS)  # between readiness polls, not instead of one
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


def start_server(role: str, args: list[str], log_dir: Path, model_name: str = NAME, port: int | None = None,
                 env: dict[str, str] | None = None, label: str | None = None,
                 port_option: str | None = None, python: str = sys.executable,
                 cwd: Path | None = None) -> ServerProcess:
    """Launch `python -m fraud_serving <role>` on a loopback port (gRPC off); does not wait.

    The port is checked first (PortInUse names its holder; `port_option` is the flag that chose it),
    so a taken port is one error line instead of a server that dies with a traceback in its log.
    `python` and `cwd`: another venv's interpreter, run outside the repository, prove that the serving
    image's package set is enough (`python -m` would import packages from the working directory)."""
    port = port or free_port()
    check_port_free(port, port_option)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{label or role}-{port}.log"
    command = [python, "-m", "fraud_serving", role, "--model_name", model_name,
               "--http_port", str(port), "--enable_grpc", "false", *args]
    # one BLAS thread per server: several servers share the cores (10,000 rows score in 15 ms with
    # one thread and 32 ms with OpenBLAS's default two on this shared 2-core machine)
    child_env = {"OPENBLAS_NUM_THREADS": "1", **os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=child_env, cwd=cwd, preexec_fn=die_with_parent)
    return ServerProcess(role, process, port, model_name, log_path, command)


def start_sink(store_url: str, log_dir: Path, *, retention_days: float | None = None, port: int | None = None,
               label: str = "prediction-log", niceness: int = 0, models: Sequence[Path] = (),
               models_file: Path | None = None, options: Sequence[str] = ()) -> ServerProcess:
    """Launch the prediction-log sink (`python -m fraud_control.prediction_sink`) on a loopback port
    writing to `store_url`; does not wait. `niceness` > 0 runs it at a lower CPU priority. `models`:
    the artifact roots whose feedback signals its /metrics reports (`--model`); or `models_file`, a
    JSON list of them it re-reads when it changes (`--models-file`); `options`, more of its flags."""
    port = port or free_port()
    check_port_free(port)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{label}-{port}.log"
    command = [sys.executable, "-m", "fraud_control.prediction_sink", "--store", store_url,
               "--host", LOOPBACK, "--port", str(port)]
    if retention_days is not None:
        command += ["--retention-days", f"{retention_days:g}"]
    for root in models:
        command += ["--model", str(root)]
    if models_file is not None:
        command += ["--models-file", str(models_file)]
    command += options

    def prepare() -> None:
        die_with_parent()
        if niceness:
            os.nice(niceness)

    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   preexec_fn=prepare)
    return ServerProcess("prediction-log sink", process, port, "", log_path, command, ready_path="/healthz")


def start_predictor(artifact_root: str | Path, log_dir: Path, **kwargs) -> ServerProcess:
    return start_server("predictor", ["--model_dir", str(artifact_root)], log_dir, **kwargs)


def start_transformer(contract_dir: str | Path, log_dir: Path, predictor_url: str | None = None,
                      routes_file: Path | None = None, max_rows: int | None = None,
                      shadow_percent: float | None = None, pairs_log: Path | None = None,
                      logger_url: str | None = None, **kwargs) -> ServerProcess:
    """`shadow_percent` None: the transformer's default share (0 turns shadow scoring off).
    `logger_url`: the prediction-log sink the transformer posts its CloudEvents to, as KServe's
    agent would (None: no prediction log)."""
    args = ["--predictor_protocol", "v2", "--contract_dir", str(contract_dir)]
    if routes_file is not None:
        args += ["--routes_file", str(routes_file)]
    else:
        args += ["--predictor_host", str(predictor_url).removeprefix("http://")]
    if max_rows is not None:
        args += ["--max_rows", str(max_rows)]
    if shadow_percent is not None:
        args += ["--shadow_percent", f"{shadow_percent:g}"]
    if pairs_log is not None:
        args += ["--pairs_log", str(pairs_log)]
    if logger_url is not None:
        args += ["--logger_url", logger_url]
    return start_server("transformer", args, log_dir, **kwargs)


def stop_all(servers: list[ServerProcess]) -> None:
    for server in servers:
        if server.alive():
            server.process.terminate()
    for server in servers:
        server.stop()
