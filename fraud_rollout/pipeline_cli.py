"""`fraud-rollout pipeline compile|run` and `fraud-rollout bench pipeline`."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from fraud_rollout.args import UsageError, non_negative_int, number_between, positive_int


def register(commands, bench) -> None:
    pipeline = commands.add_parser("pipeline", help="compile or run the KFP pipeline")
    actions = pipeline.add_subparsers(dest="action", required=True, metavar="ACTION")

    compile_ = actions.add_parser("compile", help="write the pipeline YAML for the Kubeflow UI or kfp.Client")
    compile_.add_argument("--out", type=Path, default=None, help="YAML path (default: the committed pipelines/fraud_rollout_pipeline.yaml)")
    compile_.add_argument("--image", default=None, help="components image (default: the released one)")
    compile_.set_defaults(func=compile_command)

    run = actions.add_parser("run", help="run the pipeline")
    run.add_argument("--local", action="store_true", required=True,
                     help="run on this machine with kfp.local (submit to a cluster from notebooks/01_submit_pipeline.ipynb)")
    add_run_options(run)
    run.set_defaults(func=run_command)

    bench_pipeline = bench.add_parser("pipeline", help="time the whole local pipeline, per step")
    add_run_options(bench_pipeline, default_out=Path(".fraud-rollout/bench"),
                    default_serving=Path(".fraud-rollout/bench/serving"))
    bench_pipeline.set_defaults(func=bench_command)


def add_run_options(parser, default_out: Path = Path(".fraud-rollout/run"),
                    default_serving: Path = Path(".fraud-rollout/serving")) -> None:
    parser.add_argument("--n-transactions", type=positive_int, default=1_000_000, help="transactions to simulate")
    parser.add_argument("--seed", type=non_negative_int, default=7, help="random seed")
    parser.add_argument("--epochs", type=positive_int, default=20, help="maximum training epochs")
    parser.add_argument("--fraud-rate", type=number_between(0, 0.5), default=0.0017, help="share of fraud")
    parser.add_argument("--source-csv", type=Path, default=None, help="enrich a real creditcard.csv instead of generating")
    parser.add_argument("--mlflow-tracking-uri", default="", help="default: $MLFLOW_TRACKING_URI, else SQLite under .fraud-rollout/")
    parser.add_argument("--out", type=Path, default=default_out, help="output directory (report.json, artifacts)")
    parser.add_argument("--serving-state-dir", type=Path, default=default_serving,
                        help="where the deploy step leaves the InferenceService that `fraud-rollout serve` reads")


def compile_command(args) -> int:
    from fraud_pipelines.pipeline import COMPILED, DEFAULT_IMAGE, compile_pipeline

    path = compile_pipeline(args.out or COMPILED, args.image or DEFAULT_IMAGE)
    print(f"compiled {path}")
    return 0


def _options(args):
    from fraud.schema import DataError
    from fraud_pipelines.local import LocalRunOptions

    source_csv = ""
    if args.source_csv is not None:
        from fraud.steps import _read_csv

        try:
            _read_csv(str(args.source_csv))  # fail before any work is done
        except DataError as error:
            raise UsageError(f"--source-csv: {error}") from None
        source_csv = str(args.source_csv.resolve())
    return LocalRunOptions(out_dir=args.out, n_transactions=args.n_transactions, seed=args.seed, epochs=args.epochs,
                           fraud_rate=args.fraud_rate, source_csv=source_csv,
                           mlflow_tracking_uri=args.mlflow_tracking_uri, serving_state_dir=args.serving_state_dir)


def run_command(args) -> int:
    from fraud.report import text_summary
    from fraud_pipelines.local import run_local

    options = _options(args)
    try:
        report = run_local(options)
    except RuntimeError as error:  # kfp.local: a task failed; its log above says why
        print(f"fraud-rollout pipeline: {error}", file=sys.stderr)
        return 1
    print(text_summary(report))
    print(f"\n  report: {options.out_dir / 'report.json'}")
    return 0


def bench_command(args) -> int:
    """Per-step compute times (from the steps themselves) and the whole run's wall time."""
    from fraud_pipelines.local import run_local

    started = time.perf_counter()
    report = run_local(_options(args))
    wall = time.perf_counter() - started
    t = report["timings"]
    compute = {"simulate-drift": t["simulate"], "train-model": t["train_v1"], "train-model-2": t["train_v2"],
               "evaluate-models": t["evaluate"]}
    print(f"\nbench pipeline: {args.n_transactions:,} transactions, kfp.local SubprocessRunner")
    print(f"  {'task':<22}{'wall s':>8}{'compute s':>11}   (wall includes process start, imports, I/O, MLflow)")
    for task, seconds in t["tasks_wall"].items():
        inside = compute.get(task)
        print(f"  {task:<22}{seconds:>8.1f}{inside if inside is not None else float('nan'):>11.1f}")
    print(f"  {'pipeline (wall)':<22}{wall:>8.1f}   target ≤ 240 s: {'MET' if wall <= 240 else 'MISSED'} "
          f"({wall / 240:.2f} of the budget)")
    print(f"  gate decision: {report['gate']['decision']}")
    return 0
