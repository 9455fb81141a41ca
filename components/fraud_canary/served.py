"""Per-version metrics from the prediction log: what was served, and the labels that have matured.

The log (`fraud_control.prediction_log.store`) holds one row per served transaction: the version that
answered (the response body's `model_version`), its score and decision, when it was requested and
answered, and, once ingested, its label and when the label arrived. A label arrives weeks to
months after the prediction (a chargeback), so recall and precision count only the rows whose
label window has closed: requested at least `label_maturity` before `as_of`, with a label that had
arrived by `as_of`. Counting younger rows would bias recall: frauds are often reported first.
Everything else (traffic share, flag rate, latency) counts every answered row.

Shadow pairs (both versions' decisions on a row) are read the same way: the decision table counts
every pair, the recall and false-alarm tables only the pairs whose label window has closed.

A request logged without a response failed (KServe's logger sends a response event only for a
200) unless it is still in flight; the version it failed on is unknown (`UNATTRIBUTED`).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from fraud_canary.metrics import Confusion, VersionMetrics, version_metrics
from fraud_canary.paired import Discordant, PairedOutcomes, discordant

#: A request younger than this without its response may still be in flight: not yet an error.
IN_FLIGHT = timedelta(seconds=60)
#: Columns `served_metrics` reads (one row per served transaction).
SERVED_COLUMNS = ("model_version", "decision", "requested_at", "answered_at", "label", "label_time")


def mature_labels(served: pd.DataFrame, as_of: datetime, label_maturity: timedelta,
                  time_column: str = "requested_at") -> np.ndarray:
    """Each row's label where its window (from its `time_column`) has closed by `as_of`, NaN elsewhere."""
    requested = pd.to_datetime(served[time_column], utc=True)
    arrived = pd.to_datetime(served["label_time"], utc=True)
    cutoff = pd.Timestamp(as_of)
    closed = (requested + label_maturity <= cutoff) & (arrived <= cutoff) & served["label"].notna()
    return np.where(closed.to_numpy(dtype=bool), served["label"].to_numpy(dtype=float, na_value=np.nan), np.nan)


def _failed(served: pd.DataFrame, as_of: datetime, in_flight: timedelta) -> tuple[np.ndarray, np.ndarray]:
    """(failed, still in flight): rows logged without a response, older or younger than `in_flight`."""
    unanswered = served["model_version"].isna().to_numpy()
    requested = pd.to_datetime(served["requested_at"], utc=True)
    young = (requested > pd.Timestamp(as_of) - in_flight).to_numpy(dtype=bool)
    return unanswered & ~young, unanswered & young


def served_metrics(served: pd.DataFrame, *, as_of: datetime, label_maturity: timedelta = timedelta(0),
                   in_flight: timedelta = IN_FLIGHT) -> dict[str, VersionMetrics]:
    """`VersionMetrics` per version from the prediction log's rows (`SERVED_COLUMNS`).

    Latency is the logged answer time minus the request time (the component the logger sits on).
    Confusion counts only rows whose label has matured (`mature_labels`); a version none of whose
    labels has matured gets an all-zero confusion (evidence: none yet)."""
    missing = [column for column in SERVED_COLUMNS if column not in served]
    if missing:
        raise ValueError(f"the served rows lack {', '.join(missing)}")
    failed, flying = _failed(served, as_of, in_flight)
    rows = served[~flying]
    failed = failed[~flying]
    latency = (pd.to_datetime(rows["answered_at"], utc=True) - pd.to_datetime(rows["requested_at"], utc=True))
    latency_ms = (latency.dt.total_seconds() * 1000).to_numpy(dtype=float, na_value=np.nan)
    decisions = rows["decision"].to_numpy(dtype=float, na_value=np.nan)
    versions = rows["model_version"].astype(object).where(rows["model_version"].notna(), None).to_numpy()
    return version_metrics(mature_labels(rows, as_of, label_maturity), np.where(failed, 0.0, decisions),
                           versions, np.where(failed, np.nan, latency_ms), failed)


