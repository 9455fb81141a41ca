"""`fraud-rollout`: one CLI for the pipeline, serving and canary operations.

Each area adds its own subcommands through `register(commands, bench)`; a handler takes the
parsed arguments and returns an exit code. Bad input raises `UsageError` (or DataError /
ValueError from the core) and exits 2 with a message naming the value.
"""
from __future__ import annotations

import argparse
import logging
import sys

from fraud.schema import DataError


class UsageError(Exception):
    """A bad command-line value; the message names it."""


def positive_int(text: str) -> int:
    """argparse type: a whole number ≥ 1, with an error that names the bad value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def build_parser() -> argparse.ArgumentParser:
    from fraud_pipelines import cli as pipeline_cli
    from fraud_rollout import demo

    parser = argparse.ArgumentParser(prog="fraud-rollout", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bench = commands.add_parser("bench", help="benchmarks that print measured numbers and targets")
    bench_commands = bench.add_subparsers(dest="bench", required=True, metavar="WHAT")
    pipeline_cli.register(commands, bench_commands)
    demo.register(commands, bench_commands)
    try:
        from fraud_serving import cli as serving_cli
    except ImportError:  # serving commands arrive with the serving package
        serving_cli = None
    if serving_cli is not None:
        from fraud_rollout import analyze, replay

        serving_cli.register(commands, bench_commands)
        replay.register(commands, bench_commands)
        analyze.register(commands, bench_commands)  # `canary analyze`, on serving's `canary` command
    return parser


def main(argv: list[str] | None = None) -> int:
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

