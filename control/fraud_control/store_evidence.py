"""Online evidence from the prediction log (`canary analyze --store`): per-version metrics of what
was served, recall and precision from the labels whose window has closed, and the same
`recommend()` as a replay or Prometheus feeds."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fraud_canary.metrics import VersionMetrics
from fraud_canary.paired import PairedOutcomes
from fraud_canary.served import feedback_summary, served_metrics, served_pairs

from fraud_control.prediction_store import open_store


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
