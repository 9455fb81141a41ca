"""`fraud-rollout pipeline compile|run` and `fraud-rollout bench pipeline`."""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from fraud_rollout.args import UsageError, non_negative_int, number_between, positive_int


def register(commands, bench) -> None:
    pipeline = commands.add_parser("pipeline", help="compile or run the KFP pipeline")
    actions = pipeline.add_subparsers(dest="action", required=True, metavar="ACTION")

    compile_ = actions.add_parser("compile", help="write the pipeline YAML for the Kubeflow UI or kfp.Client")
    compile_.add_argument("--out", type=Path, default=None,
                          help="YAML path (default: the committed pipelines/fraud_rollout_pipeline.yaml); the "
                               "progressive-rollout pipeline goes next to it as fraud_rollout_progressive.yaml")
    compile_.add_argument("--image", default=None,
                          help="components image every step runs (default ghcr.io/fraud-rollout/components:0.1.0, "
                               "not published: build and push your own with `make images REGISTRY=…`)")
    compile_.add_argument("--serving-image", default=None,
                          help="the serving_image parameter's default, the InferenceService's image (default "
                               "ghcr.io/fraud-rollout/serving:0.1.0, not published)")
    compile_.set_defaults(func=compile_command)

    run = actions.add_parser(
        "run", help="run the pipeline",
        description="Run the pipeline with kfp.local. Like a KFP run on a cluster, each run keeps its own artifacts "
                    "(--out/runs/<UTC time>/) and its deploy step acts on the InferenceService in --serving-state-dir "
                    "as on a cluster's: a rerun gates against the champion rolled out there (else MLflow's champion) "
                    "and canaries its candidate next to it; an earlier run's canary still running is refused "
                    "unless --supersede (promote or roll it back first: fraud-rollout canary promote --target local). The console shows one line per "
                    "task; kfp.local's full output is in --out/logs/pipeline.log.")
    run.add_argument("--local", action="store_true", required=True,
                     help="run on this machine with kfp.local (submit to a cluster from notebooks/01_submit_pipeline.ipynb)")
    add_run_options(run)
    run.add_argument("--runner", choices=("subprocess", "docker"), default="subprocess",
                     help="subprocess: each step in a process of this environment; docker: each step in the "
                          "components image, started as KFP's launcher starts it, through podman's Docker API")
    run.add_argument("--image", default=None,
                     help="with --runner docker: the components image (default: the one `make images` built)")
    run.set_defaults(func=run_command)

    bench_pipeline = bench.add_parser("pipeline", help="time the whole local pipeline, per step")
    add_run_options(bench_pipeline, default_out=Path(".fraud-rollout/bench"),
                    default_serving=Path(".fraud-rollout/bench/serving"))
    bench_pipeline.set_defaults(func=bench_command)


def add_run_options(parser, default_out: Path = Path(".fraud-rollout/run"), default_serving: Path | None = None,
                    state_dir_flag: str = "--serving-state-dir") -> None:
    """The run's parameters and where it writes; `state_dir_flag` names the serving state dir's option
    (the demo's is `--state-dir`, as every command that serves it, and defaults to <out>/serving)."""
    from fraud.pipeline_config import DEFAULTS
    from fraud_pipelines.local import SERVING_STATE_DIR

    parser.add_argument("--n-transactions", type=positive_int, default=DEFAULTS.n_transactions,
                        help="transactions to simulate; too few to pass the gate are refused with the minimum")
    parser.add_argument("--seed", type=non_negative_int, default=DEFAULTS.seed, help="random seed")
    parser.add_argument("--epochs", type=positive_int, default=DEFAULTS.epochs, help="maximum training epochs")
    parser.add_argument("--fraud-rate", type=number_between(0, 0.5), default=DEFAULTS.fraud_rate, help="share of fraud")
    parser.add_argument("--source-csv", type=Path, default=None, help="enrich a real creditcard.csv instead of generating")
    parser.add_argument("--mlflow-tracking-uri", default="", help="default: $MLFLOW_TRACKING_URI, else SQLite under .fraud-rollout/")
    parser.add_argument("--out", type=Path, default=default_out,
                        help="output directory: each run writes runs/<UTC time>/ (artifacts, report.json), "
                             "report.json is the latest run's, logs/pipeline.log kfp.local's full output. "
                             "Runs older than the last 3 are removed unless a serving manifest references them")
    parser.add_argument(state_dir_flag, dest="serving_state_dir", type=Path,
                        default=None if state_dir_flag == "--state-dir" else default_serving or SERVING_STATE_DIR,
                        help="where the deploy step leaves the InferenceService that `fraud-rollout serve` reads "
                             f"(default: {'<out>/serving' if state_dir_flag == '--state-dir' else '%(default)s'}). "
                             "Its rolled-out model is a rerun's baseline; as on a cluster, an earlier run's "
                             "running canary there is refused unless --supersede")
    parser.add_argument("--supersede", action="store_true",
                        help="replace a canary of an earlier run that is still running (KServe: supersede_canary)")


def compile_command(args) -> int:
    from fraud_pipelines import progressive
    from fraud_pipelines.pipeline import COMPILED, DEFAULT_IMAGE, SERVING_IMAGE, compile_pipeline

    image = args.image or DEFAULT_IMAGE
    path = compile_pipeline(args.out or COMPILED, image, args.serving_image or SERVING_IMAGE)
    print(f"compiled {path}")
    rollout = progressive.compile_pipeline(path.parent / progressive.COMPILED.name, image)
    print(f"compiled {rollout}")
    return 0


