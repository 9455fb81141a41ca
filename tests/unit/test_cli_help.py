"""Every option of every `fraud-rollout` command says what it does and, when it has one, its default,
in `--help` (a user once had to read the source for `--window`'s and `--model-name`'s)."""
from __future__ import annotations

import argparse

from fraud_rollout.cli import build_parser


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name))


def test_every_option_has_help_and_every_default_is_shown():
    missing_help, missing_default = [], []
    for path, parser in commands(build_parser()):
        for action in parser._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS:
                continue
            if not action.help:
                missing_help.append((path, action.option_strings[-1]))
                continue
            own = " ".join(parser._get_formatter()._expand_help(action).split())
            if action.default not in (None, False, "", [], argparse.SUPPRESS) and "default" not in own:
                missing_default.append((path, action.option_strings[-1]))
    assert missing_help == [] and missing_default == []


def test_a_default_is_named_once():
    serve = next(p for path, p in commands(build_parser()) if path == ("serve",))
    shown = " ".join(serve.format_help().split())
    assert "traffic share of the candidate (1..99) (default 20)" in shown
    assert shown.count("default: the transformer's measured-affordable share") == 1
