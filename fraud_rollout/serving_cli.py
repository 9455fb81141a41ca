"""Serving commands of `fraud-rollout`: serve, predict, bench serving."""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

from fraud.canary_percent import DEFAULT_CANARY_PERCENT
from fraud.protocol import FRAUD_PROBABILITY, IS_FRAUD

from fraud_rollout.args import UsageError, canary_percent, number_within, positive_int, state_dir_option, tcp_port

logger = logging.getLogger(__name__)


#: argparse type: a percent of requests, 0..100.
shadow_percent = number_within(0, 100)


def register(commands, bench) -> None:

    serve = commands.add_parser("serve", help="run the local canary runtime (transformer + predictors)")
    state_dir_option(serve)
    serve.add_argument("--baseline", type=Path, help="artifact root of the rolled-out model (creates the manifest)")
    serve.add_argument("--candidate", type=Path, help="artifact root of the canary model")
    serve.add_argument("--canary-percent", type=canary_percent, default=DEFAULT_CANARY_PERCENT,
                       help="traffic share of the candidate (1..99)")
    serve.add_argument("--http-port", type=tcp_port, default=8080,
                       help="transformer HTTP port (KServe listens on all interfaces; clients use 127.0.0.1)")
    serve.add_argument("--max-rows", type=positive_int, default=10_000, help="most rows per request")
    serve.add_argument("--shadow-percent", type=shadow_percent, default=None,
                       help="share of requests also scored on the other revision for paired evidence, 0..100 "
                            "(0: off; default: the transformer's measured-affordable share); pairs go to "
                            "<state-dir>/shadow-pairs.jsonl")
    serve.add_argument("--prediction-log", metavar="URL", default=None,
                       help="store of the prediction log the transformer's CloudEvents go to, as KServe's logger "
                            "sends them, through a sink serve starts: a SQLite file, sqlite:///PATH or "
                            "postgresql://…, or 'default' for <state-dir>/prediction-log.sqlite (default: the "
                            "running sink the InferenceService's logger names, `deploy --prediction-log-url`; "
                            "without one, no prediction log)")
    serve.add_argument("--drain-seconds", type=float, default=5.0,
                       help="keep a predictor leaving the split this long, for requests in flight")
    serve.set_defaults(func=serve_command)

    predict = commands.add_parser("predict", help="send transactions to the transformer as v2 JSON")
    predict.add_argument("--url", required=True, help="transformer base URL (or the full infer URL)")
    predict.add_argument("--file", required=True, type=Path, help="transactions .csv or .json")
    predict.add_argument("--model-name", default="fraud-detector", help="the InferenceService's model")
    predict.add_argument("--json", action="store_true", help="print the v2 response as it came")
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
    bench_serving.add_argument("--prediction-sink-url", default=None, metavar="URL",
                               help="a running prediction-log sink the logging-on transformer posts to (default: the "
                                    "prediction-log sink, started for the run on a SQLite file)")
    bench_serving.set_defaults(func=bench_command)


def write_canary_manifest(state_dir: Path, baseline: Path, candidate: Path | None, canary_percent: int) -> dict:
    """Create the InferenceService with `baseline`, then patch in `candidate` as a canary (DESIGN 6)."""
    from fraud.export import read_contract, read_metadata
    from fraud_control.inferenceservice import isvc
    from fraud_control.inferenceservice.local_state import LocalInferenceService

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


def prediction_log_url(option: str | None, state_dir: Path) -> str | None:
    """`--prediction-log`: None when not given, the state dir's SQLite file for 'default'."""
    from fraud_control.local_runtime.runtime import PREDICTION_LOG_FILE

    if option == "default":
        return str((state_dir / PREDICTION_LOG_FILE).resolve())
    return option


def serve_command(args: argparse.Namespace) -> int:
    from fraud.processes import LOOPBACK, ServerFailed, check_port_free
    from fraud_control.inferenceservice.local_state import LocalInferenceService
    from fraud_control.inferenceservice.traffic import traffic_status
    from fraud_control.local_runtime.runtime import LocalRuntime, claim_state_dir
    from fraud_ops.local_canary import local_status

    from fraud_rollout import canary_cli

    if args.candidate is not None and args.baseline is None:
        raise UsageError("--candidate needs --baseline")
    for option, root in (("--baseline", args.baseline), ("--candidate", args.candidate)):
        if root is not None:
            check_artifact_root(option, root)
    # What can be refused without touching anything first: a taken port, nothing to serve. Claiming the
    # state dir creates it.
    check_port_free(args.http_port, "--http-port")
    if args.baseline is None:
        from fraud_control.inferenceservice.local_state import NotFound

        try:
            LocalInferenceService(args.state_dir).get()
        except NotFound:  # (an OSError) nothing was deployed: its hint says how to deploy
            raise
        except OSError:  # not a directory, unreadable: claiming it below says what to do
            pass
    # Own the state dir before anything is written to it: a second serve must leave the first's files alone.
    owner = claim_state_dir(args.state_dir, f"http://{LOOPBACK}:{args.http_port}")
    try:
        if args.baseline is not None:
            write_canary_manifest(args.state_dir, args.baseline, args.candidate, args.canary_percent)
        service = LocalInferenceService(args.state_dir)
        service.get()  # NotFound with a hint when nothing was deployed
    except BaseException:
        owner.release()
        raise
    runtime = LocalRuntime(service, http_port=args.http_port, max_rows=args.max_rows,
                           shadow_percent=args.shadow_percent, drain_seconds=args.drain_seconds, owner=owner,
                           prediction_log=prediction_log_url(args.prediction_log, args.state_dir))
    signal.signal(signal.SIGTERM, _interrupt)  # stop the children the same way as on Ctrl-C
    try:
        runtime.start()
        print(f"serving {service.get()['metadata']['name']} at {runtime.transformer.url} "
              f"(state {args.state_dir}); Ctrl-C stops", flush=True)
        print(canary_cli.format_status(traffic_status(service.get()), local_status(args.state_dir)),
              flush=True)
        runtime.follow()
    except KeyboardInterrupt:
        pass
    except ServerFailed as error:  # a server that will not start (a broken artifact, say): one line, no traceback
        print(f"fraud-rollout serve: error: {error.one_line()}", file=sys.stderr)
        return 1
    finally:
        runtime.stop()
    return 0


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def check_artifact_root(option: str, root: Path) -> None:
    """An exported model's artifact root (`<root>/<model>/<version>/model.savedmodel`), or a UsageError."""
    from fraud.export import SAVEDMODEL_DIR, find_version_dir

    if not root.exists():
        raise UsageError(f"{option} {root}: no such directory; give the artifact root of an exported model "
                         "(a pipeline run's models/v1, or report.json's models.v1.artifact)")
    try:
        found = (find_version_dir(root) / SAVEDMODEL_DIR).is_dir()
    except FileNotFoundError:
        found = False
    if not found:
        raise UsageError(f"{option} {root}: no exported model in it (expected <root>/<model>/<version>/"
                         f"{SAVEDMODEL_DIR}); give the artifact root of an exported model")


