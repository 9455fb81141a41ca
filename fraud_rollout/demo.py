"""`fraud-rollout demo`: the whole story on this machine, with the embedded defaults.

    pipeline (kfp.local: simulate drift → train v1, v2 → evaluate → gate → deploy the canary locally)
    → serve (the local canary runtime: v1 rolled out, v2 at 20 %, every request in the prediction log)
    → replay the holdout through the transformer → canary analyze
    → the same analysis from the prediction log, before and after the holdout's labels arrive
    → apply the recommendation (a progressive rollout)
    → report.json and report.html in --out, and the commands to explore further.

Every server it starts is stopped when it ends, fails, or is interrupted (Ctrl-C or SIGTERM).
`--from-report` skips the pipeline and replays an earlier run's holdout through its models.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from fraud.protocol import IS_FRAUD

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

DEFAULT_OUT = Path(".fraud-rollout/demo")
#: Requests sent after the decision is applied, to show where traffic goes now.
TRAFFIC_PROBE_REQUESTS = 200
#: The demo's shadow share: its holdout has about 320 frauds, so every pair counts (`serve` defaults to 10 %).
DEMO_SHADOW_PERCENT = 100.0
#: The holdout is replayed once more by the rollout, in windows of this share of it: one window per
#: step below 100 % of the default plan (5, 20, 50), and one left for a hold before it starts over.
ROLLOUT_WINDOW_SHARE = 0.25


def register(commands, bench) -> None:
    from fraud_rollout.args import AUTO, detectable_difference, non_negative_float
    from fraud_rollout.pipeline_cli import add_run_options
    from fraud_rollout.serving_cli import shadow_percent

    demo = commands.add_parser("demo", help="the whole story locally: pipeline, canary, replay, analysis, report; "
                                            "everything it writes stays under --out")
    # The demo's serving state is its own (<out>/serving), so it never meets the canary of a
    # `pipeline run`, which deploys to .fraud-rollout/serving.
    add_run_options(demo, default_out=DEFAULT_OUT, state_dir_flag="--state-dir")
    demo.add_argument("--from-report", type=Path,
                      help="skip the pipeline: use this earlier run's report.json (its models and holdout)")
    demo.add_argument("--detectable-recall-difference", type=detectable_difference, default=None,
                      help="recall drop the canary evidence must be able to detect (default: the default "
                           f"policy's 0.10, which the shadow pairs decide; {AUTO!r}: the smallest the replay supports)")
    demo.add_argument("--shadow-percent", type=shadow_percent, default=DEMO_SHADOW_PERCENT,
                      help="share of requests also scored on the other revision (default 100: the holdout has "
                           "about 320 frauds, and every pair counts; `serve` defaults to 10)")
    demo.add_argument("--random-split", action="store_true",
                      help="split traffic at random, as Knative does (default: by transaction, seeded with --seed, so "
                           "the same seed tells the same story)")
    demo.add_argument("--review-cost", type=non_negative_float, default=5.0,
                      help="assumed cost of reviewing one flagged transaction (business-impact estimate)")
    demo.add_argument("--no-apply", action="store_true", help="recommend only; do not promote or roll back")
    demo.add_argument("--keep-serving", action="store_true",
                      help="after the report, keep the runtime serving until Ctrl-C")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar during the replay")
    demo.set_defaults(func=demo_command)


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def demo_command(args) -> int:
    from fraud_pipelines.local import PipelineFailed, RunRefused

    from fraud_rollout.args import UsageError

    previous = signal.signal(signal.SIGTERM, _interrupt)  # stop servers on SIGTERM as on Ctrl-C
    try:
        return run_demo(args)
    except RunRefused as error:  # known before any step ran: nothing touched
        raise UsageError(str(error)) from None
    except PipelineFailed as error:
        print(f"fraud-rollout demo: {error}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)


def _pipeline(args, out: Path) -> tuple[dict, Path]:
    """Run the pipeline into out/pipeline (or read --from-report); the report and its path."""
    from fraud import registry
    from fraud.report import text_summary
    from fraud_ops.replay_source import read_pipeline_report
    from fraud_pipelines.local import run_local

    from fraud_rollout.pipeline_cli import _options

    if args.from_report is not None:
        return read_pipeline_report(args.from_report, option="--from-report"), args.from_report.resolve()
    options = _options(args)
    # The demo's own world: its state dir and (unless one is given) its own registry, so that it
    # never meets, nor moves the aliases of, a `pipeline run`'s champion; and it always tells the
    # first run's story (train v1, canary v2), so its earlier rollout is replaced.
    options = replace(options, out_dir=out / "pipeline", serving_state_dir=args.serving_state_dir,
                      mlflow_tracking_uri=options.mlflow_tracking_uri or registry.resolve_tracking_uri("", out))
    _forget_demo_rollout(args.serving_state_dir)
    report = run_local(options, baseline_from="train")
    print(text_summary(report), flush=True)
    return report, (out / "pipeline" / "report.json").resolve()


def _forget_demo_rollout(state_dir: Path) -> None:
    """Remove the InferenceService an earlier demo left in the demo's state dir, unless a `serve`
    runs it (then the deploy step refuses its running canary as KServe would, naming --supersede)."""
    from fraud_control.inferenceservice.local_state import LocalInferenceService
    from fraud_control.local_runtime.runtime import read_runtime

    service = LocalInferenceService(state_dir)
    if service.exists() and not read_runtime(state_dir):
        log.info("removing the earlier demo's rollout in %s", state_dir)
        service.delete()


def _role_artifacts(pipeline: dict) -> tuple[str, str]:
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

    baseline, candidate = _role_artifacts(pipeline)
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


def run_demo(args) -> int:
    from fraud import registry
    from fraud.export import read_feature_profile, read_score_profile
    from fraud.files import read_json, write_json
    from fraud.schema import FEATURES
    from fraud_canary.analysis import analyze, format_analysis, metrics_from_replay, offline_metrics, paired_from_replay
    from fraud_control.local_runtime.runtime import PAIRS_FILE
    from fraud_ops import demo_feedback, demo_report
    from fraud_ops.replay_load import ReplayOptions
    from fraud_ops.replay_report import offline_decisions, summary_lines
    from fraud_ops.replay_source import load_source

    from fraud_rollout.canary_cli import local_status, local_subject
    from fraud_rollout.pipeline_cli import gate_rejection
    from fraud_rollout.replay import run_replay

    started = time.perf_counter()
    timings: dict[str, float] = {}
    out = args.out.resolve()
    if args.serving_state_dir is None:
        args.serving_state_dir = out / "serving"
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("report.json", "report.html"):
        (out / stale).unlink(missing_ok=True)  # a failed demo never leaves a report that looks valid
    state_dir = args.serving_state_dir.resolve()

    pipeline, pipeline_path = _pipeline(args, out)
    timings["pipeline"] = round(time.perf_counter() - started, 1)
    if pipeline["gate"]["decision"] != "promote":
        print(gate_rejection(pipeline))
        print(f"  No canary to analyze. Offline report: {pipeline_path}")
        return 0
    source = load_source(None, pipeline_path)
    raw = source.frame.loc[:, list(FEATURES)].to_numpy(dtype=np.float64)
    write_sample(source.frame, out / SAMPLE_FILE)
    tracking_uri = pipeline.get("mlflow", {}).get("tracking_uri", "")

    store = demo_feedback.fresh_store(out)
    serving = serving_for(pipeline, state_dir, out / "logs", args.shadow_percent, prediction_log=store,
                          split_seed=None if args.random_split else args.seed)
    mark = time.perf_counter()
    print(f"\nstarting the local canary runtime ({'manifest from the pipeline' if serving.baseline is None else 'v1 rolled out, v2 at 20 %'}) …",
          flush=True)
    with serving:
        timings["serve_start"] = round(time.perf_counter() - mark, 1)
        print(f"serving at {serving.url}", flush=True)

        mark = time.perf_counter()
        replay_started = datetime.now(UTC)
        replayed = run_replay(source, ReplayOptions(url=serving.url, progress=not args.no_progress), out / "replay.json",
                              subject=local_subject(state_dir), pairs_log=state_dir / PAIRS_FILE)
        timings["replay_and_skew_check"] = round(time.perf_counter() - mark, 1)
        print("\n".join(summary_lines(replayed.report)), flush=True)

        baseline_version, canary_version = (str(pipeline["models"][role]["version"]) for role in ("v1", "v2"))
        holdout_metrics = offline_metrics(pipeline, with_flag_rate=True)  # online traffic is the holdout
        canary_percent = float(serving.service.get()["spec"]["predictor"].get("canaryTrafficPercent", 20))

        def analyze_with(online, paired) -> dict:
            return analyze(online, holdout_metrics, baseline_version=baseline_version, canary_version=canary_version,
                           canary_percent=canary_percent, detectable=args.detectable_recall_difference, paired=paired)

        analysis = analyze_with(metrics_from_replay(replayed.report),
                                paired_from_replay(replayed.report, baseline_version, canary_version))
        print("\n" + format_analysis(analysis), flush=True)

        mark = time.perf_counter()
        summary_path = pipeline.get("artifacts", {}).get("summary")
        summary = read_json(summary_path) if summary_path and Path(summary_path).is_file() else None
        feedback, drift = demo_feedback.feedback_loop(
            store, serving.url, source.frame, (baseline_version, canary_version), analyze_with, analysis, out,
            replay_started, {str(m["version"]): read_score_profile(m["artifact"]) for m in pipeline["models"].values()},
            read_feature_profile(pipeline["models"]["v1"]["artifact"]), (summary or {}).get("feature_drift_by_month", []))
        timings["prediction_log"] = round(time.perf_counter() - mark, 1)
        print("\n" + "\n".join(demo_feedback.feedback_lines(feedback) + demo_feedback.drift_lines(drift)), flush=True)

        applied = {"action": analysis["action"], "detail": "not applied (--no-apply)", "exit_code": None}
        rollout = None
        if not args.no_apply:
            mark = time.perf_counter()
            print("\nrolling out: canaryTrafficPercent 5 → 20 → 50 → 100, one replay window per step", flush=True)
            rollout = progressive_rollout(source, serving.url, state_dir, holdout_metrics, tracking_uri,
                                          (baseline_version, canary_version), args.detectable_recall_difference,
                                          dict(zip((baseline_version, canary_version), _role_artifacts(pipeline))),
                                          args.settings)
            timings["rollout"] = round(time.perf_counter() - mark, 1)
            result = rollout["result"]
            applied = {"action": rollout["status"], "detail": result.get("action") or result["note"],
                       "exit_code": 0 if rollout["status"] in ("promoted", "rolled_back") else 1}
            serving.wait_applied()  # the runtime has moved traffic as the manifest now says
        probe = probe_traffic(serving.url, raw[0])
        status = local_status(state_dir)
        traffic_after = {"summary": traffic_summary(status, probe), "probe": probe,
                         "canaryTrafficPercent": status["canaryTrafficPercent"], "traffic": status["predictor"].get("traffic")}
        print(f"traffic now: {traffic_after['summary']}", flush=True)

        if args.keep_serving:
            print(f"\nserving at {serving.url} until Ctrl-C", flush=True)
            signal.pause()

    mark = time.perf_counter()
    rows = replayed.rows.frame()
    offline = offline_decisions(raw, source.artifacts)
    labels, amount = source.frame["Class"].to_numpy(), source.frame["Amount"].to_numpy(dtype=float)
    online_flags = np.where(rows["error"], 0, np.nan_to_num(rows["decision"].to_numpy(), nan=0)).astype(bool)
    impact = demo_report.business_impact(labels, amount, {v: o[IS_FRAUD] for v, o in offline.items()}, online_flags,
                                         demo_report.ImpactAssumptions(review_cost=args.review_cost))
    from mlflow.exceptions import MlflowException

    try:
        aliases = registry.aliases(tracking_uri) if tracking_uri else {}
    except MlflowException as error:  # the report still says what happened
        log.warning("could not read MLflow aliases: %s", error)
        aliases = {}
    vs = demo_report.online_vs_offline(pipeline, replayed.report, analysis)
    report = {
        "kind": "fraud-rollout demo",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "paths": {"pipeline_report": str(pipeline_path), "replay_report": str(replayed.report_path),
                  "state_dir": str(state_dir), "html": str(out / "report.html"), "logs": str(out / "logs")},
        "pipeline": pipeline,
        "replay": replayed.report,
        "analysis": analysis,
        "feedback": feedback,
        "drift": drift,
        "applied": applied,
        "rollout": rollout,
        "traffic_after": traffic_after,
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
        "explore": explore_commands(out, pipeline_path, state_dir, tracking_uri, raw[0], feedback),
    }
    html_text = demo_report.report_html(report, summary, rows)
    timings["report"] = round(time.perf_counter() - mark, 1)
    timings["total"] = round(time.perf_counter() - started, 1)
    (out / "report.html").write_text(html_text)
    write_json(out / "report.json", report)

    print(final_summary(report, out))
    return 0


def progressive_rollout(source, url: str, state_dir: Path, offline: dict, tracking_uri: str,
                        versions: tuple[str, str], detectable, artifacts: dict[str, str], settings) -> dict:
    """`fraud-rollout rollout start` on the demo's runtime, its evidence a labelled replay of the
    holdout in windows (with the shadow pairs); returns the rollout's final state (`steps[]`)."""
    from fraud_canary.progressive import RolloutPolicy
    from fraud_control.inferenceservice.local_store import LocalStore
    from fraud_control.local_runtime.runtime import PAIRS_FILE
    from fraud_control.rollout.controller import Controller, RolloutConfig
    from fraud_control.rollout.evidence import AfterLocalApply
    from fraud_control.rollout.record import JsonLinesLog, step_line
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

    def show(step, _analysis) -> None:
        print(f"  {step_line(step)}", flush=True)

    controller = Controller(LocalStore(state_dir), AfterLocalApply(windows, state_dir),
                            LocalRolloutState(state_dir), config, [JsonLinesLog(state_dir / LOG_FILE)], on_step=show)
    return controller.run()


