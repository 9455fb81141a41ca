"""The local runtime's traffic split, as a file: which predictor revision gets what share.

In a cluster Knative splits behind one predictor address. The local runtime (`fraud-rollout
serve`) instead writes a routes file, one entry per predictor revision that receives traffic, with
its loopback URL and percent taken from the InferenceService status; the transformer re-reads it
when it changes (`fraud_serving.routing`). This module is the file's one definition.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fraud.files import read_json, write_json


@dataclass(frozen=True)
class Backend:
    url: str  # http://host:port
    revision: str
    model_version: str  # "" when unknown until the predictor answers
    percent: int


def write_routes(path: Path, backends: list[Backend], generation: int) -> None:
    """Atomically replace the routes file (the runtime's side)."""
    write_json(path, {"generation": generation, "backends": [asdict(b) for b in backends]})


def read_routes(path: Path) -> tuple[list[Backend], int]:
    """The backends and the InferenceService generation they were computed for."""
    body: dict[str, Any] = read_json(path)
    return [Backend(**entry) for entry in body["backends"]], int(body.get("generation", 0))