def feedback_summary(served: pd.DataFrame, *, as_of: datetime, label_maturity: timedelta = timedelta(0),
                     in_flight: timedelta = IN_FLIGHT) -> dict[str, Any]:
    """What the log holds: rows logged, answered, labelled (matured), and per version."""
    labels = mature_labels(served, as_of, label_maturity)
    failed, flying = _failed(served, as_of, in_flight)
    answered = served["model_version"].notna().to_numpy()
    per_version = {}
    for version in sorted(served.loc[answered, "model_version"].astype(str).unique()):
        mine = (served["model_version"] == version).to_numpy()
        known = mine & ~np.isnan(labels)
        per_version[version] = {"answered": int(mine.sum()), "flagged": int((mine & (served["decision"].fillna(0) == 1).to_numpy(dtype=bool)).sum()),
                                "labelled": int(known.sum()), "frauds": int(np.nansum(labels[known]))}
    return {"logged": len(served), "answered": int(answered.sum()), "failed": int(failed.sum()),
            "in_flight": int(flying.sum()), "labelled": int((~np.isnan(labels)).sum()),
            "label_maturity_days": label_maturity / timedelta(days=1), "as_of": pd.Timestamp(as_of).isoformat(),
            "per_version": per_version}


def _sides(pairs: pd.DataFrame, version: str, other: str) -> tuple[np.ndarray, np.ndarray]:
    """(the pairs of `version` with `other`, either way round; where `version` is the served side).
    `version` == `other`: every pair `version` is in."""
    served, shadow = pairs["served_version"].astype(str).to_numpy(), pairs["shadow_version"].astype(str).to_numpy()
    forward = served == version
    if version == other:
        return forward | (shadow == version), forward
    return (forward & (shadow == other)) | ((served == other) & (shadow == version)), forward


def _own(pairs: pd.DataFrame, column: str, forward: np.ndarray) -> np.ndarray:
    """The side's `served_<column>` where it was served, its `shadow_<column>` elsewhere."""
    return np.where(forward, pairs[f"served_{column}"], pairs[f"shadow_{column}"])


def _other(pairs: pd.DataFrame, column: str, forward: np.ndarray) -> np.ndarray:
    return np.where(forward, pairs[f"shadow_{column}"], pairs[f"served_{column}"])


def served_pairs(pairs: pd.DataFrame, *, baseline_version: str, canary_version: str, as_of: datetime,
                 label_maturity: timedelta = timedelta(0)) -> PairedOutcomes | None:
    """Paired outcomes of the logged shadow pairs of these two versions, served either way round
    (`fraud_control.prediction_log.store.PAIR_COLUMNS`); None when no pair is about them."""
    mine, forward = _sides(pairs, baseline_version, canary_version)
    if not mine.any():
        return None
    baseline = _own(pairs, "decision", forward)[mine].astype(bool)
    canary = _other(pairs, "decision", forward)[mine].astype(bool)
    labels = mature_labels(pairs, as_of, label_maturity, time_column="paired_at")[mine]
    known = ~np.isnan(labels)
    fraud = known & (labels == 1)
    legit = known & (labels == 0)
    return PairedOutcomes(baseline_version, canary_version, discordant(canary, baseline),
                          frauds=discordant(canary[fraud], baseline[fraud]),
                          legit=discordant(canary[legit], baseline[legit]))


