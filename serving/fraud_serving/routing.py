"""Where the transformer sends a request: the predictor address, split like KServe splits it.

In a cluster there is one address (`--predictor_host`) and Knative splits behind it. Locally the
transformer follows the runtime's routes file (`fraud.routes`), re-read when it changes, so
promote, rollback and a new canary apply without a restart; a request that already picked a
predictor finishes there.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

from fraud.routes import Backend, read_routes


class NoPredictor(RuntimeError):
    """No predictor revision receives traffic."""


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
        self.revisions = list(backends)  # every revision in the split, 0 % ones too
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
        backends, self.generation = read_routes(self.routes_file)
        self._set(backends)
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

    def other(self, backend: Backend) -> Backend | None:
        """The revision to use besides `backend` (a retry after it failed, a shadow score): the other
        revision in the split, one taking traffic first; None when there is no other one."""
        self.refresh()
        others = [b for b in self.revisions if b.revision != backend.revision or b.url != backend.url]
        others.sort(key=lambda b: b.percent <= 0)
        return others[0] if others else None
