"""Issue 19: every user error exits 2 with one line on stderr naming the value and what to do, never a
traceback. Each case runs the real CLI as a subprocess."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

LABELS = "transaction_id,label,label_time\nt-1,1,2025-03-01T12:00:00Z\n"


def fraud_rollout(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fraud_rollout", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The single stderr line of a user error (exit 2)."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("port, message", [
    ("99999", "'99999' is not a TCP port (0..65535; 0 picks a free one)"),
    ("-1", "'-1' is not a TCP port (0..65535; 0 picks a free one)"),
    ("http", "'http' is not a whole number"),
])
def test_sink_port_out_of_range_is_refused_at_parse_time(tmp_path, port, message):
    result = fraud_rollout("sink", "serve", "--port", port, "--store", str(tmp_path / "s.db"), cwd=tmp_path)
    assert one_error_line(result) == f"fraud-rollout sink serve: error: argument --port: {message}"
    assert not (tmp_path / "s.db").exists()


def test_the_sink_started_as_a_module_refuses_a_port_out_of_range_too(tmp_path):
    """What the local runtime and the sink's image run; it once raised OverflowError from bind()."""
    result = subprocess.run([sys.executable, "-m", "fraud_control.prediction_log.sink", "--port", "99999", "--store",
                             str(tmp_path / "s.db")], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "prediction-sink: error: argument --port: '99999' is not a TCP port (0..65535; 0 picks a free one)")
    assert not (tmp_path / "s.db").exists()


@pytest.mark.parametrize("command, option, message", [
    (["serve"], "--http-port", "'0' is not a TCP port (1..65535)"),
    (["serve"], "--http-port", "'70000' is not a TCP port (1..65535)"),
    (["rollout", "start"], "--analysis-port", "'65536' is not a TCP port (0..65535; 0 picks a free one)"),
])
def test_other_ports_share_the_validator(tmp_path, command, option, message):
    value = message.split("'")[1]
    result = fraud_rollout(*command, option, value, "--state-dir", str(tmp_path / "state"), cwd=tmp_path)
    line = one_error_line(result)
    assert f"error: argument {option}: {message}" in line, line


def piped(command: str, reader: str, cwd: Path) -> tuple[subprocess.CompletedProcess, list[str], str]:
    """`fraud-rollout COMMAND | READER` in bash: the result, the lines shown and the CLI's exit status."""
    script = f'"{sys.executable}" -m fraud_rollout {command} | {reader}; echo "status ${{PIPESTATUS[0]}}"'
    result = subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
    *shown, status = result.stdout.splitlines()
    return result, shown, status.removeprefix("status ")


def test_help_into_head_is_not_a_traceback(tmp_path):
    result, shown, status = piped("--help", "head -1", tmp_path)
    assert result.stderr == "" and status == "0"
    assert shown == ["usage: fraud-rollout [-h] [-v] [--version] COMMAND ..."]


@pytest.mark.parametrize("reader, statuses", [("head -1", {"0", "141"}), ("head -n 0", {"141"})])
def test_many_lines_into_a_closed_pipe_exit_141_without_a_traceback(tmp_path, reader, statuses):
    """`head -n 0` exits before the CLI writes anything: the write always meets a closed pipe."""
    from fraud_control.rollout.state import LocalRolloutState

    LocalRolloutState(tmp_path / "state").write({"status": "promoted", "steps": [{"percent": p} for p in range(100)]})
    result, shown, status = piped(f"rollout status --json --state-dir {tmp_path / 'state'}", reader, tmp_path)
    assert result.stderr == ""
    assert status in statuses
    assert shown == (["{"] if reader == "head -1" else [])


def test_predict_names_a_file_that_is_not_json(tmp_path):
    (tmp_path / "bad.json").write_text('{"V1": ')
    result = fraud_rollout("predict", "--url", "http://127.0.0.1:9", "--file", "bad.json", cwd=tmp_path)
    assert one_error_line(result) == ("fraud-rollout predict: error: --file bad.json: not valid JSON (Expecting value "
                                      "at line 1 column 8); give a v2 request, a list of records or "
                                      "{column: [values]}")


def test_predict_names_a_missing_file(tmp_path):
    result = fraud_rollout("predict", "--url", "http://127.0.0.1:9", "--file", "gone.json", cwd=tmp_path)
    assert one_error_line(result) == ("fraud-rollout predict: error: --file gone.json: no such file; give a "
                                      "transactions .csv or .json")


