"""Real serving processes on loopback for integration tests (import the fixtures you use).

    from tests.integration.serving_fixtures import serving_stack, canary_runtime  # noqa: F401

- `start_stack(artifact_root, log_dir)`: a predictor and a transformer wired as KServe wires
  them in a cluster (`--predictor_host`), as a context manager.
- `start_local_runtime(state_dir, baseline, candidate, percent, log_dir)`: `fraud-rollout serve`
  (the local canary runtime) as a subprocess, as a context manager.
- fixtures `canary_runtime` (module: v1 rolled out, v2 at 20 %; no test may leave it otherwise),
  `fresh_canary_runtime` (the same, for one test: for a test that promotes, rolls back or kills
  a process, so that the module's tests pass in any order) and `serving_stack` (module: a transformer wired with `--predictor_host` to the
  runtime's v1 predictor, as KServe wires a cluster transformer). Sharing the predictors keeps a
  module to two TensorFlow process starts (≈ 15–25 s each on this machine). Import both into the
  same module: a fixture imported into two modules is set up once per module.

Readiness is polled on KServe's endpoints and on the runtime's applied generation; every process is
terminated on exit, whatever the test did.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from fraud.processes import POLL_SECONDS, READY_TIMEOUT_SECONDS, ServerFailed, ServerProcess, free_port, stop_all
from fraud_control.inferenceservice.local_state import LocalInferenceService
from fraud_control.local_runtime.runtime import read_runtime
from fraud_control.local_runtime.servers import start_predictor, start_transformer

REPO = Path(__file__).resolve().parents[2]
#: `fraud-rollout …` with this interpreter (what the console script runs)
FRAUD_ROLLOUT = [sys.executable, "-c", "import sys; from fraud_rollout.cli import main; sys.exit(main(sys.argv[1:]))"]


@dataclass(frozen=True)
class Endpoint:
    """A server some other fixture owns."""

    url: str
    model_name: str = "fraud-detector"

    @property
    def infer_url(self) -> str:
        return f"{self.url}/v2/models/{self.model_name}/infer"


@dataclass
class Stack:
    predictor: ServerProcess | Endpoint
    transformer: ServerProcess


@contextmanager
def start_stack(artifact_root: Path, log_dir: Path, max_rows: int | None = None) -> Iterator[Stack]:
    predictor = start_predictor(artifact_root, log_dir)
    transformer = start_transformer(artifact_root, log_dir, predictor_url=predictor.url, max_rows=max_rows)
    try:
        predictor.wait_ready()
        transformer.wait_ready()
        yield Stack(predictor, transformer)
    finally:
        stop_all([transformer, predictor])


@dataclass
class LocalRuntimeHandle:
    process: subprocess.Popen
    state_dir: Path
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def infer_url(self) -> str:
        return f"{self.url}/v2/models/fraud-detector/infer"

    @property
    def service(self) -> LocalInferenceService:
        return LocalInferenceService(self.state_dir)

    def cli(self, *args: str, state_dir: bool = True) -> subprocess.CompletedProcess:
        """`fraud-rollout …` (with `--state-dir` of this runtime unless told otherwise)."""
        extra = ["--state-dir", str(self.state_dir)] if state_dir else []
        return subprocess.run([*FRAUD_ROLLOUT, *args, *extra],
                              capture_output=True, text=True, timeout=120, cwd=self.state_dir.parent)

    def wait_applied(self, generation: int | None = None, timeout: float = READY_TIMEOUT_SECONDS) -> dict:
        """Until `serve` reports the manifest's generation applied (its observedGeneration)."""
        deadline = time.monotonic() + timeout
        while True:
            wanted = generation
            if wanted is None and self.service.exists():  # serve may not have written it yet
                wanted = self.service.get()["metadata"]["generation"]
            runtime = read_runtime(self.state_dir)
            if wanted is not None and runtime.get("transformer") and runtime.get("appliedGeneration") == wanted:
                return runtime
            if self.process.poll() is not None:
                raise ServerFailed(f"fraud-rollout serve exited with {self.process.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise ServerFailed(f"generation {generation} not applied after {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(POLL_SECONDS)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def start_local_runtime(state_dir: Path, baseline: Path, candidate: Path | None, canary_percent: int,
                        log_dir: Path, drain_seconds: float = 2.0,
                        shadow_percent: float | None = None,
                        split_seed: int | None = None, prediction_log: Path | None = None
                        ) -> Iterator[LocalRuntimeHandle]:
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"serve-{port}.log"
    command = [*FRAUD_ROLLOUT, "serve", "--state-dir", str(state_dir),
               "--baseline", str(baseline), "--canary-percent", str(canary_percent), "--http-port", str(port),
               "--drain-seconds", str(drain_seconds)]
    if candidate is not None:
        command += ["--candidate", str(candidate)]
    if shadow_percent is not None:
        command += ["--shadow-percent", f"{shadow_percent:g}"]
    if prediction_log is not None:
        command += ["--prediction-log", str(prediction_log)]
    with open(log_path, "ab") as log:
        # run where the runtime's files are, not in the checkout: a developer's own .fraud-rollout
        # (after `make demo`) would otherwise be the default every command finds
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=state_dir.parent,
                                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
                                        **({} if split_seed is None else {"FRAUD_ROLLOUT_SPLIT_SEED": str(split_seed)})})
    handle = LocalRuntimeHandle(process, state_dir, port, log_path)
    try:
        handle.wait_applied()
        yield handle
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # serve stops its predictors and transformer
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