def final_summary(report: dict, out: Path) -> str:
    checks, impact = report["checks"], report["business_impact"]
    lines = ["", "fraud-rollout demo", "=" * 18,
             f"  recommendation: {checks['recommendation'].upper()}; applied: {report['applied']['detail']}",
             f"  traffic now: {report['traffic_after']['summary']}",
             "  rollout: " + (" → ".join(f"{s['percent']} % {s['decision']}" for s in report["rollout"]["steps"])
                              if report.get("rollout") else "not run (--no-apply)"),
             f"  MLflow aliases: {report['mlflow_aliases_after'] or 'n/a'}",
             f"  skew: {checks['skew_disagreements']} online/offline decision disagreements",
             f"  prediction log: {report['feedback']['logged']} requests, {report['feedback']['labelled']} labelled; "
             f"its analysis {'matches' if checks['prediction_log_matches_replay'] else 'DOES NOT match'} the replay's",
             "  online recall within the 95 % interval around offline: "
             + ", ".join(f"{v} {'yes' if ok else 'NO'}" for v, ok in checks["recall_within_interval"].items())]
    if "difference" in impact:
        d = impact["difference"]
        lines.append(f"  business impact over the holdout ({d['versions']}): net {d['net_benefit']:+,.0f} "
                     f"(assumes {impact['review_cost']:g} per review; see the report)")
    lines.append(f"  timings (s): {report['timings']}")
    lines.append(f"\n  report: {out / 'report.html'}  and  {out / 'report.json'}\n\nexplore further:")
    lines += [f"  {command}" for command in report["explore"]]
    return "\n".join(lines)
