"""The demo's steps below its command (`fraud-rollout demo`, which parses, runs them in order and
prints): serving the run's models, probing where traffic goes, the progressive rollout on the
demo's runtime, the sample file, the commands to explore further, and the report."""
from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from fraud.protocol import IS_FRAUD

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

#: Requests sent after the decision is applied, to show where traffic goes now.
TRAFFIC_PROBE_REQUESTS = 200
#: The holdout is replayed once more by the rollout, in windows of this share of it: one window per
#: step below 100 % of the default plan (5, 20, 50), and one left for a hold before it starts over.
ROLLOUT_WINDOW_SHARE = 0.25


def forget_demo_rollout(state_dir: Path) -> None:
    """Remove the InferenceService an earlier demo left in the demo's state dir, unless a `serve`
    runs it (then the deploy step refuses its running canary as KServe would, naming --supersede)."""
    from fraud_control.inferenceservice.local_state import LocalInferenceService
    from fraud_control.local_runtime.runtime import read_runtime

    service = LocalInferenceService(state_dir)
    if service.exists() and not read_runtime(state_dir):
        log.info("removing the earlier demo's rollout in %s", state_dir)
        service.delete()


def role_artifacts(pipeline: dict) -> tuple[str, str]:
    """(baseline, candidate) artifact roots: a report's models are keyed by role (v1 = baseline)."""
    return pipeline["models"]["v1"]["artifact"], pipeline["models"]["v2"]["artifact"]


def deployed_by_pipeline(state_dir: Path, artifacts: tuple[str, str]) -> bool:
    """Does the InferenceService in `state_dir` already run this run's (baseline, candidate), the
    candidate as a canary (the pipeline's local deploy step wrote it)?"""
    from fraud_control.inferenceservice.local_state import LocalInferenceService

    service = LocalInferenceService(state_dir)
    if not service.exists() or "canaryTrafficPercent" not in service.get()["spec"]["predictor"]:
        return False
    served = {Path(r["storageUri"]).resolve() for r in service.revisions().values()}
    return {Path(a).resolve() for a in artifacts} <= served


def serving_for(pipeline: dict, state_dir: Path, log_dir: Path, shadow: float | None = None,
                prediction_log: Path | None = None, split_seed: int | None = None):
    """`fraud-rollout serve` for the run: the manifest the pipeline deployed as it is, or (a run
    without the local deploy, or --from-report) a new one with v1 rolled out and v2 at 20 %."""
    from fraud_ops.serving_session import LocalServing

    baseline, candidate = role_artifacts(pipeline)
    store = None if prediction_log is None else str(prediction_log)
    if deployed_by_pipeline(state_dir, (baseline, candidate)):
        return LocalServing(state_dir, log_dir=log_dir, shadow_percent=shadow, prediction_log=store,
                            split_seed=split_seed)
    return LocalServing(state_dir, baseline=baseline, candidate=candidate, canary_percent=20, log_dir=log_dir,
                        shadow_percent=shadow, prediction_log=store, split_seed=split_seed)


def probe_traffic(url: str, raw_row: np.ndarray, requests: int = TRAFFIC_PROBE_REQUESTS) -> dict[str, int]:
    """Send `requests` one-row requests; count the answering versions (and failures)."""
    import httpx
    from fraud.protocol import request_body
    from fraud_serving.client import infer_url

    counts: dict[str, int] = {}
    body = request_body(raw_row.reshape(1, -1))
    with httpx.Client(timeout=30) as client:
        for _ in range(requests):
            response = client.post(infer_url(url), json=body)
            key = response.json().get("model_version", "?") if response.status_code == 200 else "error"
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def traffic_summary(status: dict, probe: dict[str, int] | None) -> str:
    revisions = status.get("revisions", {})
    split = ", ".join(f"{revisions.get(e['revisionName'], {}).get('modelVersion', '?')} {e['percent']} %"
                      for e in status["predictor"].get("traffic", []))
    if probe:
        split += " (probe: " + ", ".join(f"{v} {n}" for v, n in probe.items()) + f" of {sum(probe.values())} requests)"
    return split


def runnable(name: str) -> str:
    """How to run this environment's `name` from here: bare when it is the one on PATH, else its
    path in the venv (relative when under the working directory)."""

    here, on_path = Path(sys.executable).parent / name, shutil.which(name)
    if on_path and Path(on_path).resolve() == here.resolve():
        return name
    relative = os.path.relpath(here)
    return str(here) if relative.startswith("..") else relative


#: A few holdout transactions without their labels, for `predict --file` (the README's first request).
SAMPLE_FILE = "transactions.csv"
SAMPLE_ROWS = 5


def write_sample(frame: pd.DataFrame, path: Path) -> None:
    from fraud.schema import FEATURES, TRANSACTION_ID

    columns = [c for c in (TRANSACTION_ID, *FEATURES) if c in frame.columns]
    frame.loc[:, columns].head(SAMPLE_ROWS).to_csv(path, index=False)


