"""Fixtures shared by several integration modules (a session fixture must live in a conftest to be
set up once for all of them)."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

#: The demo at small size: a high fraud rate lets 60,000 transactions train useful models quickly.
SMALL_DEMO = ("--n-transactions", "60000", "--fraud-rate", "0.02")


@dataclass(frozen=True)
class DemoRun:
    root: Path
    out: Path
    state_dir: Path
    completed: subprocess.CompletedProcess

    @property
    def pipeline_report(self) -> Path:
        return self.out / "pipeline" / "report.json"

    @property
    def replay_report(self) -> Path:
        return self.out / "replay.json"


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> DemoRun:
    """`fraud-rollout demo` at small size, run once as a user runs it (in its own working dir)."""
    root = tmp_path_factory.mktemp("demo")
    out, state_dir = root / "out", root / "serving"
    completed = subprocess.run(
        [sys.executable, "-m", "fraud_rollout", "demo", *SMALL_DEMO, "--out", str(out), "--state-dir", str(state_dir),
         "--mlflow-tracking-uri", f"sqlite:///{root / 'mlflow.db'}", "--no-progress"],
        cwd=root, capture_output=True, text=True, timeout=1200)
    return DemoRun(root, out, state_dir, completed)
