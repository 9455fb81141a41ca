"""What a replay found: per-version metrics (`fraud_canary`), the traffic timeline, the
training/serving skew check, and the report (JSON, NaN as null) with its per-row Parquet file.

Skew check (`skew_check`): every answered transaction's online decision must equal the offline
decision of the version that served it, i.e. that version's SavedModel signature
(`SignatureScorer`) on the contract-scaled holdout."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from fraud.protocol import FRAUD_PROBABILITY, IS_FRAUD
from fraud.schema import DataError

from fraud_ops.replay_load import ReplayOptions, ReplayRows
from fraud_ops.replay_source import ReplaySource

log = logging.getLogger(__name__)
ROWS_SUFFIX = ".rows.parquet"
#: Points in the report's traffic timeline (the "traffic split over the replay" plot).
TIMELINE_BINS = 60
ERROR_SAMPLES = 5


def online_metrics(rows: ReplayRows | pd.DataFrame, labelled: bool = True) -> dict:
    """`fraud_canary.metrics.version_metrics` over the replayed rows (a ReplayRows or its frame)."""
    from fraud_canary.metrics import version_metrics

    frame = rows.frame() if isinstance(rows, ReplayRows) else rows
    version = frame["model_version"].astype(str).to_numpy()
    error = frame["error"].to_numpy(dtype=bool)
    if "retried_from" in frame:
        # a request the transformer retried on the other revision is a failure of the version it was
        # routed to, though the client got an answer (the safety net must not hide a dying canary)
        retried_from = frame["retried_from"].astype(str).to_numpy()
        retried = retried_from != ""
        version, error = np.where(retried, retried_from, version), error | retried
    return version_metrics(frame["label"].to_numpy() if labelled else None,
                           np.where(error, 0.0, frame["decision"].to_numpy(dtype=float)),
                           version, frame["latency_ms"].to_numpy(dtype=float), error)


def timeline(rows: ReplayRows, bins: int = TIMELINE_BINS) -> list[dict]:
    """Rows per version (and failed rows) in equal slices of the replay's duration."""
    frame = rows.frame()
    if frame.empty:
        return []
    end = max(float(frame["request_start_s"].max()), 1e-9)
    edges = np.linspace(0.0, end, bins + 1)
    slot = np.clip(np.searchsorted(edges, frame["request_start_s"].to_numpy(), side="right") - 1, 0, bins - 1)
    frame = frame.assign(slot=slot, version=np.where(frame["error"], "error", frame["model_version"]))
    counts = frame.groupby(["slot", "version"]).size().unstack(fill_value=0)
    return [{"start_s": round(float(edges[s]), 3), "rows": {str(v): int(counts.loc[s, v]) for v in counts.columns
                                                            if counts.loc[s, v]}}
            for s in counts.index]


def offline_decisions(raw: np.ndarray, artifacts: dict[str, str]) -> dict[str, dict[str, np.ndarray]]:
    """Each version's own SavedModel signature on the holdout scaled by that artifact's feature
    contract: the offline decision the online answer must equal."""
    from fraud.export import SignatureScorer, read_contract

    out = {}
    for version, root in artifacts.items():
        scaled = read_contract(root).transform(raw)
        out[version] = SignatureScorer(root)(scaled)
    return out


def skew_check(rows: pd.DataFrame, raw: np.ndarray, artifacts: dict[str, str]) -> dict:
    """Compare every answered row's online decision with the offline decision of the version that
    served it. `disagreements` must be 0 (no training/serving skew)."""
    answered = ~rows["error"].to_numpy(dtype=bool)
    versions = rows["model_version"].astype(str).to_numpy()
    served = sorted(set(versions[answered].tolist()))
    missing = [v for v in served if v not in artifacts]
    offline = offline_decisions(raw[: len(rows)], {v: artifacts[v] for v in served if v in artifacts})
    per_version = {}
    disagreeing_rows: list[int] = []
    for version in served:
        if version not in offline:
            continue
        mask = answered & (versions == version)
        online_decision = rows["decision"].to_numpy()[mask].astype(np.int64)
        offline_decision = offline[version][IS_FRAUD][mask].astype(np.int64)
        differ = online_decision != offline_decision
        gap = np.abs(rows["probability"].to_numpy(dtype=np.float64)[mask]
                     - offline[version][FRAUD_PROBABILITY][mask].astype(np.float64))
        per_version[version] = {"rows": int(mask.sum()), "disagreements": int(differ.sum()),
                                "max_abs_probability_difference": float(gap.max()) if gap.size else None,
                                "offline_flagged": int(offline_decision.sum()),
                                "online_flagged": int(online_decision.sum())}
        disagreeing_rows += np.flatnonzero(mask)[differ][:10].tolist()
    return {"compared_rows": int(sum(v["rows"] for v in per_version.values())),
            "disagreements": int(sum(v["disagreements"] for v in per_version.values())),
            "versions": per_version, "versions_without_artifact": missing,
            "first_disagreeing_rows": disagreeing_rows[:10],
            "method": "online is_fraud vs SignatureScorer(artifact of the answering version) on the "
                      "contract-scaled holdout row"}


