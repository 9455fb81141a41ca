"""`fraud-rollout`: one CLI for the pipeline, serving and canary operations.

Each area adds its own subcommands through `register(commands, bench)`; a handler takes the
parsed arguments and returns an exit code. Bad input raises `UsageError` (or DataError /
ValueError from the core) and exits 2 with a message naming the value.
"""
from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import sys

from fraud.schema import DataError

from fraud_rollout.args import DefaultsHelp, UsageError

#: Exit code when stdout is a pipe its reader closed (`fraud-rollout … | head -1`): 128 + SIGPIPE, what a
#: shell reports for `yes | head -1`, so `set -o pipefail` sees a truncated output as every Unix tool's.
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


@functools.cache
def version() -> str:
    from importlib.metadata import version as installed

    return f"fraud-rollout {installed('fraud-rollout')}"


class CommandParser(argparse.ArgumentParser):
    """Every (sub)command's parser: `-v/--verbose` and `--version` accepted at any level (also after
    the subcommand), defaults in the help, and a bad argument on ONE line (argparse prints the usage
    above it)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelp)
        super().__init__(*args, **kwargs)
        # SUPPRESS: a subcommand's parser would otherwise reset the -v given before it to False
        self.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
        self.add_argument("--version", action="version", version=version())

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


#: Commands that load models with TensorFlow in this process (the rest only start servers or talk HTTP):
#: (command, its bench) pairs, None for any.
TF_IN_PROCESS = {("demo", None), ("replay", None), ("bench", "replay"), ("bench", "serving"), ("bench", "pipeline")}


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with the native stderr closed: its C++ banners (absl's "All log messages
    before absl::InitializeLog()", oneDNN's, the CPU features') are written at load, before
    TF_CPP_MIN_LOG_LEVEL is read, and would bury the command's own lines. `-v` shows them. An
    import that fails still raises, with Python's message."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # and its later INFO and WARNING lines
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401

        tensorflow.constant(0.0) + 1.0  # the first op logs the CPU features: here, not mid-output
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def build_parser() -> argparse.ArgumentParser:
    from fraud_rollout import (
        bench_coverage,
        bench_rollout,
        bench_sink,
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

    parser = CommandParser(prog="fraud-rollout", description=__doc__.splitlines()[0])
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
    bench_sink.register(commands, bench_commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            return run(argv)
        finally:
            sys.stdout.flush()  # a closed pipe raises here, inside the handler below, not at exit
    except BrokenPipeError:
        # Python's note on SIGPIPE: point stdout at /dev/null so the interpreter's own flush at exit
        # does not raise again ("Exception ignored ... BrokenPipeError" on stderr).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def run(argv: list[str] | None = None) -> int:
    # A process started in the background by a non-interactive shell (`make test &`, many CI
    # runners) inherits SIGINT ignored, and Python then keeps it ignored: Ctrl-C or SIGINT would
    # do nothing and a demo would run on to exit 0. Every command here stops what it started on it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose = getattr(args, "verbose", False)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if not verbose:  # its "Retrying … after connection broken" lines would bury the one-line error
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
    if not verbose and (args.command, getattr(args, "bench", None)) in TF_IN_PROCESS:
        import_tensorflow_quietly()
    from fraud.settings import Settings

    args.settings = Settings()  # the environment, read once for the whole command
    try:
        if getattr(args, "state_dir", False) is None:  # not given: the pipeline run's state, else the demo's
            from fraud_ops import local_defaults

            args.state_dir = (local_defaults.state_dir() if getattr(args, "target", "local") == "local"
                              else local_defaults.RUN_STATE_DIR)
        return int(args.func(args) or 0)
    except (UsageError, DataError, ValueError, FileNotFoundError) as error:
        print(f"fraud-rollout {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
