"""The prediction-log sink as its own process on a free loopback port (`python -m fraud_control.prediction_log.sink`),
and CloudEvents posted to it as KServe's agent and the local poster send them."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent
from fraud.processes import free_port

from tests.prediction_log import T0

READY_TIMEOUT_S = 30.0


@dataclass
class SinkProcess:
    process: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


def start_sink(store: str, log: Path, port: int | None = None, *extra: str) -> SinkProcess:
    port = port or free_port()
    return start_sink_command([sys.executable, "-m", "fraud_control.prediction_log.sink", "--store", store,
                               "--port", str(port), *extra], port, log)


def start_sink_command(argv: list[str], port: int, log: Path, env: dict[str, str] | None = None,
                       ready_path: str = "/healthz") -> SinkProcess:
    """Run `argv` (a sink listening on `port`) and return once GET `ready_path` on loopback is 200."""
    with log.open("ab") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    sink = SinkProcess(process, port, log)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise AssertionError(f"the sink exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{sink.url}{ready_path}", timeout=1).status_code == 200:
                return sink
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            sink.kill()
            raise AssertionError(f"the sink was not ready after {READY_TIMEOUT_S:.0f} s: {log.read_text()[-2000:]}")
        time.sleep(0.05)


def kserve_event(event_id: str, event_type: str, body: dict, at=T0) -> CloudEvent:
    """The CloudEvent KServe's agent builds (pkg/logger/worker.go): its attributes and extensions."""
    return CloudEvent({
        "specversion": "1.0", "id": event_id, "type": event_type,
        "source": "http://localhost:9081/", "time": at.isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json", "recordedtime": "2025-03-01T12:00:01.5Z",
        "inferenceservicename": "fraud-detector", "namespace": "fraud", "component": "transformer",
        "endpoint": "canary", "metadata": "{}"}, orjson.dumps(body))


def binary(event: CloudEvent) -> tuple[dict[str, str], bytes]:
    """Binary mode, as the agent sends it: `ce-*` headers, Content-Type of the request, the raw body."""
    return to_binary(event, data_marshaller=lambda data: data)


def structured(event: CloudEvent) -> tuple[dict[str, str], bytes]:
    return to_structured(event, data_marshaller=lambda data: orjson.loads(data))


def batch(events: list[CloudEvent]) -> tuple[dict[str, str], bytes]:
    items = [orjson.loads(structured(event)[1]) for event in events]
    return {"content-type": "application/cloudevents-batch+json"}, orjson.dumps(items)
