"""Where the transformer sends a request: the predictor address, split like KServe splits it.

In a cluster there is one address (`--predictor_host`) and Knative splits behind it. The local
runtime (`fraud-rollout serve`) instead writes a routes file: one entry per predictor revision that
receives traffic, with its loopback URL and percent, taken from the InferenceService status. The
transformer re-reads it when it changes, so promote, rollback and a new canary apply without a
restart; a request that already picked a predictor finishes there.
"""
from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Backend:
    url: str  # http://host:port
    revision: str
    model_version: str  # "" when unknown until the predictor answers
    percent: int


class NoPredictor(RuntimeError):
    """No predictor revision receives traffic."""


def write_routes(path: Path, backends: list[Backend], generation: int) -> None:
    """Atomically replace the routes file (the runtime's side)."""
    body = {"generation": generation, "backends": [b.__dict__ for b in backends]}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(body, indent=2))
    os.replace(tmp, path)


class Routes:
    """Weighted choice among predictor backends, static or from a routes file."""

    def __init__(self, backends: list[Backend] | None = None, routes_file: Path | None = None,
                 rng: random.Random | None = None) -> None:
        if (backends is None) == (routes_file is None):
            raise ValueError("give either backends or a routes file")
        self.routes_file = routes_file
        self._stamp: int | None = None
        self._rng = rng or random.Random()
        self.generation = 0
        self._set(backends or [])
        if routes_file is not None:
            self.refresh()

    @classmethod
    def single(cls, predictor_host: str, use_ssl: bool = False) -> Routes:
        scheme = "https" if use_ssl else "http"
        host = predictor_host if "://" in predictor_host else f"{scheme}://{predictor_host}"
        return cls([Backend(host.rstrip("/"), "", "", 100)])

    def _set(self, backends: list[Backend]) -> None:
        self.backends = [b for b in backends if b.percent > 0]
        self._cumulative = []
        total = 0
        for backend in self.backends:
            total += backend.percent
            self._cumulative.append(total)
        self._total = total

    def refresh(self) -> None:
        """Reload the routes file if it changed (a stat per call: ~1 µs)."""
        if self.routes_file is None:
            return
        try:
            stamp = os.stat(self.routes_file).st_mtime_ns
        except FileNotFoundError:
            return  # keep the last known routes
        if stamp == self._stamp:
            return
        body = json.loads(self.routes_file.read_text())
        self._set([Backend(**entry) for entry in body["backends"]])
        self.generation = int(body.get("generation", 0))
        self._stamp = stamp

    def pick(self) -> Backend:
        self.refresh()
        if not self.backends:
            raise NoPredictor("no predictor revision receives traffic")
        if len(self.backends) == 1:
            return self.backends[0]
        draw = self._rng.random() * self._total
        for backend, bound in zip(self.backends, self._cumulative):
            if draw < bound:
                return backend
        return self.backends[-1]
