"""An S3-compatible server on loopback for tests: moto's server mode (a real S3 HTTP API), run
as a subprocess, no Docker. Skips when moto is not installed."""
from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

MOTO = "moto[server]==5.2.5"


def _moto_command() -> list[str] | None:
    if importlib.util.find_spec("moto") and importlib.util.find_spec("flask"):
        return [sys.executable, "-m", "moto.server"]
    found = shutil.which("moto_server")
    return [found] if found else None


@contextmanager
def moto_s3_server(start_timeout_s: float = 30.0) -> Iterator[str]:
    """Yields the endpoint `127.0.0.1:PORT` once the server answers HTTP."""
    command = _moto_command()
    if command is None:
        pytest.skip(f"no S3-compatible server on this machine: add {MOTO} to the dev dependencies "
                    "(or put a moto_server on PATH)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([*command, "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"127.0.0.1:{port}"
    deadline = time.monotonic() + start_timeout_s
    try:
        while True:  # readiness: the server answers HTTP
            try:
                urllib.request.urlopen(f"http://{endpoint}/", timeout=1).close()
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"S3 server did not start (exit code {server.poll()})") from None
                time.sleep(0.05)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)
