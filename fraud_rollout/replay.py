"""`fraud-rollout replay`: labelled holdout transactions through the live endpoint, per version.

The replay is a client like any other: it sends raw transactions as Open Inference Protocol v2
JSON to the transformer (which validates, scales with the feature contract and splits between the
predictor revisions), and records for every transaction the `model_version` that answered, the
decision, the score, the request's latency and whether it failed. From those rows `fraud_canary`
computes per-version confusion counts, precision, recall, F1, flag rate, traffic share, latency
percentiles and error rate.

The engine is in `fraud_ops`: `replay_source` (what is sent), `replay_load` (how: `--batch` rows per
request, `--concurrency` requests in flight, optionally paced at `--rate`), `replay_report` (metrics,
the skew check, the report) and `replay_run` (`run_replay`, which ties them); this module holds the
commands.

Outputs: a JSON report (`--out`, NaN written as null) and beside it a Parquet file with one row per
transaction (`rows_file` in the report), which the skew check and notebook 02 read.

Training/serving skew check (`skew_check`): every answered transaction's online decision must equal
the offline decision of the version that served it, i.e. that version's SavedModel signature
(`SignatureScorer`) on the contract-scaled holdout. With `--report` the replay knows each version's
artifact and runs the check itself.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from fraud_ops import local_defaults
from fraud_ops.replay_load import ReplayOptions
from fraud_ops.replay_report import summary_lines
from fraud_ops.replay_run import run_replay
from fraud_ops.replay_source import load_source, read_pipeline_report

from fraud_rollout.args import non_negative_float, positive_int
from fraud_rollout.targets import add_target_options, current_subject


def register(commands, bench) -> None:
    replay = commands.add_parser(
        "replay", help="stream labelled holdout transactions through the live endpoint; per-version metrics")
    replay.add_argument("--url", required=True, help="transformer base URL (or the full infer URL)")
    source = replay.add_mutually_exclusive_group()
    source.add_argument("--holdout", type=Path, help="labelled transactions (.parquet or .csv with Class)")
    source.add_argument("--report", type=Path,
                        help=f"pipeline report.json: its holdout, and each version's artifact for the skew check "
                             f"(default when neither is given: {local_defaults.RUN_REPORT}, else the demo's)")
    add_replay_options(replay)
    replay.add_argument("--out", type=Path, help="replay report JSON (default: replay.json beside the pipeline "
                                                 "report, else in the current directory)")
    add_target_options(replay)  # the InferenceService the evidence is about, recorded as its subject
    replay.add_argument("--pairs-log", type=Path,
                        help="the transformer's shadow pair log, joined with the labels for paired evidence "
                             "(default with --target local: <state-dir>/shadow-pairs.jsonl if it exists)")
    replay.add_argument("--no-skew-check", action="store_true",
                        help="skip comparing online decisions with each version's offline signature")
    replay.set_defaults(func=replay_command)

    bench_replay = bench.add_parser("replay", help="replay a pipeline run's holdout through the local canary runtime")
    bench_replay.add_argument("--report", type=Path,
                              help="pipeline report.json (a 1,000,000-transaction run for the target; default "
                                   f"{local_defaults.RUN_REPORT}, else the demo's)")
    bench_replay.add_argument("--url", help="replay against this running transformer instead of starting the runtime")
    add_replay_options(bench_replay)
    bench_replay.add_argument("--target-seconds", type=non_negative_float, default=20.0,
                              help="the replay time to meet")
    bench_replay.add_argument("--out", type=Path, help="replay report JSON (default: a temporary directory)")
    bench_replay.set_defaults(func=bench_command)


def add_replay_options(parser: argparse.ArgumentParser) -> None:

    parser.add_argument("--limit", type=positive_int, help="replay only the first N transactions")
    parser.add_argument("--rate", type=non_negative_float, default=0.0,
                        help="transactions per second (0: as fast as the endpoint answers)")
    parser.add_argument("--batch", type=positive_int, default=None,
                        help="transactions per request (default: enough requests, ≥ 2,000, to measure the split "
                             "within about a point, at most 100 rows each)")
    parser.add_argument("--concurrency", type=positive_int, default=8, help="requests in flight")
    parser.add_argument("--timeout", type=non_negative_float, default=30.0, help="seconds per request")
    parser.add_argument("--model-name", default="fraud-detector", help="model name in the v2 path")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def replay_command(args) -> int:
    from fraud_rollout.args import UsageError

    if args.batch is not None and args.batch > 10_000:
        raise UsageError(f"--batch {args.batch}: the transformer accepts at most 10,000 rows per request")
    report = args.report or (None if args.holdout is not None else local_defaults.pipeline_report())
    if args.holdout is None and not report.is_file():
        raise UsageError(f"give --holdout PARQUET or --report report.json ({report} does not exist)")
    source = load_source(args.holdout, report)
    out = args.out or ((source.pipeline_report.parent if source.pipeline_report else Path.cwd()) / "replay.json")
    options = ReplayOptions(url=args.url, limit=args.limit, rate=args.rate, batch=args.batch,
                            concurrency=args.concurrency, timeout=args.timeout, model_name=args.model_name,
                            progress=not args.no_progress)
    pairs_log = args.pairs_log
    if pairs_log is None and args.target == "local":
        from fraud_control.local_runtime.runtime import PAIRS_FILE

        pairs_log = args.state_dir / PAIRS_FILE if (args.state_dir / PAIRS_FILE).is_file() else None
    elif pairs_log is not None and not pairs_log.is_file():
        raise UsageError(f"--pairs-log {pairs_log}: no such file; give the transformer's --pairs_log file")
    result = run_replay(source, options, out, skew=not args.no_skew_check, subject=current_subject(args),
                        pairs_log=pairs_log)
    print("\n".join(summary_lines(result.report)))
    print(f"  report: {result.report_path}")
    skew = result.report.get("skew")
    return 1 if skew and skew["disagreements"] else 0


def bench_command(args) -> int:
    """Replay a run's holdout through the local canary runtime (started here unless --url) and
    compare the time with the target."""
    import tempfile
    from contextlib import ExitStack

    from fraud_control.local_runtime.runtime import PAIRS_FILE
    from fraud_ops.serving_session import LocalServing

    report = args.report or local_defaults.pipeline_report()
    pipeline = read_pipeline_report(report)
    source = load_source(None, report)
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-replay-")))
        url = args.url
        if url is None:
            # by role: models.v1 is the baseline and models.v2 the candidate, whatever their labels
            # (a rerun against the champion labels them v2 and v3)
            models = pipeline["models"]
            started = time.perf_counter()
            serving = stack.enter_context(LocalServing(workdir / "serving", baseline=models["v1"]["artifact"],
                                                       candidate=models["v2"]["artifact"], canary_percent=20,
                                                       log_dir=workdir / "logs"))
            print(f"local canary runtime ready in {time.perf_counter() - started:.1f} s at {serving.url} "
                  "(v1 rolled out, v2 at 20 %)")
            url = serving.url
        options = ReplayOptions(url=url, limit=args.limit, rate=args.rate, batch=args.batch,
                                concurrency=args.concurrency, timeout=args.timeout, model_name=args.model_name,
                                progress=not args.no_progress)
        result = run_replay(source, options, args.out or workdir / "replay.json", skew=False,
                            pairs_log=None if args.url else serving.state_dir / PAIRS_FILE)
    t = result.report["timing"]
    rows = result.report["totals"]["rows"]
    print("\n".join(summary_lines(result.report)))
    met = t["wall_seconds"] <= args.target_seconds
    print(f"\nbench replay: {rows:,} holdout transactions of a {pipeline['data'].get('n_transactions', '?')}"
          f"-transaction run, batch {result.report['options']['batch']}, concurrency {args.concurrency}")
    print(f"  {rows / t['wall_seconds']:,.0f} transactions/s, {t['requests_per_second']:,.0f} requests/s")
    print(f"  replay time {t['wall_seconds']:.1f} s   target ≤ {args.target_seconds:g} s: "
          f"{'MET' if met else 'MISSED'} ({t['wall_seconds'] / args.target_seconds:.2f} of the budget)")
    return 0
