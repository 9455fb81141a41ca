"""Where a command looks when it is not told: a `pipeline run`'s state, else the demo's.

`make demo` writes under .fraud-rollout/demo/ and `pipeline run --local` under .fraud-rollout/run/
and .fraud-rollout/serving/: each keeps its own canary, so that neither meets the other's. A command
given no --state-dir (or no --report) takes the pipeline run's when there is one, else the demo's,
and says which on stderr; with neither, the pipeline run's path, which its errors name.
"""
from __future__ import annotations

import sys
from pathlib import Path

from fraud_control.inferenceservice.local_state import DEFAULT_STATE_DIR, LocalInferenceService

RUN_STATE_DIR = DEFAULT_STATE_DIR
RUN_REPORT = Path(".fraud-rollout/run/report.json")
DEMO_OUT = Path(".fraud-rollout/demo")
DEMO_STATE_DIR = DEMO_OUT / "serving"
DEMO_REPORT = DEMO_OUT / "pipeline" / "report.json"


def _said(what: str, path: Path) -> Path:
    print(f"using the demo's {what} {path} (no `pipeline run --local` has written {'one' if what == 'report' else 'its own'}; "
          f"{'--report' if what == 'report' else '--state-dir'} chooses another)", file=sys.stderr)
    return path


def state_dir() -> Path:
    """The local serving state dir a command works on when none is given."""
    if LocalInferenceService(RUN_STATE_DIR).exists() or not LocalInferenceService(DEMO_STATE_DIR).exists():
        return RUN_STATE_DIR
    return _said("serving state", DEMO_STATE_DIR)


def pipeline_report() -> Path:
    """The pipeline report.json a command reads when none is given."""
    if RUN_REPORT.is_file() or not DEMO_REPORT.is_file():
        return RUN_REPORT
    return _said("report", DEMO_REPORT)