def predict_command(args: argparse.Namespace) -> int:
    import httpx
    from fraud_serving.client import outputs, predict, read_transactions

    check_url("--url", args.url)
    if not args.file.is_file():
        raise UsageError(f"--file {args.file}: no such file; give a transactions .csv or .json")
    try:
        body = read_transactions(args.file)
    except json.JSONDecodeError as error:
        raise UsageError(f"--file {args.file}: not valid JSON ({error.msg} at line {error.lineno} column "
                         f"{error.colno}); give a v2 request, a list of records or {{column: [values]}}") from None
    except UnicodeDecodeError:
        raise UsageError(f"--file {args.file}: not UTF-8 text; give a transactions .csv or .json") from None
    except (ValueError, TypeError) as error:  # pandas' messages never name the file; ours start with it
        reason = " ".join(str(error).split()).removeprefix(f"{args.file}: ")
        raise UsageError(f"--file {args.file}: {reason}") from None
    try:
        response = predict(args.url, body, model_name=args.model_name)
    except httpx.TransportError as error:
        raise UsageError(f"--url {args.url}: cannot reach it ({type(error).__name__}: {error}); start "
                         "`fraud-rollout serve` or give the URL it prints") from None
    if args.json:
        print(json.dumps(response))
        return 0
    scores = outputs(response)
    print(f"model_version {response.get('model_version')}")
    print("row  fraud_probability  is_fraud")
    for row, (probability, decision) in enumerate(zip(scores[FRAUD_PROBABILITY], scores[IS_FRAUD])):
        print(f"{row:>3}  {probability:17.6f}  {int(decision):>8}")
    return 0


def check_url(option: str, url: str) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise UsageError(f"{option} {url}: not an http(s) URL; give one like http://127.0.0.1:8080")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number or out of range
    except ValueError:
        raise UsageError(f"{option} {url}: the port is not a number within 0..65535") from None


def check_ready(option: str, url: str) -> None:
    """A running KServe server at `url`: ready on /v2/health/ready, or a UsageError saying what to do."""
    import httpx

    check_url(option, url)
    try:
        status = httpx.get(f"{url}/v2/health/ready", timeout=5).status_code
    except httpx.TransportError as error:
        raise UsageError(f"{option} {url}: cannot reach it ({type(error).__name__}: {error}); start the server "
                         "or give its base URL") from None
    if status != 200:
        raise UsageError(f"{option} {url}: /v2/health/ready answered {status}; wait until it is ready")


def bench_command(args: argparse.Namespace) -> int:
    from fraud_ops.bench_serving import measure, run_benchmark

    if args.baseline is None and args.report is not None:
        try:
            args.baseline = Path(json.loads(args.report.read_text())["models"]["v1"]["artifact"])
        except (OSError, ValueError, KeyError) as error:
            raise UsageError(f"--report {args.report}: not a pipeline report with models.v1.artifact ({error})") from None
    if args.baseline is None:
        raise UsageError("give --baseline ARTIFACT_ROOT or --report report.json (its feature contract and model are "
                         "served and measured)")
    check_artifact_root("--baseline" if args.report is None else f"--report {args.report}: models.v1.artifact",
                        args.baseline)
    options = dict(requests=args.requests, rows=args.rows, duration=args.duration, connections=args.connections)
    if args.predictor_url or args.transformer_url:
        if not (args.predictor_url and args.transformer_url):
            raise UsageError("--predictor-url and --transformer-url go together")
        for option, url in (("--predictor-url", args.predictor_url), ("--transformer-url", args.transformer_url)):
            check_ready(option, url.rstrip("/"))
        report = measure(args.predictor_url.rstrip("/"), args.transformer_url.rstrip("/"), args.baseline, **options)
    else:
        report = run_benchmark(args.baseline, prediction_sink_url=args.prediction_sink_url, **options)
    print(report.format())
    return 0
