"""`fraud-rollout serve` as a child process of the demo and the replay benchmark.

Started, waited for (the runtime reports the manifest's generation applied, i.e. the transformer
and every predictor revision in the split answer ready), and stopped on exit: on an exception, on
Ctrl-C and on SIGTERM alike (`serve` stops its own predictors and transformer on SIGTERM).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fraud.processes import (
    LOOPBACK,
    POLL_SECONDS,
    READY_TIMEOUT_SECONDS,
    ServerFailed,
    die_with_parent,
    free_port,
    log_tail,
    stop_process,
)
from fraud.waiting import poll
from fraud_control.inferenceservice.local_state import LocalInferenceService
from fraud_control.local_runtime.runtime import read_runtime

#: `fraud-rollout …` with this interpreter.
FRAUD_ROLLOUT = [sys.executable, "-m", "fraud_rollout"]


class LocalServing:
    """The local canary runtime for the length of a `with` block.

    With `baseline` (and `candidate`) it creates the InferenceService first, as
    `fraud-rollout serve --baseline … --candidate … --canary-percent P` does; without, it serves the
    manifest already in `state_dir` (the one the pipeline's local deploy step writes).
    """

    def __init__(self, state_dir: Path, *, baseline: str | Path | None = None, candidate: str | Path | None = None,
                 canary_percent: int = 20, log_dir: Path | None = None, http_port: int | None = None,
                 drain_seconds: float = 2.0, ready_timeout: float = READY_TIMEOUT_SECONDS,
                 shadow_percent: float | None = None, prediction_log: str | None = None,
                 split_seed: int | None = None) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.split_seed = split_seed  # FRAUD_ROLLOUT_SPLIT_SEED for serve (None: a random split, as Knative's)
        self.prediction_log = prediction_log  # serve's --prediction-log (None: its default)
        self.shadow_percent = shadow_percent  # None: serve's default share
        self.baseline, self.candidate, self.canary_percent = baseline, candidate, canary_percent
        self.log_dir = Path(log_dir or self.state_dir / "logs").resolve()
        self.port = http_port or free_port()
        self.drain_seconds = drain_seconds
        self.ready_timeout = ready_timeout
        self.process: subprocess.Popen | None = None
        self.log_path = self.log_dir / f"serve-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def service(self) -> LocalInferenceService:
        return LocalInferenceService(self.state_dir)

    def command(self) -> list[str]:
        command = [*FRAUD_ROLLOUT, "serve", "--state-dir", str(self.state_dir), "--http-port", str(self.port),
                   "--drain-seconds", str(self.drain_seconds)]
        if self.shadow_percent is not None:
            command += ["--shadow-percent", f"{self.shadow_percent:g}"]
        if self.prediction_log is not None:
            command += ["--prediction-log", self.prediction_log]
        if self.baseline is not None:
            command += ["--baseline", str(self.baseline), "--canary-percent", str(self.canary_percent)]
            if self.candidate is not None:
                command += ["--candidate", str(self.candidate)]
        return command

    def environment(self) -> dict[str, str]:
        seed = {} if self.split_seed is None else {"FRAUD_ROLLOUT_SPLIT_SEED": str(self.split_seed)}
        return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **seed}

    def start(self) -> LocalServing:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, preexec_fn=die_with_parent,
                                            env=self.environment())
        try:
            self.wait_applied()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_applied(self, generation: int | None = None) -> dict:
        """Until this `serve` reports the manifest's generation applied (runtime.json names our pid)."""
        wanted: list[int | None] = [generation]

        def applied() -> dict | None:
            if generation is None and self.service.exists():
                wanted[0] = self.service.get()["metadata"]["generation"]
            runtime = read_runtime(self.state_dir)
            done = (wanted[0] is not None and runtime.get("pid") == self.process.pid and runtime.get("transformer")
                    and runtime.get("appliedGeneration") == wanted[0])
            return runtime if done else None

        def exited() -> None:
            if self.process.poll() is not None:
                raise ServerFailed(f"fraud-rollout serve exited with {self.process.returncode}:\n{self.log_tail()}")

        runtime = poll(applied, timeout_s=self.ready_timeout, poll_s=POLL_SECONDS, give_up=exited)
        if runtime is None:
            raise ServerFailed(f"fraud-rollout serve: generation {wanted[0]} not applied after "
                               f"{self.ready_timeout:.0f} s:\n{self.log_tail()}")
        return runtime

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM (serve stops its predictors and transformer, then exits); SIGKILL after `timeout`."""
        stop_process(self.process, timeout)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def __enter__(self) -> LocalServing:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