def _fraud_rate(args) -> float:
    """The fraud rate the run's data will have: the source CSV's, else --fraud-rate."""
    from fraud.schema import LABEL, DataError

    if args.source_csv is None:
        return args.fraud_rate
    from fraud.steps import _read_csv

    try:
        frame = _read_csv(str(args.source_csv))  # fail before any work is done
    except DataError as error:
        raise UsageError(f"--source-csv: {error}") from None
    rate = float(frame[LABEL].mean())
    if rate <= 0:
        raise UsageError(f"--source-csv {args.source_csv}: no row has {LABEL} 1; the models need fraud to learn")
    return rate


def check_enough_evidence(n_transactions: int, fraud_rate: float) -> None:
    """Refuse a run too small for the gate to judge: its holdout would hold too few frauds."""
    from fraud import simulate
    from fraud.gate import GatePolicy

    needed = GatePolicy().min_holdout_frauds
    minimum = simulate.minimum_transactions(needed, fraud_rate)
    if n_transactions < minimum:
        expected = n_transactions * fraud_rate * simulate.window_share(simulate.WindowSpec(), "holdout", simulate.DriftSpec.months)
        raise UsageError(f"--n-transactions {n_transactions:,} is too small: at fraud rate {fraud_rate:g} its holdout "
                         f"holds about {expected:.0f} frauds and the gate needs {needed}; use at least "
                         f"--n-transactions {minimum:,}")


def components_image(args):
    """The image and podman environment for --runner docker (None for subprocess); UsageError with the
    way on when podman or the image is missing."""
    from fraud_devcluster import images
    from fraud_pipelines.containers import ComponentsImage, ContainersUnavailable, check_image

    if getattr(args, "runner", "subprocess") != "docker":  # `bench pipeline` has no --runner
        if getattr(args, "image", None):
            raise UsageError("--image needs --runner docker")
        return None
    try:
        components = ComponentsImage(args.image or images.built_image("components"), images.podman_env())
        check_image(components)
    except (images.ImageError, ContainersUnavailable) as error:
        raise UsageError(f"--runner docker: {error}") from None
    return components


def _options(args):
    from dataclasses import replace

    from fraud.pipeline_config import DEFAULTS
    from fraud_pipelines.local import LocalRunOptions

    fraud_rate = _fraud_rate(args)
    check_enough_evidence(args.n_transactions, fraud_rate)
    config = replace(DEFAULTS, n_transactions=args.n_transactions, seed=args.seed, epochs=args.epochs,
                     fraud_rate=args.fraud_rate)
    return LocalRunOptions(out_dir=args.out, config=config,
                           source_csv=str(args.source_csv.resolve()) if args.source_csv is not None else "",
                           mlflow_tracking_uri=args.mlflow_tracking_uri or args.settings.MLFLOW_TRACKING_URI,
                           serving_state_dir=args.serving_state_dir, supersede_canary=args.supersede,
                           components_image=components_image(args))


def gate_rejection(report: dict) -> str:
    """What a rejection means: nothing deployed, each failed rule, and the size with enough evidence."""
    from fraud import simulate

    gate, windows = report["gate"], report["data"]["windows"]
    failed = [r for r in gate["reasons"] if not r["passed"]]
    rate = sum(w["fraud"] for w in windows.values()) / max(1, sum(w["rows"] for w in windows.values()))
    needed = gate["policy"].get("min_holdout_frauds")
    candidate = report.get("models", {}).get("v2", {}).get("version", "v2")  # v3 on a rerun after v2
    lines = [f"\nThe gate rejected {candidate}: nothing was deployed ({len(failed)} of {len(gate['reasons'])} "
             "rules failed)"]
    lines += [f"  FAIL {r['rule']}: {r['detail']}" for r in failed]
    short = any(r["rule"].startswith("holdout frauds") for r in failed)
    if needed and rate > 0 and short:
        # the expected minimum, or more if this run's holdout drew fewer frauds than expected
        scaled = math.ceil(report["data"]["n_transactions"] * needed / max(1, windows["holdout"]["fraud"]))
        lines.append(f"  Enough evidence ({needed} holdout frauds at this fraud rate, {rate:.3g}): "
                     f"--n-transactions {max(simulate.minimum_transactions(needed, rate), scaled):,} or more")
    elif needed:
        lines.append(f"  The evidence was enough (≥ {needed} holdout frauds): the candidate itself fell short")
    return "\n".join(lines)


def run_command(args) -> int:
    from fraud.report import text_summary
    from fraud_pipelines.local import PipelineFailed, RunRefused, run_local

    options = _options(args)
    try:
        report = run_local(options)
    except RunRefused as error:  # known before any step ran: a user's choice to make, nothing touched
        raise UsageError(str(error)) from None
    except PipelineFailed as error:
        print(f"fraud-rollout pipeline: {error}", file=sys.stderr)
        return 1
    print(text_summary(report))
    if report["gate"]["decision"] != "promote":
        print(gate_rejection(report))
    print(f"\n  report: {options.out_dir / 'report.json'} (run {report['run']['id']})")
    return 0


def bench_command(args) -> int:
    """Per-step compute times (from the steps themselves) and the whole run's wall time."""
    from dataclasses import replace

    from fraud_pipelines.local import run_local

    started = time.perf_counter()
    # Times a whole first run (v1 trained too) in the bench's own state dir, so it supersedes the
    # canary an earlier bench left there.
    report = run_local(replace(_options(args), supersede_canary=True), baseline_from="train")
    wall = time.perf_counter() - started
    t = report["timings"]
    compute = {"simulate-drift": t["simulate"], "baseline-model": t["train_v1"], "train-model": t["train_v2"],
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
