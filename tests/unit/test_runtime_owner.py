"""One `serve` per state dir, and ports checked before a server starts: real processes, real sockets."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from fraud.processes import PortInUse, check_port_free, free_port, port_holder
from fraud_control.local_runtime.runtime import LOCK_FILE, RUNTIME_FILE, StateDirBusy, claim_state_dir, read_runtime

HOLD_THE_STATE_DIR = """
import sys
from pathlib import Path
from fraud_control.local_runtime.runtime import claim_state_dir
owner = claim_state_dir(Path(sys.argv[1]), "http://127.0.0.1:8123")  # held while referenced
print("claimed", flush=True)
sys.stdin.read()  # hold the lock until killed
"""


@pytest.fixture
def other_owner(tmp_path):
    """Another process that owns `tmp_path / "state"` until it is killed."""
    state_dir = tmp_path / "state"
    process = subprocess.Popen([sys.executable, "-c", HOLD_THE_STATE_DIR, str(state_dir)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "claimed\n"  # it holds the lock from here on
    yield state_dir, process
    if process.poll() is None:
        process.kill()
    process.wait(10)


def test_a_second_claim_is_refused_with_the_owners_pid_and_url(other_owner):
    state_dir, process = other_owner
    with pytest.raises(StateDirBusy) as refused:
        claim_state_dir(state_dir, "http://127.0.0.1:9999")
    assert str(refused.value) == (f"--state-dir {state_dir}: already served by `fraud-rollout serve` pid "
                                  f"{process.pid} at http://127.0.0.1:8123; stop it (kill {process.pid}) "
                                  "or pass another --state-dir")
    assert json.loads((state_dir / LOCK_FILE).read_text()) == {"pid": process.pid, "url": "http://127.0.0.1:8123"}
    assert sorted(path.name for path in state_dir.iterdir()) == [LOCK_FILE]  # the refused claim wrote nothing


def test_a_killed_owner_leaves_no_lock_behind(other_owner):
    state_dir, process = other_owner
    (state_dir / RUNTIME_FILE).write_text(json.dumps({"pid": process.pid, "transformer": "http://127.0.0.1:8123"}))
    assert read_runtime(state_dir)["pid"] == process.pid
    with pytest.raises(StateDirBusy):
        claim_state_dir(state_dir, "http://127.0.0.1:9999")
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    assert read_runtime(state_dir) == {}  # a dead serve's report is not "serving"
    owner = claim_state_dir(state_dir, "http://127.0.0.1:9999")
    try:
        assert json.loads((state_dir / LOCK_FILE).read_text()) == {"pid": os.getpid(), "url": "http://127.0.0.1:9999"}
    finally:
        owner.release()
    claim_state_dir(state_dir, "http://127.0.0.1:9999").release()  # released means claimable again


def test_a_taken_port_names_its_process_and_the_option():
    this_process = Path("/proc/self/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()[:100]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert port_holder(port) == f"pid {os.getpid()} ({this_process})"
        with pytest.raises(PortInUse) as taken:
            check_port_free(port, "--http-port")
        assert str(taken.value) == (f"--http-port {port}: already in use by pid {os.getpid()} ({this_process}); "
                                    "stop that process or pass another --http-port")
        with pytest.raises(PortInUse) as taken:
            check_port_free(port)
        assert str(taken.value) == f"port {port}: already in use by pid {os.getpid()} ({this_process}); stop that process"
    check_port_free(port, "--http-port")  # closed: free again


def test_a_free_port_passes():
    check_port_free(free_port(), "--http-port")
    assert port_holder(free_port()) is None
