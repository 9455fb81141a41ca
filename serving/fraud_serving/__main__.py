"""`python -m fraud_serving predictor|transformer …`: parse arguments, build the model, start KServe.

KServe's own flags (`--model_name`, `--http_port`, `--predictor_host`, `--predictor_protocol`, …)
come from `kserve.model_server.parser`; only ours are declared here.
"""
from __future__ import annotations

import argparse
import copy
import gc
import sys
from pathlib import Path
from typing import NoReturn

from fraud.export import MODEL_DIR, read_contract
from fraud.settings import Settings
from kserve import ModelServer, model_server
from kserve.logging import KSERVE_LOG_CONFIG, configure_logging
from kserve.predictor_config import PredictorConfig
from kserve.utils.utils import strtobool

from fraud_serving.fast_route import DEFAULT_MAX_ROWS

SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fraud_serving", description=__doc__.splitlines()[0])
    roles = parser.add_subparsers(dest="role", required=True, metavar="ROLE")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--request_logging", type=strtobool, default=False,
                        help="log every request (uvicorn access log, KServe timing trace); off by default "
                             "because those lines cost more than the model (1.3 vs 3.3 ms per predictor call "
                             "here); request counts and latencies are in /metrics")
    common.add_argument("--max_rows", type=int, default=DEFAULT_MAX_ROWS,
                        help="most rows accepted in one request (bodies above the matching byte limit get 413 "
                             "unread)")
    predictor = roles.add_parser("predictor", parents=[model_server.parser, common],
                                 help="score scaled features with an exported model")
    predictor.add_argument("--model_dir", default=None,
                           help="exported artifact root (default: STORAGE_URI if it is a local path)")
    transformer = roles.add_parser("transformer", parents=[model_server.parser, common],
                                   help="validate and scale raw transactions, forward to the predictor")
    transformer.add_argument("--contract_dir", default=None,
                             help=f"directory holding feature_contract.json (default: STORAGE_URI, else {MODEL_DIR})")
    transformer.add_argument("--routes_file", default=None, type=Path,
                             help="local runtime: predictor revisions and their traffic percent "
                                  "(instead of --predictor_host)")
    shadow = transformer.add_argument_group("shadow scoring (the same request on the other revision, never returned)")
    shadow.add_argument("--shadow_percent", type=float, default=None,
                        help="share of requests also scored on the other revision, 0..100 (0: off; default "
                             "the share `fraud-rollout bench serving` measured affordable)")
    shadow.add_argument("--shadow_max_in_flight", type=int, default=None,
                        help="shadow calls running at once; more are dropped and counted")
    shadow.add_argument("--pairs_log", type=Path, default=None,
                        help="JSON lines file, one line per shadowed request: id, both versions, both is_fraud lists")
    shadow.add_argument("--shadow_hosts", default=None,
                        help="in a cluster: the tag-routing hosts, latest=URL,prev=URL (the revision of each is "
                             "learned from the model_version it answers)")
    payload = transformer.add_argument_group("prediction log (KServe's payload logger CloudEvents, sent by the transformer)")
    payload.add_argument("--logger_url", default=None,
                         help="the prediction-log sink: every request and every answered response is posted there "
                              "as KServe's agent posts them (off when absent); inference never waits on it")
    payload.add_argument("--logger_events", choices=("all", "pairs"), default="all",
                         help="all: requests, responses and shadow pairs (the local runtime, no agent); pairs: "
                              "only the shadow pairs (a cluster, where KServe's agent logs requests and responses)")
    payload.add_argument("--logger_queue", type=int, default=None,
                         help="events held while the sink is slow or down; more are dropped and counted "
                              "(fraud_payload_log_dropped_total)")
    return parser


def setup_logging(args: argparse.Namespace) -> None:
    """KServe's logging setup, with the per-request lines off unless asked for (or a config file given)."""
    if not args.configure_logging or args.log_config_file:
        return  # ModelServer applies the file itself
    config = copy.deepcopy(KSERVE_LOG_CONFIG)
    if not args.request_logging:
        config["loggers"]["uvicorn.access"]["level"] = "WARNING"
        config["loggers"]["kserve.trace"]["level"] = "WARNING"
    configure_logging(config)


def server(args: argparse.Namespace, predictor_config: PredictorConfig | None = None) -> ModelServer:
    setup_logging(args)
    return ModelServer(http_port=args.http_port, grpc_port=args.grpc_port, workers=args.workers,
                       enable_grpc=args.enable_grpc, enable_latency_logging=args.enable_latency_logging,
                       access_log_format=args.access_log_format, timeout_keep_alive=args.timeout_keep_alive,
                       predictor_config=predictor_config)


def start(kserve_server: ModelServer, model, on_rejected=None) -> None:
    from fraud_serving.fast_route import install_fast_infer_route

    install_fast_infer_route(model_server.app, {model.name: model}, on_rejected)
    # TensorFlow, KServe and the loaded model leave millions of long-lived objects; frozen, the
    # collector stops re-walking them in full collections (the source of multi-ms tail latencies)
    gc.collect()
    gc.freeze()
    kserve_server.start([model])


def run_predictor(args: argparse.Namespace, settings: Settings) -> None:
    from fraud_serving.predictor import FraudPredictor, resolve_model_dir

    try:
        model_dir = resolve_model_dir(args.model_dir, settings.STORAGE_URI)
    except ValueError as error:
        raise SystemExit(f"python -m fraud_serving predictor: {error}") from None
    if args.max_rows < 1:
        raise SystemExit(f"--max_rows {args.max_rows}: must be at least 1")
    model = FraudPredictor(args.model_name, model_dir, max_rows=args.max_rows)
    kserve_server = server(args)
    model.load()  # ready (and registered) only once the artifact is loaded and checked
    start(kserve_server, model)


