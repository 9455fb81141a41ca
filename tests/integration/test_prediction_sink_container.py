"""The prediction-log sink's container, outside Docker: the command line of the rendered Deployment
(manifests/prediction-log), with the Secret's store URL expanded into its args as the kubelet expands
`$(VAR)`, runs as a process against a real PostgreSQL; its probes answer on the probe's port, a
CloudEvent posted to it lands in the store, and readiness follows the store while liveness does not."""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import httpx
import psycopg
import pytest
from fraud.inference_log import RESPONSE_EVENT
from fraud_control.prediction_log.store import open_store

from tests.manifests import PREDICTION_LOG, STORE_SECRET, STORE_SECRET_KEY, one, render
from tests.pod_command import command_line, container_port
from tests.prediction_log import response_body
from tests.sink_process import binary, kserve_event, start_sink_command

pytestmark = pytest.mark.integration


def probe(container: dict, name: str) -> tuple[str, int]:
    """(path, port number) of one of the container's HTTP probes."""
    http_get = container[name]["httpGet"]
    return http_get["path"], container_port(container, http_get["port"])


def test_the_sinks_container_command_serves_and_stores_as_its_probes_say(postgres_server, postgres_url, tmp_path):
    (container,) = one(render(PREDICTION_LOG), "Deployment")["spec"]["template"]["spec"]["containers"]
    argv, container_env = command_line(container, {STORE_SECRET: {STORE_SECRET_KEY: postgres_url}})
    assert argv[:3] == ["python", "-m", "fraud_control.prediction_log.sink"] and "--store" not in argv
    assert container_env == {"PREDICTION_LOG_STORE_URL": postgres_url}  # the store the sink opens
    (ready_path, port), (alive_path, alive_port) = probe(container, "readinessProbe"), probe(container, "livenessProbe")
    assert probe(container, "startupProbe") == (alive_path, alive_port) and alive_port == port
    # `python` as the image's PATH finds it: this venv's, which holds the image's packages (and
    # PYTHONPATH, for the checkout's code); the container's env on top, as the kubelet sets it.
    env = {**os.environ, **container_env, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    sink = start_sink_command(argv, port, tmp_path / "sink.log", env=env, ready_path=ready_path)
    try:
        ready = httpx.get(f"{sink.url}{ready_path}", timeout=5)
        assert (ready.status_code, ready.json()) == (200, {"status": "ok", "store": "postgresql"})
        assert httpx.get(f"{sink.url}{alive_path}", timeout=5).status_code == 200
        headers, body = binary(kserve_event("c1", RESPONSE_EVENT, response_body([0.9, 0.1], "v2")))
        posted = httpx.post(f"{sink.url}/", headers=headers, content=body, timeout=10)
        assert (posted.status_code, posted.json()) == (200, {"accepted": 1, "duplicates": 0})
        with open_store(postgres_url) as store:
            assert store.counts()["per_version"] == {"v2": 2}
        # The store goes away: the pod leaves the Service (not ready) but is not restarted (alive).
        database = postgres_url.rsplit("/", 1)[1]
        with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
        not_ready = httpx.get(f"{sink.url}{ready_path}", timeout=15)
        assert not_ready.status_code == 503
        assert not_ready.json()["error"].startswith(f"postgresql://postgres@127.0.0.1:{postgres_server.port}/{database}: ")
        assert httpx.get(f"{sink.url}{alive_path}", timeout=5).status_code == 200
    finally:
        sink.stop()
    # uvicorn shuts down on SIGTERM (what the kubelet sends) and then re-raises it: ended, not killed
    assert sink.process.returncode == -signal.SIGTERM, sink.log.read_text()[-2000:]
