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

import signal
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

DEFAULT_OUT = Path(".fraud-rollout/demo")
#: The demo's shadow share: its holdout has about 320 frauds, so every pair counts (`serve` defaults to 10 %).
DEMO_SHADOW_PERCENT = 100.0


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
    from fraud_ops.demo_steps import forget_demo_rollout
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
    forget_demo_rollout(args.serving_state_dir)
    report = run_local(options, baseline_from="train")
    print(text_summary(report), flush=True)
    return report, (out / "pipeline" / "report.json").resolve()


def run_demo(args) -> int:
    from fraud.schema import FEATURES
    from fraud_ops import demo_feedback
    from fraud_ops.demo_steps import SAMPLE_FILE, serving_for, write_sample
    from fraud_ops.replay_source import load_source

    from fraud_rollout.pipeline_cli import gate_rejection

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
    story = {"pipeline": pipeline, "pipeline_path": pipeline_path,
             "tracking_uri": pipeline.get("mlflow", {}).get("tracking_uri", "")}

    store = demo_feedback.fresh_store(out)
    serving = serving_for(pipeline, state_dir, out / "logs", args.shadow_percent, prediction_log=store,
                          split_seed=None if args.random_split else args.seed)
    mark = time.perf_counter()
    print(f"\nstarting the local canary runtime ({'manifest from the pipeline' if serving.baseline is None else 'v1 rolled out, v2 at 20 %'}) …",
          flush=True)
    with serving:
        timings["serve_start"] = round(time.perf_counter() - mark, 1)
        print(f"serving at {serving.url}", flush=True)
        _replay_and_analyze(args, story, source, serving, state_dir, out, timings)
        _feedback(story, source, serving, store, out, timings)
        _apply(args, story, source, serving, state_dir, raw, timings)
        if args.keep_serving:
            print(f"\nserving at {serving.url} until Ctrl-C", flush=True)
            signal.pause()
    _report(args, story, source, raw, out, state_dir, timings, started)
    return 0


def _replay_and_analyze(args, story: dict, source, serving, state_dir: Path, out: Path, timings: dict) -> None:
    """Replay the holdout through the runtime and analyze the canary on it (story: replayed, analysis,
    holdout_metrics, versions, analyze_with)."""
    from fraud_canary.analysis import analyze, format_analysis, metrics_from_replay, offline_metrics, paired_from_replay
    from fraud_control.local_runtime.runtime import PAIRS_FILE
    from fraud_ops.local_canary import local_subject
    from fraud_ops.replay_load import ReplayOptions
    from fraud_ops.replay_report import summary_lines
    from fraud_ops.replay_run import run_replay

    pipeline = story["pipeline"]
    mark = time.perf_counter()
    story["replay_started"] = datetime.now(UTC)
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
    story.update(replayed=replayed, analysis=analysis, holdout_metrics=holdout_metrics,
                 versions=(baseline_version, canary_version), analyze_with=analyze_with)


def _feedback(story: dict, source, serving, store, out: Path, timings: dict) -> None:
    """The same analysis from the prediction log, before and after the labels (story: summary, feedback, drift)."""
    from fraud.export import read_feature_profile, read_score_profile
    from fraud.files import read_json
    from fraud_ops import demo_feedback

    pipeline = story["pipeline"]
    mark = time.perf_counter()
    summary_path = pipeline.get("artifacts", {}).get("summary")
    summary = read_json(summary_path) if summary_path and Path(summary_path).is_file() else None
    feedback, drift = demo_feedback.feedback_loop(
        store, serving.url, source.frame, story["versions"], story["analyze_with"], story["analysis"], out,
        story["replay_started"], {str(m["version"]): read_score_profile(m["artifact"]) for m in pipeline["models"].values()},
        read_feature_profile(pipeline["models"]["v1"]["artifact"]), (summary or {}).get("feature_drift_by_month", []))
    timings["prediction_log"] = round(time.perf_counter() - mark, 1)
    print("\n" + "\n".join(demo_feedback.feedback_lines(feedback) + demo_feedback.drift_lines(drift)), flush=True)
    story.update(summary=summary, feedback=feedback, drift=drift)


def _show_step(step, _analysis) -> None:
    from fraud_control.rollout.record import step_line

    print(f"  {step_line(step)}", flush=True)


def _apply(args, story: dict, source, serving, state_dir: Path, raw: np.ndarray, timings: dict) -> None:
    """Apply the recommendation as a progressive rollout (unless --no-apply), then probe where traffic
    goes (story: applied, rollout, traffic_after)."""
    from fraud_ops.demo_steps import probe_traffic, progressive_rollout, role_artifacts, traffic_summary
    from fraud_ops.local_canary import local_status

    applied = {"action": story["analysis"]["action"], "detail": "not applied (--no-apply)", "exit_code": None}
    rollout = None
    if not args.no_apply:
        mark = time.perf_counter()
        print("\nrolling out: canaryTrafficPercent 5 → 20 → 50 → 100, one replay window per step", flush=True)
        rollout = progressive_rollout(source, serving.url, state_dir, story["holdout_metrics"], story["tracking_uri"],
                                      story["versions"], args.detectable_recall_difference,
                                      dict(zip(story["versions"], role_artifacts(story["pipeline"]))),
                                      args.settings, on_step=_show_step)
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
    story.update(applied=applied, rollout=rollout, traffic_after=traffic_after)


def _report(args, story: dict, source, raw: np.ndarray, out: Path, state_dir: Path, timings: dict,
            started: float) -> None:
    """report.json and report.html in out, then the final summary."""
    from fraud.files import write_json
    from fraud_ops.demo_steps import build_report

    mark = time.perf_counter()
    report, html_text = build_report(story, source, raw, out, state_dir, args.review_cost, timings)
    timings["report"] = round(time.perf_counter() - mark, 1)
    timings["total"] = round(time.perf_counter() - started, 1)
    (out / "report.html").write_text(html_text)
    write_json(out / "report.json", report)

    print(final_summary(report, out))


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
