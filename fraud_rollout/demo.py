"""`fraud-rollout demo`: the whole story on this machine, with the embedded defaults."""
from __future__ import annotations

from pathlib import Path


def register(commands, bench) -> None:
    from fraud_pipelines.cli import add_run_options

    demo = commands.add_parser("demo", help="run the whole story locally (pipeline, then the report)")
    add_run_options(demo, default_out=Path(".fraud-rollout/run"))
    demo.set_defaults(func=demo_command)


def demo_command(args) -> int:
    from fraud_pipelines.cli import run_command

    return run_command(args)
