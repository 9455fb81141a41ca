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


def _whole_number(text: str, minimum: int, bound: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{text!r} {bound}")
    return value


def positive_int(text: str) -> int:
    """argparse type: a whole number ≥ 1, with an error that names the bad value."""
    return _whole_number(text, 1, "must be at least 1")


def non_negative_int(text: str) -> int:
    """argparse type: a whole number ≥ 0."""
    return _whole_number(text, 0, "must not be negative")


def number_between(low: float, high: float, also: str = ""):
    """argparse type: a number strictly between `low` and `high` (`also` names a word accepted besides)."""
    alternative = f" (or {also!r})" if also else ""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number{alternative}") from None
        if not low < value < high:
            raise argparse.ArgumentTypeError(f"{text!r} must be between {low:g} and {high:g}{alternative}")
        return value

    return parse


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

