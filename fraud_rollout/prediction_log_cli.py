"""`fraud-rollout sink serve` (the prediction-log sink) and `fraud-rollout labels ingest FILE`
(late labels joined to the served predictions by transaction id)."""
from __future__ import annotations

import argparse
from pathlib import Path


def _serve(args: argparse.Namespace) -> int:
    from fraud_control import prediction_sink

    return prediction_sink.serve(args, prog="fraud-rollout sink serve")


def _ingest(args: argparse.Namespace) -> int:
    from fraud.labels import read_labels
    from fraud_control.prediction_store import StoreError, open_store

    from fraud_rollout.args import UsageError

    frame = read_labels(args.file)  # DataError names the bad value: exit 2
    try:
        with open_store(args.store) as store:
            result = store.ingest_labels(frame)
    except StoreError as error:
        raise UsageError(str(error)) from None
    print(f"labels: {result.total} read, {result.joined} joined to served predictions, {result.unknown} unknown")
    return 0


def register(commands) -> None:
    from fraud_control.prediction_sink import add_arguments

    sink = commands.add_parser("sink", help="the prediction-log sink: KServe's payload-logger CloudEvents → the store")
    sink_actions = sink.add_subparsers(dest="action", required=True, metavar="ACTION")
    serve = sink_actions.add_parser("serve", help="receive CloudEvents over HTTP until stopped")
    add_arguments(serve)
    serve.set_defaults(func=_serve)

    labels = commands.add_parser("labels", help="late labels (chargebacks) joined to served predictions")
    label_actions = labels.add_subparsers(dest="action", required=True, metavar="ACTION")
    ingest = label_actions.add_parser("ingest", help="store a CSV or parquet of transaction_id,label,label_time")
    ingest.add_argument("file", type=Path, metavar="FILE", help="labels file (.csv or .parquet)")
    ingest.add_argument("--store", required=True, help="the prediction store: a SQLite file or postgresql://… URL")
    ingest.set_defaults(func=_ingest)
