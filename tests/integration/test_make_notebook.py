"""`make notebook` as the README gives it: JupyterLab on notebooks/ (the notebook extra installed from
its lock first), both notebooks there, and kernels that run this venv's Python."""
from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.integration.test_canary_analysis import wait_for

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
URL = re.compile(r"(http://127\.0\.0\.1:\d+)/lab\?token=(\w+)")


def kernel_argv(kernel_id: str) -> list[str]:
    """The command line of the process that runs kernel `kernel_id` (its connection file names it)."""
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:  # not a process, or one that ended
            continue
        if any(arg.endswith(f"kernel-{kernel_id}.json") for arg in argv):
            return argv
    return []


def test_make_notebook_serves_the_notebooks_with_the_venvs_kernel(tmp_path):
    log = tmp_path / "jupyter.log"
    with log.open("wb") as out:
        make = subprocess.Popen(["make", "notebook"], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        def served():
            assert make.poll() is None, log.read_text()[-3000:]
            return URL.search(log.read_text())

        base, token = wait_for(served, "JupyterLab's URL in the log", timeout=600).groups()
        with httpx.Client(base_url=base, params={"token": token}, timeout=60) as client:
            contents = client.get("/api/contents")
            assert contents.status_code == 200, contents.text
            assert {"01_submit_pipeline.ipynb", "02_canary_analysis.ipynb"} <= {c["name"] for c in contents.json()["content"]}
            started = client.post("/api/kernels", json={"name": "python3"})
            assert started.status_code == 201, started.text
            kernel = started.json()["id"]
            argv = wait_for(lambda: kernel_argv(kernel), "the kernel's process", timeout=120)
            assert argv[:3] == [str(REPO / ".venv" / "bin" / "python"), "-m", "ipykernel_launcher"], argv
            assert client.delete(f"/api/kernels/{kernel}").status_code == 204
    finally:
        os.killpg(make.pid, signal.SIGTERM)
        make.wait(timeout=60)
