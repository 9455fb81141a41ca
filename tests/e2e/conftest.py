"""The full-size story as a new user first meets it: a fresh clone of this checkout after `make
demo` (1,000,000 transactions, seed 7, every default). The story's tests read its reports, the README
test runs the documentation's commands in it, and the pipeline run in containers compares with its
pipeline report."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.docs import REPO

#: What a new user's shell does not have: this suite's servers and settings.
FOREIGN = ("MLFLOW_TRACKING_URI", "KUBECONFIG", "S3_", "AWS_", "VIRTUAL_ENV", "PYTHONPATH", "PREDICTION_LOG_")
MAKE_DEMO_TIMEOUT_S = 3600


@dataclass(frozen=True)
class FreshClone:
    root: Path
    env: dict[str, str]

    @property
    def demo_out(self) -> Path:
        return self.root / ".fraud-rollout" / "demo"


def user_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN)}


def clone(to: Path) -> Path:
    """A clone of this checkout with its working tree as it is now: HEAD, then the tracked files that
    differ from it and the untracked ones git does not ignore (on CI, a clean clone: HEAD alone)."""
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(REPO), str(to)], check=True)
    changed = subprocess.run(["git", "ls-files", "-z", "--modified", "--others", "--exclude-standard"], cwd=REPO,
                             check=True, capture_output=True, text=True).stdout.split("\0")
    for name in filter(None, changed):
        source, target = REPO / name, to / name
        if source.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        else:
            target.unlink(missing_ok=True)  # deleted in the working tree
    return to


@pytest.fixture(scope="session")
def fresh_clone(tmp_path_factory) -> FreshClone:
    root = clone(tmp_path_factory.mktemp("fresh") / "fraud-rollout")
    env = user_env()
    done = subprocess.run(["make", "demo"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=MAKE_DEMO_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    return FreshClone(root, env)


@pytest.fixture(scope="session")
def full_run(fresh_clone) -> dict:
    """The pipeline `make demo` ran at its defaults (1,000,000 transactions, seed 7; SubprocessRunner)."""
    return json.loads((fresh_clone.demo_out / "pipeline" / "report.json").read_text())


@pytest.fixture(scope="session")
def full_demo(fresh_clone) -> dict:
    """What `make demo` reported: its replay, prediction log, rollout and drift."""
    return json.loads((fresh_clone.demo_out / "report.json").read_text())
