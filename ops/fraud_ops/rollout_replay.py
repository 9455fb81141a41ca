"""A labelled evidence source for the rollout: each window replays the next slice of the holdout
through the live transformer (`replay_load.send`, the same client as `fraud-rollout replay`) and
counts what each version answered against the labels: each window is its own slice (the rollout's
ledger adds windows up). When the holdout runs out it starts again from the first row (the same
transactions are then seen twice: the demo's holdout is a sample, not live traffic).

With the transformer's shadow pair log, each window also joins its shadow-scored requests with
their labels (`replay_pairs`)."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from fraud.schema import FEATURES, LABEL
from fraud_canary.paired import PairedOutcomes
from fraud_control.rollout.controller import Evidence, RolloutAborted, Window, now_iso

from fraud_ops.replay_load import ReplayOptions, default_batch, send, transaction_ids
from fraud_ops.replay_pairs import labels_by_request, paired_from_log, read_pairs, wait_drained
from fraud_ops.replay_report import online_metrics


class ReplayWindow:
    """`rows_per_window` holdout rows per window, sent to `options.url`."""

    def __init__(self, frame: pd.DataFrame, options: ReplayOptions, rows_per_window: int, *,
                 pairs_log: Path | None = None, versions: tuple[str, str] | None = None) -> None:
        """`pairs_log` (the transformer's shadow pair log) and `versions` (baseline, canary) add paired
        evidence to each window."""
        if rows_per_window < 1 or frame.empty:
            raise ValueError("a replay window needs at least one row and a non-empty holdout")
        self.frame, self.rows_per_window = frame.reset_index(drop=True), rows_per_window
        self.options = replace(options, progress=False, batch=options.batch or default_batch(rows_per_window))
        self.offset = 0
        self.pairs_log, self.versions = pairs_log, versions

    def _next_slice(self) -> pd.DataFrame:
        index = (self.offset + np.arange(self.rows_per_window)) % len(self.frame)
        self.offset = int((self.offset + self.rows_per_window) % len(self.frame))
        return self.frame.iloc[index]

    def window(self, percent: int, stop: Callable[[], bool]) -> Evidence:
        if stop():
            raise RolloutAborted("abort requested before the replay window")
        started, started_at = time.monotonic(), now_iso()
        chunk = self._next_slice()
        rows = send(chunk.loc[:, list(FEATURES)].to_numpy(dtype=np.float64), self.options,
                    transaction_ids=transaction_ids(chunk))
        rows.labels = chunk[LABEL].to_numpy(dtype=np.int8)
        rows.amount = chunk["Amount"].to_numpy(dtype=np.float64)
        frame = rows.frame()
        return Evidence(online_metrics(frame), Window(started_at, now_iso(), time.monotonic() - started, len(frame)),
                        paired=self._pairs(rows),
                        source=f"replay of {len(frame)} holdout rows to {self.options.url}")

    def _pairs(self, rows) -> PairedOutcomes | None:
        """This window's shadow pairs, labelled (None without a pair log)."""
        if self.pairs_log is None or self.versions is None:
            return None
        wait_drained(self.options.url)
        return paired_from_log(read_pairs(self.pairs_log), labels_by_request(rows, rows.id_prefix),
                               baseline_version=self.versions[0], canary_version=self.versions[1])
