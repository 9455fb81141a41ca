"""The demo's feedback loop: the prediction log its runtime filled while the holdout was replayed,
the canary analysis from that log before and after the holdout's labels arrive, and the check that
it agrees with the replay's own analysis.

In production a label (a chargeback) comes weeks after the prediction. The demo's labels come
after its replay: `labels.csv` is written from the holdout and ingested into the store, exactly as
`fraud-rollout labels ingest FILE --store URL` does. Before it the store has predictions and shadow
pairs without labels (recall unknown: the analysis holds); after it, the store-based analysis must
give the same per-version counts and the same recommendation as the replay, which knew every label.

With the labels in, the label-free estimates can be checked against the truth on the same rows:
each version's CBPE on its own calibrated scores, and paired CBPE (its decisions judged by the
candidate's calibration on the shadow pairs, `fraud_canary.feedback`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from fraud.profile import FeatureProfile
from fraud.schema import LABEL, TRANSACTION_ID
from fraud.score_profile import ScoreProfile
from fraud_canary.feedback import FeedbackSignals
from fraud_control.local_runtime.runtime import PREDICTION_LOG_FILE

LABELS_FILE = "labels.csv"
#: Per-version counts both analyses must agree on (latency differs: the store's is the transformer's).
COMPARED_COUNTS = ("requests", "errors", "flagged", "tp", "fp", "fn", "tn")

Analyze = Callable[[dict, Any], dict]  # (online metrics, paired outcomes or None) → analysis


def fresh_store(out: Path) -> Path:
    """The demo's prediction log, empty: a run's store holds that run's traffic only."""
    path = out / PREDICTION_LOG_FILE
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


def write_labels(holdout: pd.DataFrame, path: Path, arrived: datetime) -> Path:
    """The holdout's labels as a labels file (`fraud.labels`): one row per transaction."""
    pd.DataFrame({"transaction_id": holdout[TRANSACTION_ID].astype(str), "label": holdout[LABEL].astype(int),
                  "label_time": arrived.isoformat()}).to_csv(path, index=False)
    return path


def count_differences(replay: dict, store: dict) -> dict[str, dict[str, tuple]]:
    """Per version, the compared counts where the two analyses differ: {version: {count: (replay, store)}}."""
    differences: dict[str, dict[str, tuple]] = {}
    for version in sorted(set(replay["online"]) | set(store["online"])):
        mine, theirs = replay["online"].get(version, {}), store["online"].get(version, {})
        differ = {name: (mine.get(name), theirs.get(name)) for name in COMPARED_COUNTS
                  if mine.get(name) != theirs.get(name)}
        if differ:
            differences[version] = differ
    return differences


def summary(analysis: dict) -> dict[str, Any]:
    """What the report keeps of one store analysis: its action, and what its evidence check says."""
    evidence = next((c["detail"] for c in analysis["checks"] if c["rule"] == "evidence.sample_size"), None)
    return {"action": analysis["action"], "reasons": analysis["reasons"], "evidence": evidence,
            "paired_pairs": (analysis.get("paired") or {}).get("pairs")}


def signals_and_drift(store_path: Path, since: datetime, until: datetime, profiles: dict[str, ScoreProfile],
                      feature_profile: FeatureProfile, months: list[dict]) -> tuple[dict, dict, dict]:
    """`report.json`'s label-free `signals` per version, its `estimates` beside the truth, and its
    `drift`: each input feature of the served window against the contract's reference window, the
    alerts the feedback rules fire on the window, and (`months`, from the simulate step) the drift
    of every simulated month."""
    from fraud_canary.feedback import feedback_alerts
    from fraud_control.prediction_log.feedback import store_signals

    signals = store_signals(str(store_path), profiles, feature_profile, since=since, until=until)
    if signals is None:
        return {}, {}, {"features": [], "alerts": [], "months": months}
    per_version = {v.model_version: {"rows": v.rows, "flag_rate": v.flag_rate, "score_psi": v.score_psi,
                                     "score_ks": v.score_ks, "score_ks_p": v.score_ks_p} for v in signals.versions}
    drift = {"features": [asdict(d) for d in signals.features], "alerts": feedback_alerts(signals), "months": months,
             "months_alerting": [m["month"] for m in months if m["alerts"]]}
    return per_version, estimates(store_path, since, until, signals), drift