def build_report(source: ReplaySource, options: ReplayOptions, rows: ReplayRows, rows_file: Path,
                 skew: dict | None, subject: dict | None = None, paired: dict | None = None) -> dict:
    """The replay report; `subject` is the InferenceService replayed against (fraud_control.inferenceservice.subject),
    which `canary analyze --apply` compares with what is deployed then; `paired` the shadow pairs'
    `PairedOutcomes.to_dict()` (replay_pairs), None without shadow scoring."""
    from fraud_canary.metrics import UNATTRIBUTED

    metrics = online_metrics(rows)
    n = len(rows.labels)
    failed_requests = int((rows.request_status != 200).sum())
    statuses = pd.Series(rows.request_status).value_counts().sort_index()
    answered_versions = sorted({v for v in rows.request_version.tolist() if v})
    return {
        "kind": "fraud-rollout replay",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "url": options.url,
        "source": {"holdout": str(source.holdout_path.resolve()),
                   "pipeline_report": str(source.pipeline_report) if source.pipeline_report else None,
                   "artifacts": source.artifacts, "rows": n, "frauds": int(rows.labels.sum())},
        "options": {k: v for k, v in asdict(options).items() if k not in ("url", "progress")},
        "timing": {"wall_seconds": round(rows.wall_seconds, 3),
                   "rows_per_second": round(n / rows.wall_seconds, 1) if rows.wall_seconds else None,
                   "requests": len(rows.request_status),
                   "requests_per_second": (round(len(rows.request_status) / rows.wall_seconds, 1)
                                           if rows.wall_seconds else None)},
        "totals": {"rows": n, "answered_rows": int((~rows.error).sum()), "failed_rows": int(rows.error.sum()),
                   "failed_requests": failed_requests,
                   "retried_requests": int((rows.request_retried_from != "").sum()),
                   "unattributed_rows": int(metrics[UNATTRIBUTED].requests) if UNATTRIBUTED in metrics else 0,
                   "versions_answering": answered_versions},
        "versions": {version: m.to_dict() for version, m in metrics.items()},
        "errors": {"requests_by_status": {str(int(k)): int(v) for k, v in statuses.items() if k != 200},
                   "samples": rows.error_messages[:ERROR_SAMPLES]},
        "timeline": timeline(rows),
        "rows_file": rows_file.name,
        "skew": skew,
        "paired": paired,
        "subject": subject,
    }


def write_report(report: dict, path: Path) -> Path:
    from fraud.files import write_json

    return write_json(path, report)


def rows_path(report_path: Path) -> Path:
    return report_path.with_name(report_path.stem + ROWS_SUFFIX)


def read_replay(path: Path, option: str = "--replay-report") -> tuple[dict, pd.DataFrame | None]:
    """A replay report and its per-row frame (None if the rows file is gone)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{option} {path}: no such file (run `fraud-rollout replay` first)")
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(f"{option} {path}: not JSON ({error})") from None
    if not isinstance(report, dict) or report.get("kind") != "fraud-rollout replay":
        raise DataError(f"{option} {path}: not a replay report")
    rows_file = path.parent / report.get("rows_file", "")
    frame = pd.read_parquet(rows_file) if report.get("rows_file") and rows_file.is_file() else None
    return report, frame


def summary_lines(report: dict) -> list[str]:
    """The console summary of a replay report."""
    t, totals = report["timing"], report["totals"]
    lines = [f"replayed {totals['rows']:,} transactions in {t['wall_seconds']:.1f} s "
             f"({t['rows_per_second'] or 0:,.0f}/s, {t['requests']:,} requests of ≤ {report['options']['batch']}); "
             f"failed rows {totals['failed_rows']:,} in {totals['failed_requests']:,} requests",
             f"  {'version':<9}{'rows':>9}{'share':>8}{'errors':>8}{'frauds':>8}{'recall':>8}{'precision':>10}"
             f"{'flag rate':>10}{'p50 ms':>8}{'p99 ms':>8}"]

    def f(x, spec):
        return "n/a" if x is None else format(x, spec)

    for version, m in report["versions"].items():
        frauds = None if m["tp"] is None else m["tp"] + m["fn"]
        lines.append(f"  {version:<9}{m['requests']:>9,}{f(m['traffic_share'], '.1%'):>8}{m['errors']:>8,}"
                     f"{f(frauds, ','):>8}{f(m['recall'], '.3f'):>8}{f(m['precision'], '.3f'):>10}"
                     f"{f(m['flag_rate'], '.4f'):>10}{f(m['latency_p50_ms'], '.1f'):>8}{f(m['latency_p99_ms'], '.1f'):>8}")
    skew = report.get("skew")
    if skew:
        lines.append(f"  skew check: {skew['disagreements']} of {skew['compared_rows']:,} online decisions differ "
                     f"from the offline decision of the version that served them")
    paired = report.get("paired")
    if paired:
        lines.append(f"  paired (shadow): {paired['pairs']:,} rows scored by {paired['baseline_version']} and "
                     f"{paired['canary_version']}; frauds caught by one only: {paired['canary_version']} "
                     f"{paired['canary_only_right']}, {paired['baseline_version']} {paired['baseline_only_right']}"
                     f" (McNemar p {f(paired['p_value'], '.3g')})")
    if report["errors"]["samples"]:
        lines.append(f"  first errors: {report['errors']['samples'][:2]}")
    return lines