@pytest.mark.parametrize("content, reason", [
    (b'a,b\n1,2,3\n"x\n', "not a CSV of transaction_id,label,label_time (Error tokenizing data. C error: EOF inside "
                          "string starting at row 2)"),
    (b"\xff\xfe\x00garbage\x00\x81", "not a CSV of transaction_id,label,label_time (not UTF-8 text)"),
    (b"", "empty file; expected a CSV of transaction_id,label,label_time"),
])
def test_labels_ingest_names_a_file_that_is_not_a_labels_csv(tmp_path, content, reason):
    (tmp_path / "labels.csv").write_bytes(content)
    result = fraud_rollout("labels", "ingest", "labels.csv", "--store", "store.db", "--create", cwd=tmp_path)
    assert one_error_line(result) == f"fraud-rollout labels: error: labels.csv: {reason}"


def test_labels_ingest_requires_an_existing_store_unless_create(tmp_path):
    (tmp_path / "labels.csv").write_text(LABELS)
    result = fraud_rollout("labels", "ingest", "labels.csv", "--store", "predictons/store.db", cwd=tmp_path)
    assert one_error_line(result) == ("fraud-rollout labels: error: --store predictons/store.db: no prediction store "
                                      "at 'predictons/store.db'; check the path, or pass --create to start a new one")
    assert not (tmp_path / "predictons").exists()
    created = fraud_rollout("labels", "ingest", "labels.csv", "--store", "predictons/store.db", "--create",
                            cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    assert created.stdout == "labels: 1 read, 0 joined to served predictions, 1 unknown\n"
    again = fraud_rollout("labels", "ingest", "labels.csv", "--store", "predictons/store.db", cwd=tmp_path)
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize("args", [["--version"], ["canary", "--version"]])
def test_version_prints_the_package_version(tmp_path, args):
    result = fraud_rollout(*args, cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "fraud-rollout 0.1.0\n", "")


@pytest.mark.parametrize("args", [
    ["-v", "labels", "ingest", "labels.csv"],
    ["labels", "-v", "ingest", "labels.csv"],
    ["labels", "ingest", "labels.csv", "-v"],
    ["labels", "ingest", "--verbose", "labels.csv"],
])
def test_verbose_is_accepted_anywhere(tmp_path, args):
    (tmp_path / "labels.csv").write_text(LABELS)
    result = fraud_rollout(*args, "--store", "store.db", "--create", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "labels: 1 read, 0 joined to served predictions, 1 unknown\n"


def test_labels_ingest_prints_its_counts_as_json_for_scripts(tmp_path):
    (tmp_path / "labels.csv").write_text(LABELS)
    result = fraud_rollout("labels", "ingest", "labels.csv", "--store", "store.db", "--create", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"read": 1, "joined": 0, "unknown": 1}


@pytest.mark.parametrize("argv, verbose", [
    (["canary", "status"], False), (["-v", "canary", "status"], True), (["canary", "status", "-v"], True),
    (["sink", "serve", "--port", "0", "--verbose"], True)])
def test_verbose_after_the_subcommand_sets_debug(argv, verbose):
    from fraud_rollout.cli import build_parser

    assert getattr(build_parser().parse_args(argv), "verbose", False) is verbose


def test_rollout_start_documents_its_exit_codes(tmp_path):
    result = fraud_rollout("rollout", "start", "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.split("exit codes of `rollout start`:", 1)[1].split() == (
        "0 promoted 3 rolled back 4 inconclusive: paused at its step, the canary left where it was "
        "5 aborted (`rollout abort`) 1 the rollout failed or was refused (the message says why) "
        "2 bad input (one line naming the value)").split()


@pytest.mark.parametrize("argv, option", [
    (["canary", "status", "--apply"], "--apply"),
    (["canary", "promote", "--replay-report", "r.json"], "--replay-report r.json"),
    (["rollout", "status", "--plan", "5,100"], "--plan 5,100"),
    (["rollout", "abort", "--window", "5"], "--window 5")])
def test_an_option_of_another_action_is_an_error_not_ignored(tmp_path, argv, option):
    """One parser per action: `canary status --apply` was once accepted and did nothing."""
    result = fraud_rollout(*argv, cwd=tmp_path)
    assert one_error_line(result) == f"fraud-rollout: error: unrecognized arguments: {option}"


def test_serve_on_a_missing_state_dir_leaves_nothing_behind(tmp_path):
    """It once created the directory (its lock and runtime files) before finding nothing to serve."""
    result = fraud_rollout("serve", "--state-dir", "nothere", cwd=tmp_path)
    assert one_error_line(result) == (
        "fraud-rollout serve: error: no InferenceService in nothere (create one with `fraud-rollout serve "
        "--baseline … --candidate …` or the pipeline's deploy step)")
    assert not (tmp_path / "nothere").exists()