def usage_error(message: str) -> NoReturn:
    """A user's mistake in the arguments: one line on stderr, exit 2 (argparse's code)."""
    print(f"python -m fraud_serving transformer: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def split_seed(text: str) -> int | None:
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        usage_error(f"FRAUD_ROLLOUT_SPLIT_SEED={text}: not an integer; unset it, or give e.g. 7")


def run_transformer(args: argparse.Namespace, settings: Settings) -> None:
    from fraud_serving.metrics import TransformerMetrics
    from fraud_serving.payload_log import DEFAULT_QUEUE_EVENTS, EventSource, PayloadLogger, PayloadLogMetrics
    from fraud_serving.routing import Routes, TagHosts
    from fraud_serving.shadow import DEFAULT_MAX_IN_FLIGHT, DEFAULT_SHADOW_PERCENT, PairLog, ShadowScorer
    from fraud_serving.transformer import FraudTransformer

    if args.predictor_protocol != "v2":
        raise SystemExit(f"--predictor_protocol {args.predictor_protocol}: this transformer forwards REST v2 "
                         "only; pass --predictor_protocol v2")
    if args.max_rows < 1:
        raise SystemExit(f"--max_rows {args.max_rows}: must be at least 1")
    seed = split_seed(settings.FRAUD_ROLLOUT_SPLIT_SEED)
    if args.routes_file is not None:
        routes = Routes(routes_file=args.routes_file, seed=seed)
    elif args.predictor_host:
        routes = Routes.single(args.predictor_host, args.predictor_use_ssl)
    else:
        raise SystemExit("give --predictor_host (KServe injects it) or --routes_file (local runtime)")
    tag_hosts = None
    if args.shadow_hosts is not None:
        try:
            tag_hosts = TagHosts.parse(args.shadow_hosts)
        except ValueError as error:
            usage_error(f"--shadow_hosts {args.shadow_hosts}: {error}")
    shadow_percent = DEFAULT_SHADOW_PERCENT if args.shadow_percent is None else args.shadow_percent
    if not 0 <= shadow_percent <= 100:
        usage_error(f"--shadow_percent {args.shadow_percent:g}: must be within 0..100 (0 turns shadow scoring off)")
    max_in_flight = DEFAULT_MAX_IN_FLIGHT if args.shadow_max_in_flight is None else args.shadow_max_in_flight
    if max_in_flight < 1:
        usage_error(f"--shadow_max_in_flight {args.shadow_max_in_flight}: must be at least 1")
    if args.pairs_log is not None and (args.pairs_log.is_dir() or not args.pairs_log.parent.is_dir()):
        usage_error(f"--pairs_log {args.pairs_log}: not a file in an existing directory; give a path like "
                    "<state_dir>/shadow-pairs.jsonl")
    logger_queue = DEFAULT_QUEUE_EVENTS if args.logger_queue is None else args.logger_queue
    if logger_queue < 1:
        usage_error(f"--logger_queue {args.logger_queue}: must be at least 1")
    if args.logger_url is not None and not args.logger_url.startswith(("http://", "https://")):
        usage_error(f"--logger_url {args.logger_url}: not an http(s) URL; give the sink's address, e.g. "
                    "http://127.0.0.1:8090/")
    contract_dir = args.contract_dir or settings.STORAGE_URI or MODEL_DIR
    contract = read_contract(contract_dir.removeprefix("file://"))
    predictor_config = PredictorConfig(
        predictor_host=args.predictor_host or "", predictor_protocol=args.predictor_protocol,
        predictor_use_ssl=args.predictor_use_ssl,
        predictor_request_timeout_seconds=args.predictor_request_timeout_seconds)
    metrics = TransformerMetrics()
    model = FraudTransformer(args.model_name, contract, routes, metrics, max_rows=args.max_rows,
                             timeout_seconds=args.predictor_request_timeout_seconds, tag_hosts=tag_hosts)
    if shadow_percent > 0:
        model.shadow = ShadowScorer(routes, lambda: model.session, metrics, shadow_percent / 100, max_in_flight,
                                    args.predictor_request_timeout_seconds,
                                    PairLog(args.pairs_log) if args.pairs_log else None,
                                    model_name=args.model_name, tag_hosts=tag_hosts,
                                    seed=seed)
    if args.logger_url is not None:
        source = EventSource(args.model_name, pod_namespace(), f"http://localhost:{args.http_port}/")
        model.payload_logger = PayloadLogger(args.logger_url, source, PayloadLogMetrics(), max_queue=logger_queue,
                                             traffic=args.logger_events == "all")
        if model.shadow is not None:
            model.shadow.pair_logger = model.payload_logger
    kserve_server = server(args, predictor_config)
    model.load()
    start(kserve_server, model, on_rejected=lambda reason: metrics.rejected.labels(reason).inc())


def pod_namespace() -> str:
    """The namespace KServe's agent reports: the pod's, from its service account ("" off a cluster)."""
    path = Path(SERVICE_ACCOUNT_NAMESPACE)
    return path.read_text().strip() if path.is_file() else ""


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    {"predictor": run_predictor, "transformer": run_transformer}[args.role](args, Settings())


if __name__ == "__main__":
    main(sys.argv[1:])
