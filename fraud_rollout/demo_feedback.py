"""The demo's feedback loop: the prediction log its runtime filled while the holdout was replayed,
the canary analysis from that log before and after the holdout's labels arrive, and the check that
it agrees with the replay's own analysis.

In production a label (a chargeback) comes weeks after the prediction. The demo's labels come
after its replay: `labels.csv` is written from the holdout and ingested into the store, exactly as
`fraud-rollout labels ingest FILE --store URL` does. Before it the store has predictions and shadow
pairs without labels (recall unknown: the analysis holds); after it, the store-based analysis must
give the same per-version counts and the same recommendation as the replay, which knew every label.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from fraud.schema import LABEL, TRANSACTION_ID

PREDICTION_LOG_FILE = "prediction-log.sqlite"
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


def feedback_loop(store_path: Path, url: str, holdout: pd.DataFrame, versions: tuple[str, str],
                  analyze_with: Analyze, replay_analysis: dict, out: Path, since: datetime) -> dict[str, Any]:
    """After the replay (which started at `since`): wait until the log has every event, analyze the
    window from it, deliver the labels, analyze again; `report.json`'s `feedback`."""
    from fraud.labels import read_labels
    from fraud_control.prediction_store import open_store
    from fraud_control.store_evidence import store_evidence

    from fraud_rollout.replay_pairs import wait_logged

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
    }


def feedback_lines(feedback: dict) -> list[str]:
    before, after, matches = feedback["before_labels"], feedback["after_labels"], feedback["matches_replay"]
    per_version = ", ".join(f"{v} {n}" for v, n in feedback["per_version"].items())
    return [f"prediction log {feedback['store']}: {feedback['logged']} requests logged, {feedback['answered']} "
            f"answered, rows per version {per_version}, {feedback['paired']} shadow pairs",
            f"  before the labels: {before['action'].upper()} ({before['evidence'] or '; '.join(before['reasons'])})",
            f"  labels delivered: {feedback['labels']['read']} read, {feedback['labels']['joined']} joined",
            f"  after the labels:  {after['action'].upper()}; the replay's: {feedback['replay_action'].upper()}; "
            f"per-version counts {'equal' if matches['counts'] else 'DIFFER: ' + str(matches['differences'])}"]