def judged_by(pairs: pd.DataFrame, version: str, reference: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """On the shadow pairs of `version` with `reference` (either served): the reference's scores,
    `version`'s decisions and the rows' labels (NaN where none has arrived), as arrays; `version` ==
    `reference` gives its own scores and decisions on every pair it is in."""
    rows, forward = _sides(pairs, version, reference)
    scores = (_own if version == reference else _other)(pairs, "score", forward)
    decisions = _own(pairs, "decision", forward)
    labels = pairs["label"].to_numpy(dtype=float, na_value=np.nan)
    return scores[rows].astype(float), decisions[rows].astype(int), labels[rows]


@dataclass(frozen=True)
class MaturedLabels:
    """Labels whose window closed since the rollout's previous look, each transaction counted once:
    the canary's confusion on the rows it served, and the shadow pairs' labelled tables. The
    rollout's e-processes add them whenever they arrive (their log likelihood ratios add up over
    counts), so late labels strengthen a live rollout's label-free evidence without a second test."""

    canary: Confusion
    frauds: Discordant  # paired frauds caught by one version only
    legit: Discordant  # paired legitimate rows flagged by one version only
    #: Keys (`row_keys`) of every served row and shadow pair counted so far, this look's included.
    counted_served: frozenset[str] = frozenset()
    counted_pairs: frozenset[str] = frozenset()

    @property
    def rows(self) -> int:
        return self.canary.labelled + self.frauds.pairs + self.legit.pairs

    def summary(self) -> dict[str, int]:
        return {"canary_labelled": self.canary.labelled,
                "canary_frauds": self.canary.frauds, "canary_caught": self.canary.tp,
                "paired_frauds": self.frauds.pairs, "paired_legit": self.legit.pairs}


def row_keys(rows: pd.DataFrame) -> np.ndarray:
    """A logged row's identity: its transaction id (a retried transaction is one), else event/row."""
    events = rows["event_id"].astype(str) + "/" + rows["row"].astype(str)
    return rows["transaction_id"].astype(object).where(rows["transaction_id"].notna(), events).astype(str).to_numpy()


def _first_of_each(keys: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """`candidate` kept only at the first candidate row of each key (a key's earlier rows that are not
    candidates, e.g. served by the other version, do not hide it)."""
    out = candidate.copy()
    out[candidate] = ~pd.Series(keys[candidate]).duplicated().to_numpy()
    return out


def newly_matured(served: pd.DataFrame, pairs: pd.DataFrame, *, baseline_version: str, canary_version: str,
                  as_of: datetime, label_maturity: timedelta = timedelta(0),
                  before: MaturedLabels | None = None) -> MaturedLabels:
    """The labels matured by `as_of` on the canary's served rows and the two versions' shadow pairs
    that `before` (the previous look's) did not count yet."""
    counted_served = before.counted_served if before else frozenset()
    counted_pairs = before.counted_pairs if before else frozenset()
    labels = mature_labels(served, as_of, label_maturity)
    keys = row_keys(served)
    fresh = _first_of_each(keys, (served["model_version"] == canary_version).to_numpy(dtype=bool) & ~np.isnan(labels)
                           & ~np.isin(keys, list(counted_served)))
    fraud, flagged = labels[fresh] == 1, served["decision"].to_numpy(dtype=float, na_value=0.0)[fresh] == 1
    confusion = Confusion(tp=int((fraud & flagged).sum()), fp=int((~fraud & flagged).sum()),
                          fn=int((fraud & ~flagged).sum()), tn=int((~fraud & ~flagged).sum()))

    mine, forward = _sides(pairs, baseline_version, canary_version)
    pair_labels = mature_labels(pairs, as_of, label_maturity, time_column="paired_at")
    pair_keys = row_keys(pairs)
    new_pairs = _first_of_each(pair_keys, mine & ~np.isnan(pair_labels) & ~np.isin(pair_keys, list(counted_pairs)))
    baseline = _own(pairs, "decision", forward).astype(bool)
    canary = _other(pairs, "decision", forward).astype(bool)
    is_fraud, is_legit = new_pairs & (pair_labels == 1), new_pairs & (pair_labels == 0)
    return MaturedLabels(confusion, discordant(canary[is_fraud], baseline[is_fraud]),
                         discordant(canary[is_legit], baseline[is_legit]),
                         counted_served | frozenset(keys[fresh]), counted_pairs | frozenset(pair_keys[new_pairs]))