def explore_commands(out: Path, pipeline_path: Path, state_dir: Path, tracking_uri: str, raw_row: np.ndarray,
                     feedback: dict) -> list[str]:
    data = json.dumps({"inputs": [{"name": "transactions", "shape": [1, 30], "datatype": "FP64",
                                   "data": [[round(float(x), 4) for x in raw_row]]}]}, separators=(",", ":"))
    cli, mlflow = (runnable(name) for name in ("fraud-rollout", "mlflow"))
    return [
        f"export MLFLOW_TRACKING_URI={tracking_uri}   # the demo's registry: promote and roll back move its aliases",
        f"{cli} serve --state-dir {state_dir}        # serve what the demo left (Ctrl-C stops)",
        f"curl -s -H 'content-type: application/json' -d '{data}' "
        "http://127.0.0.1:8080/v2/models/fraud-detector/infer",
        f"{cli} canary status --state-dir {state_dir}",
        f"{cli} replay --url http://127.0.0.1:8080 --report {pipeline_path}",
        f"{cli} canary analyze --replay-report {out / 'replay.json'} --state-dir {state_dir}",
        f"{cli} canary analyze --store {feedback['store']} --since {feedback['since']} "
        f"--until {feedback['until']} --holdout-traffic --report {pipeline_path} --state-dir {state_dir}",
        f"{mlflow} ui --backend-store-uri {tracking_uri}",
        f"xdg-open {out / 'report.html'}",
    ]


def build_report(story: dict, source, raw: np.ndarray, out: Path, state_dir: Path, review_cost: float,
                 timings: dict) -> tuple[dict, str]:
    """The demo's report.json (`timings` by reference: the caller adds the last ones) and its HTML,
    from what the steps gathered in `story` (pipeline, replayed, analysis, feedback, drift, applied,
    rollout, traffic_after, summary)."""
    from fraud import registry
    from mlflow.exceptions import MlflowException

    from fraud_ops import demo_report
    from fraud_ops.replay_report import offline_decisions

    pipeline, replayed, analysis, feedback = story["pipeline"], story["replayed"], story["analysis"], story["feedback"]
    tracking_uri, applied = story["tracking_uri"], story["applied"]
    rows = replayed.rows.frame()
    offline = offline_decisions(raw, source.artifacts)
    labels, amount = source.frame["Class"].to_numpy(), source.frame["Amount"].to_numpy(dtype=float)
    online_flags = np.where(rows["error"], 0, np.nan_to_num(rows["decision"].to_numpy(), nan=0)).astype(bool)
    impact = demo_report.business_impact(labels, amount, {v: o[IS_FRAUD] for v, o in offline.items()}, online_flags,
                                         demo_report.ImpactAssumptions(review_cost=review_cost))
    try:
        aliases = registry.aliases(tracking_uri) if tracking_uri else {}
    except MlflowException as error:  # the report still says what happened
        log.warning("could not read MLflow aliases: %s", error)
        aliases = {}
    vs = demo_report.online_vs_offline(pipeline, replayed.report, analysis)
    report = {
        "kind": "fraud-rollout demo",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "paths": {"pipeline_report": str(story["pipeline_path"]), "replay_report": str(replayed.report_path),
                  "state_dir": str(state_dir), "html": str(out / "report.html"), "logs": str(out / "logs")},
        "pipeline": pipeline,
        "replay": replayed.report,
        "analysis": analysis,
        "feedback": feedback,
        "drift": story["drift"],
        "applied": applied,
        "rollout": story["rollout"],
        "traffic_after": story["traffic_after"],
        "mlflow_aliases_after": aliases,
        "online_vs_offline": vs,
        "business_impact": impact,
        "checks": {"skew_disagreements": (replayed.report.get("skew") or {}).get("disagreements"),
                   "recall_within_interval": {r["version"]: r["within"] for r in vs if r["metric"] == "recall"},
                   "recommendation": analysis["action"],
                   "prediction_log_matches_replay": feedback["matches_replay"]["counts"]
                   and feedback["matches_replay"]["recommendation"],
                   "applied": applied["exit_code"] == 0},
        "timings": timings,
        "explore": explore_commands(out, story["pipeline_path"], state_dir, tracking_uri, raw[0], feedback),
    }
    return report, demo_report.report_html(report, story["summary"], rows)


def progressive_rollout(source, url: str, state_dir: Path, offline: dict, tracking_uri: str,
                        versions: tuple[str, str], detectable, artifacts: dict[str, str], settings,
                        on_step: Callable[[dict, dict], None] | None = None) -> dict:
    """`fraud-rollout rollout start` on the demo's runtime, its evidence a labelled replay of the
    holdout in windows (with the shadow pairs); returns the rollout's final state (`steps[]`)."""
    from fraud_canary.progressive import RolloutPolicy
    from fraud_control.inferenceservice.local_store import LocalStore
    from fraud_control.local_runtime.runtime import PAIRS_FILE
    from fraud_control.rollout.controller import Controller, RolloutConfig
    from fraud_control.rollout.evidence import AfterLocalApply
    from fraud_control.rollout.record import JsonLinesLog
    from fraud_control.rollout.run import LOG_FILE, score_profiles
    from fraud_control.rollout.state import LocalRolloutState

    from fraud_ops.replay_load import ReplayOptions
    from fraud_ops.rollout_replay import ReplayWindow

    windows = ReplayWindow(source.frame, ReplayOptions(url=url, progress=False),
                           max(1, int(len(source.frame) * ROLLOUT_WINDOW_SHARE)),
                           pairs_log=state_dir / PAIRS_FILE, versions=versions)
    profiles, _ = score_profiles(artifacts, settings)  # without them the labelled replay still decides
    config = RolloutConfig(baseline_version=versions[0], canary_version=versions[1], offline=offline,
                           policy=RolloutPolicy(), detectable=detectable, tracking_uri=tracking_uri, poll_s=0.2,
                           profiles=profiles)
    (state_dir / LOG_FILE).unlink(missing_ok=True)  # this rollout's steps only
    controller = Controller(LocalStore(state_dir), AfterLocalApply(windows, state_dir),
                            LocalRolloutState(state_dir), config, [JsonLinesLog(state_dir / LOG_FILE)], on_step=on_step)
    return controller.run()
