"""Serving commands of `fraud-rollout`: serve, predict, bench serving."""
from __future__ import annotations

import argparse
import json
import logging
import signal
from pathlib import Path

from fraud_rollout.args import UsageError, positive_int, state_dir_option

logger = logging.getLogger(__name__)

def register(commands, bench) -> None:

    serve = commands.add_parser("serve", help="run the local canary runtime (transformer + predictors)")
    state_dir_option(serve)
    serve.add_argument("--baseline", type=Path, help="artifact root of the rolled-out model (creates the manifest)")
    serve.add_argument("--candidate", type=Path, help="artifact root of the canary model")
    serve.add_argument("--canary-percent", type=int, default=20, help="traffic share of the candidate (0..100)")
    serve.add_argument("--http-port", type=positive_int, default=8080,
                       help="transformer HTTP port (KServe listens on all interfaces; clients use 127.0.0.1)")
    serve.add_argument("--max-rows", type=positive_int, default=10_000, help="most rows per request")
    serve.add_argument("--drain-seconds", type=float, default=5.0,
                       help="keep a predictor leaving the split this long, for requests in flight")
    serve.set_defaults(func=serve_command)

    predict = commands.add_parser("predict", help="send transactions to the transformer as v2 JSON")
    predict.add_argument("--url", required=True, help="transformer base URL (or the full infer URL)")
    predict.add_argument("--file", required=True, type=Path, help="transactions .csv or .json")
    predict.add_argument("--model-name", default="fraud-detector")
    predict.set_defaults(func=predict_command)

    bench_serving = bench.add_parser("serving", help="latency and throughput of predictor and transformer")
    bench_serving.add_argument("--baseline", type=Path, help="artifact root to serve on loopback for the run")
    bench_serving.add_argument("--report", type=Path, help="a pipeline run's report.json: serve its v1 model")
    bench_serving.add_argument("--predictor-url", help="measure running servers instead (with --transformer-url)")
    bench_serving.add_argument("--transformer-url", help="base URL of the running transformer")
    bench_serving.add_argument("--requests", type=positive_int, default=2_000, help="1-row requests per latency run")
    bench_serving.add_argument("--rows", type=positive_int, default=10_000, help="rows in the large request")
    bench_serving.add_argument("--duration", type=positive_int, default=10, help="seconds of each wrk run")
    bench_serving.add_argument("--connections", type=positive_int, default=32, help="wrk concurrency")
    bench_serving.set_defaults(func=bench_command)


# --- serve ---

def write_canary_manifest(state_dir: Path, baseline: Path, candidate: Path | None, canary_percent: int) -> dict:
    """Create the InferenceService with `baseline`, then patch in `candidate` as a canary (DESIGN 6)."""
    from fraud.export import read_contract, read_metadata
    from fraud_control import isvc
    from fraud_control.local_state import LocalInferenceService

    if not 0 <= canary_percent <= 100:
        raise ValueError(f"--canary-percent {canary_percent}: must be within 0..100")

    def spec(root: Path) -> isvc.IsvcSpec:
        root = root.resolve()
        return isvc.IsvcSpec(storage_uri=str(root), model_version=str(read_metadata(root)["model_version"]),
                             contract_id=read_contract(root).id)

    base = spec(baseline)
    service = LocalInferenceService(state_dir)
    if service.exists():
        logger.info("replacing the InferenceService in %s", state_dir)
        service.delete()
    manifest = service.create(isvc.inference_service(base))
    if candidate is not None:
        canary = spec(candidate)
        if canary.contract_id != base.contract_id:
            raise ValueError(f"--candidate {candidate}: feature contract {canary.contract_id} differs from the "
                             f"baseline's {base.contract_id}; the transformer cannot serve both (DESIGN 2)")
        manifest = service.patch_merge(isvc.canary_patch(canary, canary_percent))
    return manifest


def serve_command(args: argparse.Namespace) -> int:
    from fraud_control.local_state import LocalInferenceService
    from fraud_control.runtime import LocalRuntime

    from fraud_rollout import canary_cli

    if args.candidate is not None and args.baseline is None:
        raise UsageError("--candidate needs --baseline")
    if args.baseline is not None:
        write_canary_manifest(args.state_dir, args.baseline, args.candidate, args.canary_percent)
    service = LocalInferenceService(args.state_dir)
    service.get()  # NotFound with a hint when nothing was deployed
    runtime = LocalRuntime(service, http_port=args.http_port, max_rows=args.max_rows,
                           drain_seconds=args.drain_seconds)
    signal.signal(signal.SIGTERM, _interrupt)  # stop the children the same way as on Ctrl-C
    try:
        runtime.start()
        print(f"serving {service.get()['metadata']['name']} at {runtime.transformer.url} "
              f"(state {args.state_dir}); Ctrl-C stops", flush=True)
        print(canary_cli.format_status(canary_cli.local_status(args.state_dir)), flush=True)
        runtime.follow()
    except KeyboardInterrupt:
        pass
    finally:
        runtime.stop()
    return 0


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


# --- predict ---

def predict_command(args: argparse.Namespace) -> int:
    from fraud_serving.client import outputs, predict, read_transactions

    response = predict(args.url, read_transactions(args.file), model_name=args.model_name)
    scores = outputs(response)
    print(f"model_version {response.get('model_version')}")
    print("row  fraud_probability  is_fraud")
    for row, (probability, decision) in enumerate(zip(scores["fraud_probability"], scores["is_fraud"])):
        print(f"{row:>3}  {probability:17.6f}  {int(decision):>8}")
    return 0


# --- bench serving ---

def bench_command(args: argparse.Namespace) -> int:
    from fraud_rollout.bench_serving import measure, run_benchmark

    if args.baseline is None and args.report is not None:
        try:
            args.baseline = Path(json.loads(args.report.read_text())["models"]["v1"]["artifact"])
        except (OSError, ValueError, KeyError) as error:
            raise UsageError(f"--report {args.report}: not a pipeline report with models.v1.artifact ({error})") from None
    if args.baseline is None:
        raise UsageError("give --baseline ARTIFACT_ROOT or --report report.json (its feature contract and model are "
                         "served and measured)")
    options = dict(requests=args.requests, rows=args.rows, duration=args.duration, connections=args.connections)
    if args.predictor_url or args.transformer_url:
        if not (args.predictor_url and args.transformer_url):
            raise UsageError("--predictor-url and --transformer-url go together")
        report = measure(args.predictor_url.rstrip("/"), args.transformer_url.rstrip("/"), args.baseline, **options)
    else:
        report = run_benchmark(args.baseline, **options)
    print(report.format())
    return 0
