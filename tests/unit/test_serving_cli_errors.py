"""`serve`, `predict` and `bench serving` on bad input: exit 2 and one line naming the value and what to do."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from fraud import simulate
from fraud.processes import free_port


def fraud_rollout(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fraud_rollout", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def error_line(result: subprocess.CompletedProcess) -> str:
    """The one line a user error prints (httpx's INFO request lines aside)."""
    lines = [line for line in result.stderr.splitlines() if " INFO " not in line]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def transactions(tmp_path_factory) -> Path:
    csv = tmp_path_factory.mktemp("transactions") / "transactions.csv"
    simulate.generate(20, 1).to_csv(csv, index=False)
    return csv


@pytest.fixture
def tiny_artifact_root(tmp_path) -> Path:
    """An artifact root's layout (`<root>/fraud-detector/1/model.savedmodel`): all the argument check looks at,
    so the URL checks after it are reached without training a model."""
    from fraud.export import MODEL_NAME, SAVEDMODEL_DIR

    root = tmp_path / "v1"
    (root / MODEL_NAME / "1" / SAVEDMODEL_DIR).mkdir(parents=True)
    return root


@pytest.mark.parametrize("url, message", [
    ("localhost:8080", "--url localhost:8080: not an http(s) URL; give one like http://127.0.0.1:8080"),
    ("127.0.0.1:8080", "--url 127.0.0.1:8080: not an http(s) URL; give one like http://127.0.0.1:8080"),
    ("ftp://127.0.0.1:8080", "--url ftp://127.0.0.1:8080: not an http(s) URL; give one like http://127.0.0.1:8080"),
    ("http://127.0.0.1:99999", "--url http://127.0.0.1:99999: the port is not a number within 0..65535"),
])
def test_predict_refuses_a_url_that_is_not_http(tmp_path, transactions, url, message):
    result = fraud_rollout("predict", "--url", url, "--file", str(transactions), cwd=tmp_path)
    assert error_line(result) == f"fraud-rollout predict: error: {message}"


def test_predict_names_an_unreachable_url(tmp_path, transactions):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = fraud_rollout("predict", "--url", url, "--file", str(transactions), cwd=tmp_path)
    assert error_line(result) == (f"fraud-rollout predict: error: --url {url}: cannot reach it (ConnectError: "
                                  "[Errno 111] Connection refused); start `fraud-rollout serve` or give the URL it prints")


def test_predict_names_a_missing_file(tmp_path):
    result = fraud_rollout("predict", "--url", "http://127.0.0.1:8080", "--file", "nope.csv", cwd=tmp_path)
    assert error_line(result) == "fraud-rollout predict: error: --file nope.csv: no such file; give a transactions .csv or .json"


def test_bench_serving_names_a_baseline_that_does_not_exist(tmp_path):
    result = fraud_rollout("bench", "serving", "--baseline", str(tmp_path / "nope"), cwd=tmp_path)
    assert error_line(result) == (f"fraud-rollout bench: error: --baseline {tmp_path / 'nope'}: no such directory; give "
                                  "the artifact root of an exported model (a pipeline run's models/v1, or report.json's "
                                  "models.v1.artifact)")
    result = fraud_rollout("bench", "serving", "--baseline", str(tmp_path), cwd=tmp_path)
    assert error_line(result) == (f"fraud-rollout bench: error: --baseline {tmp_path}: no exported model in it (expected "
                                  "<root>/<model>/<version>/model.savedmodel); give the artifact root of an exported model")


def test_serve_names_a_taken_http_port_and_writes_nothing(tmp_path):
    this_process = Path("/proc/self/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()[:100]
    state_dir = tmp_path / "state"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = fraud_rollout("serve", "--state-dir", str(state_dir), "--http-port", str(port), cwd=tmp_path)
    assert error_line(result) == (f"fraud-rollout serve: error: --http-port {port}: already in use by pid {os.getpid()} "
                                  f"({this_process}); stop that process or pass another --http-port")
    assert not state_dir.exists()  # refused before the state dir was claimed (created)


def test_serve_refuses_a_port_out_of_range(tmp_path):
    result = fraud_rollout("serve", "--state-dir", str(tmp_path), "--http-port", "70000", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == ("fraud-rollout serve: error: argument --http-port: '70000' is not a "
                                              "TCP port (1..65535)")


def test_serve_refuses_a_shadow_percent_out_of_range(tmp_path):
    result = fraud_rollout("serve", "--state-dir", str(tmp_path), "--shadow-percent", "101", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == ("fraud-rollout serve: error: argument --shadow-percent: '101' is not "
                                              "within 0..100")


def test_serve_names_a_baseline_that_does_not_exist(tmp_path):
    result = fraud_rollout("serve", "--state-dir", str(tmp_path / "state"), "--baseline", "nope", cwd=tmp_path)
    assert error_line(result) == ("fraud-rollout serve: error: --baseline nope: no such directory; give the artifact "
                                  "root of an exported model (a pipeline run's models/v1, or report.json's "
                                  "models.v1.artifact)")
    assert not (tmp_path / "state").exists()


def test_bench_serving_names_running_servers_it_cannot_reach(tmp_path, tiny_artifact_root):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = fraud_rollout("bench", "serving", "--baseline", str(tiny_artifact_root), "--predictor-url", url,
                           "--transformer-url", url, cwd=tmp_path)
    assert error_line(result) == (f"fraud-rollout bench: error: --predictor-url {url}: cannot reach it (ConnectError: "
                                  "[Errno 111] Connection refused); start the server or give its base URL")
    result = fraud_rollout("bench", "serving", "--baseline", str(tiny_artifact_root), "--predictor-url", "localhost:1",
                           "--transformer-url", url, cwd=tmp_path)
    assert error_line(result) == ("fraud-rollout bench: error: --predictor-url localhost:1: not an http(s) URL; give "
                                  "one like http://127.0.0.1:8080")


def test_serve_names_a_state_dir_that_cannot_be_a_directory(tmp_path):
    (tmp_path / "state").write_text("not a directory")
    result = fraud_rollout("serve", "--state-dir", str(tmp_path / "state" / "serving"), cwd=tmp_path)
    assert error_line(result) == (f"fraud-rollout serve: error: --state-dir {tmp_path / 'state' / 'serving'}: cannot "
                                  "be used (Not a directory); pass a directory this user can write")
