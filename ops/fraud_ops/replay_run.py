"""`run_replay`: check the endpoint, replay a source through it, write the rows file and the report
(with the skew check and the shadow pairs' paired outcomes); what `fraud-rollout replay`, its bench
and the demo call."""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from fraud.schema import FEATURES

from fraud_ops.replay_load import ReplayOptions, ReplayRows, check_endpoint, default_batch, replay
from fraud_ops.replay_report import build_report, rows_path, skew_check, write_report
from fraud_ops.replay_source import ReplaySource

log = logging.getLogger(__name__)


@dataclass
class ReplayResult:
    report: dict
    report_path: Path
    rows: ReplayRows


def run_replay(source: ReplaySource, options: ReplayOptions, out: Path, *, skew: bool = True,
               on_progress: Callable[[int], None] | None = None, subject: dict | None = None,
               pairs_log: Path | None = None) -> ReplayResult:
    """Check the endpoint, replay, write the rows file and the report (with the skew check when
    each answering version's artifact is known, and the paired outcomes when `pairs_log` is the
    transformer's shadow pair log)."""
    check_endpoint(options.url, options.model_name)
    if options.batch is None:  # resolved here too, so that the report states it
        options = replace(options, batch=default_batch(min(len(source.frame), options.limit or len(source.frame))))
    rows = replay(source, options, on_progress)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame = rows.frame()
    frame.to_parquet(rows_path(out), index=False)
    skew_result = None
    if skew and source.artifacts:
        raw = source.frame.loc[:, list(FEATURES)].to_numpy(dtype=np.float64)[: len(frame)]
        skew_result = skew_check(frame, raw, source.artifacts)
    paired = shadow_pairs(options.url, pairs_log, rows, subject) if pairs_log is not None else None
    report = build_report(source, options, rows, rows_path(out), skew_result, subject, paired)
    write_report(report, out)
    return ReplayResult(report, out, rows)


def shadow_pairs(url: str, pairs_log: Path, rows: ReplayRows, subject: dict | None) -> dict | None:
    """The paired outcomes of this replay's shadowed requests (see replay_pairs), once the
    transformer's shadow work is drained; None (and a warning) when there are none to be had."""
    from fraud.schema import DataError

    from fraud_ops.replay_pairs import labels_by_request, paired_from_log, paired_versions, read_pairs, wait_drained

    versions = paired_versions(subject, rows)
    if versions is None:
        log.warning("no paired outcomes: fewer than two versions answered")
        return None
    try:
        wait_drained(url)
    except DataError as error:
        log.warning("no paired outcomes: %s", error)
        return None
    if not Path(pairs_log).is_file():
        log.warning("no paired outcomes: %s does not exist (shadow scoring off?)", pairs_log)
        return None
    paired = paired_from_log(read_pairs(pairs_log), labels_by_request(rows, rows.id_prefix),
                             baseline_version=versions[0], canary_version=versions[1])
    return None if paired is None else paired.to_dict()
