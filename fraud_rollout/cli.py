"""`fraud-rollout`: one CLI for the pipeline, serving and canary operations.

Each area adds its own subcommands through `register(commands, bench)`; a handler takes the
parsed arguments and returns an exit code. Bad input raises `UsageError` (or DataError /
ValueError from the core) and exits 2 with a message naming the value.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys

from fraud.schema import DataError

from fraud_rollout.args import UsageError


def build_parser() -> argparse.ArgumentParser:
    from fraud_rollout import (
        bench_coverage,
        bench_rollout,
        canary_cli,
        cluster_cli,
        demo,
        deploy_cli,
        pipeline_cli,
        prediction_log_cli,
        replay,
        rollout_cli,
        serving_cli,
    )

    parser = argparse.ArgumentParser(prog="fraud-rollout", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bench = commands.add_parser("bench", help="benchmarks that print measured numbers and targets")
    bench_commands = bench.add_subparsers(dest="bench", required=True, metavar="WHAT")
    pipeline_cli.register(commands, bench_commands)
    demo.register(commands, bench_commands)
    serving_cli.register(commands, bench_commands)
    deploy_cli.register(commands)
    canary_cli.register(commands)
    rollout_cli.register(commands)
    cluster_cli.register(commands)
    prediction_log_cli.register(commands)
    replay.register(commands, bench_commands)
    bench_rollout.register(commands, bench_commands)
    bench_coverage.register(commands, bench_commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    # A process started in the background by a non-interactive shell (`make test &`, many CI
    # runners) inherits SIGINT ignored, and Python then keeps it ignored: Ctrl-C or SIGINT would
    # do nothing and a demo would run on to exit 0. Every command here stops what it started on it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return int(args.func(args) or 0)
    except (UsageError, DataError, ValueError, FileNotFoundError) as error:
        print(f"fraud-rollout {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

