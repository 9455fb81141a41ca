"""Where the transformer sends a request: the predictor address, split like KServe splits it.

In a cluster there is one address (`--predictor_host`) and Knative splits behind it. Locally the
transformer follows the runtime's routes file (`fraud.routes`), re-read when it changes, so
promote, rollback and a new canary apply without a restart; a request that already picked a
predictor finishes there.

Shadow scores (`shadow`) need the revision besides the one that answered. Locally that is
`Routes.other`. In a cluster the one `--predictor_host` hides the revisions behind Knative's split,
so the transformer is given the tag-routing hosts as well (`--shadow_hosts
latest=http://latest-<isvc>-predictor.<ns>,prev=http://prev-<isvc>-predictor.<ns>`; our
InferenceService sets `serving.kserve.io/enable-tag-routing: "true"`, fraud_control.inferenceservice.isvc). Which
version a tag serves changes with every promote and rollback and the transformer is not told, so
`TagHosts` learns it from the `model_version` each host answers and asks the host whose last
answer was a version other than the served one; failing that, one not heard from yet, then one
that served the same version (tags move: it is asked again, and if it still serves the served
version that shadow score is dropped as "same_version").

The retry (DESIGN 16) uses the same hosts in a cluster: a call through `--predictor_host` that
failed is sent once more to a tag host (`TagHosts.retry_target`). Through the one host the
transformer cannot tell which revision failed (Knative chose it), so the failed version is unknown
and the retry goes to `prev`, the rolled-out revision: a canary that dies is the case the retry is
for, `prev` serves every request the canary does not, and it is the one revision known to have
carried 100 %. When the failed version is known (a tag host itself failed), the retry goes to the
host last seen answering another version. If `prev` is what failed the retry fails too and the
client gets the 500; after a promote there is no `prev` route (KServe tags it only while the canary
is below 100 %), nothing to fall back on either way.
"""
from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

from fraud.routes import Backend, read_routes

#: The tag of the rolled-out revision (fraud_control.inferenceservice.isvc.TRAFFIC_TAGS).
ROLLED_OUT_TAG = "prev"


def keyed_uniform(seed: int, purpose: str, key: str) -> float:
    """A uniform draw in [0, 1) that depends only on (seed, purpose, key): Knative splits at random,
    the local runtime with FRAUD_ROLLOUT_SPLIT_SEED splits by this, so a rerun routes alike."""
    digest = hashlib.blake2b(f"{seed}:{purpose}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


class NoPredictor(RuntimeError):
    """No predictor revision receives traffic."""


class Routes:
    """Weighted choice among predictor backends, static or from a routes file."""

    def __init__(self, backends: list[Backend] | None = None, routes_file: Path | None = None,
                 seed: int | None = None) -> None:
        """`seed` makes the split a function of each request's key (`pick(key)`): the same
        transactions go to the same revision whatever order or concurrency they arrive in."""
        if (backends is None) == (routes_file is None):
            raise ValueError("give either backends or a routes file")
        self.routes_file = routes_file
        self._stamp: int | None = None
        self._seed = seed
        self._rng = random.Random()
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

    def pick(self, key: str | None = None) -> Backend:
        self.refresh()
        if not self.backends:
            raise NoPredictor("no predictor revision receives traffic")
        if len(self.backends) == 1:
            return self.backends[0]
        seeded = self._seed is not None and key is not None
        draw = (keyed_uniform(self._seed, "split", key) if seeded else self._rng.random()) * self._total  # type: ignore[arg-type]
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


class TagHosts:
    """The tag-routing hosts of a cluster InferenceService (`latest`, `prev`), with the version each
    last answered (see the module docstring)."""

    def __init__(self, hosts: dict[str, str]) -> None:
        if not hosts:
            raise ValueError("give at least one tag host")
        self._hosts = {tag: url.rstrip("/") if "://" in url else f"http://{url.rstrip('/')}"
                       for tag, url in hosts.items()}
        self._versions: dict[str, str] = {}  # url -> the model_version it answered last
        self.tags = frozenset(self._hosts)

    @classmethod
    def parse(cls, text: str) -> TagHosts:
        """`latest=URL,prev=URL` → TagHosts; ValueError naming the malformed part."""
        hosts = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            tag, sep, url = part.partition("=")
            if not sep or not tag.strip() or not url.strip():
                raise ValueError(f"{part!r} is not TAG=URL (e.g. latest=http://latest-fraud-detector-predictor.ns)")
            hosts[tag.strip()] = url.strip()
        return cls(hosts)

    def learn(self, url: str, model_version: str) -> None:
        self._versions[url] = model_version

    def other_than(self, model_version: str) -> Backend | None:
        """A host last seen answering another version, else one not heard from yet, else one that
        answered this version (tags move on promote and rollback: it may serve another one now)."""
        fallback: list[Backend] = []
        for tag, url in self._hosts.items():
            seen = self._versions.get(url)
            if seen is not None and seen != model_version:
                return Backend(url, tag, seen, 0)
            fallback.append(Backend(url, tag, seen or "", 0))
        fallback.sort(key=lambda b: b.model_version != "")
        return fallback[0] if fallback else None

    def retry_target(self, failed_version: str) -> Backend | None:
        """Where to retry a failed call (see the module docstring): a host last seen answering a
        version other than `failed_version` if that is known ("" when not), else `prev`."""
        if failed_version:
            for tag, url in self._hosts.items():
                seen = self._versions.get(url)
                if seen is not None and seen != failed_version:
                    return Backend(url, tag, seen, 0)
        url = self._hosts.get(ROLLED_OUT_TAG)
        return Backend(url, ROLLED_OUT_TAG, self._versions.get(url, ""), 0) if url else None
