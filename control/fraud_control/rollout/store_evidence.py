"""Online evidence from the prediction log: per-version metrics of what was served, recall and
precision from the labels whose window has closed, and the same `recommend()` as a replay or
Prometheus feeds (`canary analyze --store`); and the late labels a live rollout adds to its
counters' evidence (`rollout start --labels-from`)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from fraud.schema import DataError
from fraud_canary.metrics import VersionMetrics
from fraud_canary.paired import PairedOutcomes
from fraud_canary.served import MaturedLabels, feedback_summary, newly_matured, served_metrics, served_pairs

from fraud_control.prediction_log.store import StoreError, open_store
from fraud_control.rollout.controller import Evidence, EvidenceSource


@dataclass(frozen=True)
class StoreEvidence:
    store: str  # the store's URL, credentials redacted
    online: dict[str, VersionMetrics]
    feedback: dict[str, Any]  # `fraud_canary.served.feedback_summary`
    paired: PairedOutcomes | None  # the shadow pairs of (baseline, canary); None without any


def store_evidence(url: str, versions: tuple[str, str], *, since: datetime | None = None,
                   until: datetime | None = None, label_maturity_days: float = 0.0,
                   as_of: datetime | None = None) -> StoreEvidence:
    """Read the predictions and shadow pairs logged from `since` until before `until` and the labels
    joined to them, as of `as_of` (now); `versions` = (baseline, canary) orients the pairs."""
    as_of = as_of or datetime.now(UTC)
    maturity = timedelta(days=label_maturity_days)
    with open_store(url) as store:
        served = store.served(since, until)
        pairs = store.pairs(since, until)
        name = store.url
    feedback = feedback_summary(served, as_of=as_of, label_maturity=maturity)
    paired = served_pairs(pairs, baseline_version=versions[0], canary_version=versions[1], as_of=as_of,
                          label_maturity=maturity)
    feedback["paired"] = 0 if paired is None else paired.pairs
    return StoreEvidence(name, served_metrics(served, as_of=as_of, label_maturity=maturity), feedback, paired)


class WithStoreLabels:
    """A live source's windows plus the labels matured in the prediction store since the previous
    look, each transaction once: the canary's served rows and both versions' shadow pairs, logged
    since the rollout started. A label window (`label_maturity_days`) keeps early-reported frauds
    from biasing recall. The store unreadable is an error verdict, as a dead Prometheus is."""

    def __init__(self, source: EvidenceSource, url: str, versions: tuple[str, str], *,
                 label_maturity_days: float = 0.0, since: datetime | None = None) -> None:
        self.source, self.url, self.versions = source, url, versions
        self.maturity = timedelta(days=label_maturity_days)
        self.since = since or datetime.now(UTC)
        self.matured: MaturedLabels | None = None  # everything counted so far

    def window(self, percent: int, stop: Callable[[], bool]) -> Evidence:
        evidence = self.source.window(percent, stop)
        as_of = datetime.now(UTC)
        try:
            with open_store(self.url) as store:
                served, pairs = store.served(self.since), store.pairs(self.since)
        except (StoreError, OSError) as error:
            raise DataError(f"--labels-from: cannot read the prediction store ({error})") from None
        self.matured = newly_matured(served, pairs, baseline_version=self.versions[0],
                                     canary_version=self.versions[1], as_of=as_of, label_maturity=self.maturity,
                                     before=self.matured)
        return replace(evidence, labels=self.matured)
