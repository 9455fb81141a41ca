"""Serving commands of `fraud-rollout`: serve, canary, predict, bench serving."""
from __future__ import annotations

import argparse
import json
import logging
import signal
from pathlib import Path
from typing import Callable

from fraud_serving.local_state import DEFAULT_STATE_DIR

logger = logging.getLogger(__name__)

#: `canary --target` → function(action, args) -> exit code. The cluster target registers "kserve".
CANARY_TARGETS: dict[str, Callable[[str, argparse.Namespace], int]] = {}


def register(commands, bench) -> None:
    from fraud_rollout.cli import positive_int

    serve = commands.add_parser("serve", help="run the local canary runtime (transformer + predictors)")
    _state_dir_option(serve)
    serve.add_argument("--baseline", type=Path, help="artifact root of the rolled-out model (creates the manifest)")
    serve.add_argument("--candidate", type=Path, help="artifact root of the canary model")
    serve.add_argument("--canary-percent", type=int, default=20, help="traffic share of the candidate (0..100)")
    serve.add_argument("--http-port", type=positive_int, default=8080,
                       help="transformer HTTP port (KServe listens on all interfaces; clients use 127.0.0.1)")
    serve.add_argument("--max-rows", type=positive_int, default=10_000, help="most rows per request")
    serve.add_argument("--drain-seconds", type=float, default=5.0,
                       help="keep a predictor leaving the split this long, for requests in flight")
    serve.set_defaults(func=serve_command)

    canary = commands.add_parser("canary", help="canary status, promote or rollback (same patches as kubectl)")
    canary.add_argument("action", choices=["status", "promote", "rollback"])
    canary.add_argument("--target", choices=["local", "kserve"], default="local",
                        help="local state dir, or the InferenceService in a cluster")
    _state_dir_option(canary)
    canary.add_argument("--json", action="store_true", help="print the status as JSON")
    kserve = canary.add_argument_group("--target kserve (fraud_serving.kserve_canary)")
    kserve.add_argument("--namespace", help="namespace of the InferenceService (required with --target kserve)")
    kserve.add_argument("--name", default="fraud-detector", help="InferenceService name")
    kserve.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster account, else $KUBECONFIG)")
    kserve.add_argument("--context", help="kubeconfig context")
    kserve.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for Ready after a patch")
    kserve.add_argument("--tracking-uri", default="", help="MLflow server whose aliases follow (default $MLFLOW_TRACKING_URI)")
    canary.set_defaults(func=canary_command)

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


def _state_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR,
                        help="local runtime state (the InferenceService manifest)")


# --- serve ---

def write_canary_manifest(state_dir: Path, baseline: Path, candidate: Path | None, canary_percent: int) -> dict:
    """Create the InferenceService with `baseline`, then patch in `candidate` as a canary (DESIGN 6)."""
    from fraud.export import read_contract, read_metadata
    from fraud_serving import isvc
    from fraud_serving.local_state import LocalInferenceService

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
    from fraud_rollout.cli import UsageError
    from fraud_serving.local_state import LocalInferenceService
    from fraud_serving.runtime import LocalRuntime

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
        print(format_status(local_status(args.state_dir)), flush=True)
        runtime.follow()
    except KeyboardInterrupt:
        pass
    finally:
        runtime.stop()
    return 0


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


# --- canary ---

def canary_command(args: argparse.Namespace) -> int:
    from fraud_rollout.cli import UsageError

    target = CANARY_TARGETS.get(args.target)
    if target is None:
        raise UsageError(f"--target {args.target}: not available in this installation")
    return target(args.action, args)


def local_status(state_dir: Path) -> dict:
    from fraud_serving.local_state import LocalInferenceService, revision_status
    from fraud_serving.runtime import read_runtime

    status = revision_status(LocalInferenceService(state_dir))
    status["runtime"] = read_runtime(state_dir)
    return status


def local_canary(action: str, args: argparse.Namespace) -> int:
    """status / promote / rollback on the InferenceService in the local state dir."""
    from fraud_serving import isvc
    from fraud_serving.local_state import LocalInferenceService, StateError

    service = LocalInferenceService(args.state_dir)
    if action == "promote":
        manifest = service.get()
        if "canaryTrafficPercent" not in manifest["spec"]["predictor"]:
            raise ValueError("nothing to promote: spec.predictor has no canaryTrafficPercent")
        predictor = manifest["status"]["components"]["predictor"]
        if predictor.get("latestReadyRevision") != predictor.get("latestCreatedRevision"):
            raise ValueError(f"the canary {predictor.get('latestCreatedRevision')} is not ready; promoting would "
                             f"send all traffic to {predictor.get('latestReadyRevision')} (roll back instead)")
        service.patch_json(isvc.promote_patch())
    elif action == "rollback":
        service.patch_merge(isvc.rollback_patch())
    elif action != "status":
        raise StateError(f"unknown action {action!r}")
    status = local_status(args.state_dir)
    print(json.dumps(status, indent=2) if getattr(args, "json", False) else format_status(status))
    return 0


CANARY_TARGETS["local"] = local_canary


def kserve_canary_target(action: str, args: argparse.Namespace) -> int:
    """status / promote / rollback on the InferenceService in a cluster (imports the kubernetes
    client only when used: it takes seconds)."""
    from fraud_serving.kserve_canary import cli_action

    return cli_action(action, args)


CANARY_TARGETS["kserve"] = kserve_canary_target


def format_status(status: dict) -> str:
    predictor = status["predictor"]
    revisions = status["revisions"]

    def named(revision: str | None) -> str:
        if not revision:
            return "-"
        return f"{revision} ({revisions.get(revision, {}).get('modelVersion', '?')})"

    lines = [f"InferenceService {status['name']}: generation {status['generation']}, observedGeneration "
             f"{status['observedGeneration']}, " + ", ".join(f"{k} {v}" for k, v in status["conditions"].items()),
             f"canaryTrafficPercent: {status['canaryTrafficPercent'] if status['canaryTrafficPercent'] is not None else '(absent)'}",
             "traffic:"]
    for entry in predictor.get("traffic", []):
        lines.append(f"  {entry['percent']:>3}%  {named(entry['revisionName'])}  tag={entry.get('tag', '-')}  "
                     f"latestRevision={str(entry.get('latestRevision', False)).lower()}")
    for key in ("latestCreatedRevision", "latestReadyRevision", "latestRolledoutRevision",
                "previousRolledoutRevision"):
        lines.append(f"{key + ':':<27}{named(predictor.get(key))}")
    runtime = status.get("runtime") or {}
    if runtime.get("transformer"):
        lines.append(f"serving: {runtime['transformer']} (generation {runtime.get('appliedGeneration')} applied)")
    else:
        lines.append("serving: not running (fraud-rollout serve)")
    return "\n".join(lines)


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
    from fraud_rollout.cli import UsageError
    from fraud_serving.bench import measure, run_benchmark

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
