"""The prediction log across a promote and a rollback under live traffic (issue 19, finding 9).

`serve` with v1 rolled out and v2 as a canary writes its prediction log through the sink it runs;
a client thread sends requests with transaction ids while `fraud-rollout canary promote` and then
`canary rollback` change the models the sink reports on. Every request the client got a 200 for
is in the log with its response, no request event is left without one, and `canary analyze` over
the log counts no unattributed failures. `serve` is stopped right after the rollback, as the demo
stops it right after its promote: what is still queued must reach the store on the way out.
"""
from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from fraud.protocol import request_body
from fraud.schema import FEATURES

from tests.integration.serving_fixtures import start_local_runtime
from tests.integration.test_canary_analysis import pipeline_report  # noqa: F401
from tests.prediction_log import orphan_requests

pytestmark = pytest.mark.integration
ROWS = 3  # rows per request: a lost event shows as rows, as the 168 rows of 7 requests did


class LiveClient:
    """Requests with transaction ids from a thread, counting what came back."""

    def __init__(self, infer_url: str, raw: np.ndarray) -> None:
        self.infer_url, self.raw = infer_url, raw
        self.answered: Counter = Counter()  # model_version → requests answered 200
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._send, name="live-client", daemon=True)

    @property
    def requests(self) -> int:
        return sum(self.answered.values())

    def _send(self) -> None:
        with httpx.Client(timeout=30) as client:
            i = 0
            while not self._stop.is_set():
                rows = self.raw[(i * ROWS) % (len(self.raw) - ROWS):][:ROWS]
                body = request_body(rows, f"live-{i}", [f"live-{i}-{row}" for row in range(ROWS)])
                try:
                    response = client.post(self.infer_url, json=body, headers={"Ce-Id": f"live-{i}"})
                except httpx.HTTPError as error:
                    self.failures.append(f"live-{i}: {type(error).__name__} {error}")
                else:
                    if response.status_code == 200:
                        self.answered[response.json()["model_version"]] += 1
                    else:
                        self.failures.append(f"live-{i}: {response.status_code} {response.text[:200]}")
                i += 1

    def wait_for(self, more: int, timeout: float = 60.0) -> None:
        """Until `more` requests past the current count have been answered."""
        target, deadline = self.requests + more, time.monotonic() + timeout
        while self.requests < target:
            assert time.monotonic() < deadline, f"{self.requests} of {target} requests answered after {timeout:g} s"
            time.sleep(0.02)

    def __enter__(self) -> LiveClient:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


@pytest.fixture
def runtime(tiny_run, tmp_path) -> Iterator:
    with start_local_runtime(tmp_path / "state", tiny_run.v1, tiny_run.v2, 50, tmp_path / "logs", shadow_percent=0,
                             prediction_log=tmp_path / "prediction-log.sqlite") as handle:
        yield handle


def change_models(runtime, client: LiveClient, action: str, after: int) -> None:
    """`fraud-rollout canary <action>` while the client sends, then `after` requests on the new split."""
    client.wait_for(20)
    done = runtime.cli("canary", action, "--target", "local")
    assert done.returncode == 0, done.stderr
    runtime.wait_applied()
    client.wait_for(after)


def test_every_request_keeps_its_response_across_a_promote_and_a_rollback(runtime, tiny_run, tmp_path,
                                                                          pipeline_report):  # noqa: F811
    raw = tiny_run.windows["holdout"].loc[:, list(FEATURES)].to_numpy(dtype=np.float64)
    store = tmp_path / "prediction-log.sqlite"
    with LiveClient(runtime.infer_url, raw) as client:
        change_models(runtime, client, "promote", after=40)
        change_models(runtime, client, "rollback", after=5)
    runtime.process.send_signal(signal.SIGTERM)  # as the demo ends: the transformer flushes on its way out
    assert runtime.process.wait(60) == 0
    assert client.failures == [], client.failures[:5]
    assert set(client.answered) == {"v1", "v2"}

    with sqlite3.connect(store) as db:
        events = dict(db.execute("SELECT event_type, COUNT(*) FROM events GROUP BY event_type").fetchall())
        per_version = dict(db.execute("SELECT model_version, COUNT(DISTINCT event_id) FROM predictions "
                                      "GROUP BY model_version").fetchall())
    orphans = orphan_requests(store)
    assert orphans == 0, f"{orphans} request events without a response"
    assert events == {"request": client.requests, "response": client.requests}
    assert per_version == dict(client.answered)

    analysis_path = tmp_path / "analysis.json"
    done = runtime.cli("canary", "analyze", "--store", str(store), "--since", "1h", "--report", str(pipeline_report),
                       "--analysis-out", str(analysis_path))
    assert done.returncode == 0, done.stderr
    assert "unattributed failures" not in done.stdout
    online = json.loads(analysis_path.read_text())["online"]
    assert {version: m["errors"] for version, m in online.items()} == {"v1": 0, "v2": 0}
    assert {version: m["requests"] for version, m in online.items()} == {
        version: n * ROWS for version, n in client.answered.items()}
