"""`fraud-rollout sink serve` (the prediction-log sink) and `fraud-rollout labels ingest FILE`
(late labels joined to the served predictions by transaction id)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def _serve(args: argparse.Namespace) -> int:
    from fraud_control.prediction_log import sink as prediction_sink

    return prediction_sink.serve(args, args.settings, prog="fraud-rollout sink serve")


def _ingest(args: argparse.Namespace) -> int:
    from fraud.labels import read_labels
    from fraud_control.prediction_log.store import StoreError, open_store

    from fraud_rollout.args import UsageError

    frame = read_labels(args.file)  # DataError names the file and what is wrong with it: exit 2
    try:
        # create=False: a mistyped --store must not become a new, empty store that joins nothing
        with open_store(args.store, create=args.create) as store:
            result = store.ingest_labels(frame)
    except StoreError as error:
        missing = not args.create and str(error).startswith("no prediction store at ")
        hint = "; check the path, or pass --create to start a new one" if missing else ""
        raise UsageError(f"--store {args.store}: {error}{hint}") from None
    if args.json:
        print(json.dumps({"read": result.total, "joined": result.joined, "unknown": result.unknown}))
    else:
        print(f"labels: {result.total} read, {result.joined} joined to served predictions, {result.unknown} unknown")
    return 0


def register(commands) -> None:
    from fraud_control.prediction_log.sink import add_arguments

    from fraud_rollout.args import listen_port

    sink = commands.add_parser("sink", help="the prediction-log sink: KServe's payload-logger CloudEvents → the store")
    sink_actions = sink.add_subparsers(dest="action", required=True, metavar="ACTION")
    serve = sink_actions.add_parser("serve", help="receive CloudEvents over HTTP until stopped")
    add_arguments(serve, port=listen_port)
    serve.set_defaults(func=_serve)

    labels = commands.add_parser("labels", help="late labels (chargebacks) joined to served predictions")
    label_actions = labels.add_subparsers(dest="action", required=True, metavar="ACTION")
    ingest = label_actions.add_parser("ingest", help="store a CSV or parquet of transaction_id,label,label_time")
    ingest.add_argument("file", type=Path, metavar="FILE", help="labels file (.csv or .parquet)")
    ingest.add_argument("--store", required=True,
                        help="the prediction store the sink writes: a SQLite file or postgresql://… URL")
    ingest.add_argument("--create", action="store_true",
                        help="create the SQLite store if it does not exist (default: refuse; a typo is not a new store)")
    ingest.add_argument("--json", action="store_true", help="print the counts as JSON")
    ingest.set_defaults(func=_ingest)
