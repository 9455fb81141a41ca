"""The local canary as a command shows it: the revisions' status with the runtime that serves them,
and the subject (what is deployed now) a replay against the local state dir records."""
from __future__ import annotations

from pathlib import Path


def local_status(state_dir: Path) -> dict:
    from fraud_control.inferenceservice.local_state import LocalInferenceService, revision_status
    from fraud_control.local_runtime.runtime import read_runtime

    status = revision_status(LocalInferenceService(state_dir))
    status["runtime"] = read_runtime(state_dir)
    return status


def local_subject(state_dir: Path) -> dict | None:
    """What the local state dir has deployed now: the subject a replay against it records."""
    from fraud_control.inferenceservice.local_store import LocalStore
    from fraud_control.inferenceservice.subject import read_subject

    subject = read_subject(LocalStore(state_dir, "fraud-detector"))
    return None if subject is None else subject.to_dict()