@pytest.fixture(scope="module")
def canary_runtime(tiny_run, tmp_path_factory) -> Iterator[LocalRuntimeHandle]:
    """`fraud-rollout serve`: v1 rolled out, v2 as a 20 % canary."""
    root = tmp_path_factory.mktemp("canary_runtime")
    with start_local_runtime(root / "state", tiny_run.v1, tiny_run.v2, 20, root / "logs") as handle:
        yield handle


@pytest.fixture
def fresh_canary_runtime(tiny_run, tmp_path) -> Iterator[LocalRuntimeHandle]:
    """`fraud-rollout serve` as `canary_runtime` starts it, for one test only: one that changes what
    the module's runtime serves (promotes, rolls back, kills a predictor), which every other test of
    the module would otherwise see, or not, depending on the order."""
    with start_local_runtime(tmp_path / "state", tiny_run.v1, tiny_run.v2, 20, tmp_path / "logs") as handle:
        yield handle


def predictor_of(runtime: LocalRuntimeHandle, model_version: str) -> Endpoint:
    """The runtime's predictor serving `model_version`."""
    urls = read_runtime(runtime.state_dir)["predictors"]
    for revision, record in runtime.service.revisions().items():
        if record["modelVersion"] == model_version and revision in urls:
            return Endpoint(urls[revision])
    raise LookupError(f"no running predictor serves {model_version}")


@pytest.fixture(scope="module")
def serving_stack(canary_runtime, tiny_run, tmp_path_factory) -> Iterator[Stack]:
    """A transformer with --predictor_host (cluster wiring) in front of the runtime's v1 predictor."""
    predictor = predictor_of(canary_runtime, "v1")
    transformer = start_transformer(tiny_run.v1, tmp_path_factory.mktemp("serving_logs"), predictor_url=predictor.url)
    try:
        yield Stack(predictor, transformer.wait_ready())
    finally:
        transformer.stop()


def metric_value(metrics_text: str, name: str, **labels: str) -> float:
    """One sample from Prometheus text (0.0 if absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def v2_json(raw, name: str = "transactions") -> bytes:
    import numpy as np

    raw = np.asarray(raw, dtype=np.float64)
    return json.dumps({"inputs": [{"name": name, "shape": list(raw.shape), "datatype": "FP64",
                                   "data": raw.tolist()}]}).encode()
