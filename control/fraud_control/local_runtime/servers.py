"""Start `python -m fraud_serving …` servers on loopback, wait until they are ready, stop them.

Used by the local runtime, the benchmark and the tests. Readiness is KServe's own
`/v2/models/<name>/ready` (a predictor turns ready only after its artifact is loaded and checked);
the prediction-log sink's is its `/healthz` (200 once its store is open).
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from fraud.processes import LOOPBACK, ServerProcess, check_port_free, die_with_parent, free_port

from fraud_control.inferenceservice.isvc import NAME


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
    """Launch the prediction-log sink (`python -m fraud_control.prediction_log.sink`) on a loopback port
    writing to `store_url`; does not wait. `niceness` > 0 runs it at a lower CPU priority. `models`:
    the artifact roots whose feedback signals its /metrics reports (`--model`); or `models_file`, a
    JSON list of them it re-reads when it changes (`--models-file`); `options`, more of its flags."""
    port = port or free_port()
    check_port_free(port)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{label}-{port}.log"
    command = [sys.executable, "-m", "fraud_control.prediction_log.sink", "--store", store_url,
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