def feedback_loop(store_path: Path, url: str, holdout: pd.DataFrame, versions: tuple[str, str],
                  analyze_with: Analyze, replay_analysis: dict, out: Path, since: datetime,
                  profiles: dict[str, ScoreProfile], feature_profile: FeatureProfile,
                  months: list[dict]) -> tuple[dict[str, Any], dict[str, Any]]:
    """After the replay (which started at `since`): wait until the log has every event, analyze the
    window from it, deliver the labels, analyze again; `report.json`'s `feedback` and `drift`."""
    from fraud.labels import read_labels
    from fraud_control.prediction_log.store import open_store
    from fraud_control.rollout.store_evidence import store_evidence

    from fraud_ops.replay_pairs import wait_logged

    wait_logged(url)  # every answered request's events are committed in the store
    until = datetime.now(UTC)  # the window: the replay's requests, not the rollout's that follow
    before = store_evidence(str(store_path), versions, since=since, until=until)
    before_analysis = analyze_with(before.online, before.paired)

    labels_path = write_labels(holdout, out / LABELS_FILE, datetime.now(UTC))
    with open_store(str(store_path)) as store:
        ingested = store.ingest_labels(read_labels(labels_path))
        counts = store.counts()
    after = store_evidence(str(store_path), versions, since=since, until=until)
    after_analysis = analyze_with(after.online, after.paired)
    differences = count_differences(replay_analysis, after_analysis)
    signals, checked, drift = signals_and_drift(store_path, since, until, profiles, feature_profile, months)
    return {
        "store": str(store_path), "since": since.isoformat(), "until": until.isoformat(), **counts,
        "labels": {"file": str(labels_path), "read": ingested.total, "joined": ingested.joined,
                   "unknown": ingested.unknown},
        "before_labels": summary(before_analysis),
        "after_labels": summary(after_analysis),
        "replay_action": replay_analysis["action"],
        "matches_replay": {"counts": not differences, "recommendation": after_analysis["action"] == replay_analysis["action"],
                           "differences": differences},
        "analysis": after_analysis,
        "estimates": checked,
        "signals": signals,
    }, drift


def _checked(precision, recall, rows: int, method: str, labels: np.ndarray, decisions: np.ndarray) -> dict[str, Any]:
    """An estimate's precision and recall (`performance.Estimate`s) beside the truth of the same rows' labels."""
    known = ~np.isnan(labels)
    fraud, flagged = labels[known] == 1, decisions[known] == 1
    tp = int((fraud & flagged).sum())
    truth = {"precision": tp / flagged.sum() if flagged.any() else float("nan"),
             "recall": tp / fraud.sum() if fraud.any() else float("nan")}
    shown: dict[str, Any] = {"rows": rows, "labelled": int(known.sum()), "method": method}
    for name, interval in (("precision", precision), ("recall", recall)):
        shown[name] = {"estimate": interval.estimate, "lower": interval.lower, "upper": interval.upper,
                       "true": truth[name], "covers": bool(interval.covers(truth[name]))}
    return shown


def estimates(store_path: Path, since: datetime, until: datetime, signals: FeedbackSignals) -> dict[str, dict[str, Any]]:
    """Per version, the window's CBPE on its own scores (every row it answered) and paired CBPE under
    the reference's calibration (its shadow pairs), as `store_signals` estimated them, each beside
    the true precision and recall of the same rows."""
    from fraud_canary.performance import PerformanceEstimate
    from fraud_canary.served import judged_by
    from fraud_control.prediction_log.store import open_store

    with open_store(str(store_path)) as store:
        served, pairs = store.served(since, until), store.pairs(since, until)
    answered = served[served["model_version"].notna() & served["score"].notna()]  # the rows store_signals reads
    shown: dict[str, dict[str, Any]] = {}
    for version in signals.versions:
        mine = answered[answered["model_version"] == version.model_version]
        decisions = mine["decision"].to_numpy(dtype=int)
        shown[version.model_version] = {"cbpe": _checked(
            version.precision, version.recall, version.rows, PerformanceEstimate.method,
            mine["label"].to_numpy(dtype=float, na_value=np.nan), decisions)}
    for model_version, paired in signals.paired.items():
        _, decisions, labels = judged_by(pairs, model_version, str(signals.paired_reference))
        shown.setdefault(model_version, {})["paired_cbpe"] = {
            "reference": signals.paired_reference,
            **_checked(paired.precision, paired.recall, paired.rows, paired.method, labels, decisions)}
    return shown


def feedback_lines(feedback: dict) -> list[str]:
    before, after, matches = feedback["before_labels"], feedback["after_labels"], feedback["matches_replay"]
    per_version = ", ".join(f"{v} {n}" for v, n in feedback["per_version"].items())
    lines = [f"prediction log {feedback['store']}: {feedback['logged']} requests logged, {feedback['answered']} "
            f"answered, rows per version {per_version}, {feedback['paired']} shadow pairs",
            f"  before the labels: {before['action'].upper()} ({before['evidence'] or '; '.join(before['reasons'])})",
            f"  labels delivered: {feedback['labels']['read']} read, {feedback['labels']['joined']} joined",
            f"  after the labels:  {after['action'].upper()}; the replay's: {feedback['replay_action'].upper()}; "
            f"per-version counts {'equal' if matches['counts'] else 'DIFFER: ' + str(matches['differences'])}"]
    lines += [f"  {version} {method} ({shown['rows']} rows): " + ", ".join(
        f"{name} {shown[name]['estimate']:.3f} [{shown[name]['lower']:.3f}, {shown[name]['upper']:.3f}] "
        f"true {shown[name]['true']:.3f}{'' if shown[name]['covers'] else ' (outside)'}" for name in ("recall", "precision"))
        for version, methods in feedback["estimates"].items() for method, shown in methods.items()]
    return lines


def drift_lines(drift: dict) -> list[str]:
    alerts = ", ".join(a.get("feature") or a.get("model_version", "") for a in drift["alerts"]) or "none"
    lines = [f"drift of the served window: alerts {alerts} "
             f"({', '.join(sorted({a['alert'] for a in drift['alerts']})) or 'no rule fires'})"]
    if drift["months"]:
        lines.append(f"  FraudFeatureDrift by simulated month: fires in months {drift['months_alerting'] or 'none'} "
                     f"of {len(drift['months'])}")
    return lines
