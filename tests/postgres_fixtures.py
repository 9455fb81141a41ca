"""PostgreSQL from Debian for the prediction-store tests: one server per session on a free loopback
port, a fresh database per test. A missing binary fails the test (`make test` installs `postgresql`)."""
from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from fraud.processes import die_with_parent, free_port

#: Debian installs the server outside PATH (`pg_config` may be absent).
DEBIAN_ROOT = Path("/usr/lib/postgresql")
OS_USER = "postgres"  # postgres refuses to run as root
READY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class PostgresServer:
    port: int
    data_dir: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{OS_USER}@127.0.0.1:{self.port}/{database}"


def postgres_bin() -> Path:
    """The directory holding initdb and postgres: `pg_config --bindir`, else Debian's newest version."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = Path(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True).stdout.strip())
        if (found / "initdb").exists():
            return found
    versions = sorted((d for d in DEBIAN_ROOT.glob("*/bin") if (d / "initdb").exists()),
                      key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)
    if not versions:
        pytest.fail(f"PostgreSQL's initdb not found (pg_config absent, nothing in {DEBIAN_ROOT}/*/bin): "
                    "apt-get install postgresql (make test does)")
    return versions[-1]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    binaries = postgres_bin()
    # Not under pytest's tmp dir: that one is root's, mode 0700, and the server runs as `postgres`.
    root = Path(tempfile.mkdtemp(prefix="fraud-postgres-"))
    shutil.chown(root, OS_USER, OS_USER)
    data_dir, log = root / "data", root / "postgres.log"
    subprocess.run(["runuser", "-u", OS_USER, "--", str(binaries / "initdb"), "-D", str(data_dir), "-U", OS_USER,
                    "--auth=trust", "-E", "UTF8", "--no-sync"], check=True, capture_output=True, timeout=120)
    port = free_port()
    with log.open("ab") as out:
        server = subprocess.Popen(
            [str(binaries / "postgres"), "-D", str(data_dir), "-p", str(port), "-k", str(root),
             "-c", "listen_addresses=127.0.0.1"],
            user=OS_USER, group=OS_USER, extra_groups=[], stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, preexec_fn=die_with_parent, cwd=root)
    running = PostgresServer(port, data_dir)
    try:
        _wait_ready(running, server, log)
        yield running
    finally:
        server.send_signal(2)  # SIGINT: PostgreSQL's fast shutdown
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(root, ignore_errors=True)


def _wait_ready(running: PostgresServer, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if server.poll() is not None:
            pytest.fail(f"postgres exited with {server.returncode}: {log.read_text()[-2000:]}")
        try:
            psycopg.connect(running.url(), connect_timeout=2).close()
            return
        except psycopg.OperationalError as error:
            if time.monotonic() > deadline:
                pytest.fail(f"postgres not ready on port {running.port} after {READY_TIMEOUT_S:.0f} s: {error}")
        time.sleep(0.05)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session's server, dropped after the test."""
    name = f"test_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield postgres_server.url(name)
    with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

