"""Command-line values: `UsageError` and the argparse types every command shares. Each error
names the bad value, so `fraud-rollout` can print it on one line and exit 2."""
from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from fraud.canary_percent import canary_percent as check_canary_percent
from fraud.durations import parse_duration
from fraud_canary.analysis import AUTO
from fraud_control.inferenceservice.local_state import DEFAULT_STATE_DIR


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


def _tcp_port(text: str, low: int, note: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not low <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port ({low}..65535{note})")
    return port


def tcp_port(text: str) -> int:
    """argparse type: a TCP port a server listens on or a client connects to, 1..65535."""
    return _tcp_port(text, 1, "")


def listen_port(text: str) -> int:
    """argparse type: a TCP port to listen on, 0..65535, where 0 asks the OS for a free one (the
    server prints the port it got)."""
    return _tcp_port(text, 0, "; 0 picks a free one")


def number_between(low: float, high: float, also: str = "") -> Callable[[str], float]:
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


def number_within(low: float, high: float, note: str = "") -> Callable[[str], float]:
    """argparse type: a number in [`low`, `high`] (`note` follows the out-of-range message)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number ({low:g}..{high:g})") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is not within {low:g}..{high:g}{note}")
        return value

    return parse


def non_negative_float(text: str) -> float:
    """argparse type: a finite number ≥ 0, with an error that names the bad value."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number ≥ 0")
    return value


def detectable_difference(text: str) -> float | str:
    """argparse type: a recall difference in (0, 1), or "auto"."""
    if text == AUTO:
        return AUTO
    return number_between(0, 1, also=AUTO)(text)


def since_time(text: str) -> datetime:
    """argparse type: an ISO 8601 time (UTC unless it names its zone) or a duration back from now
    (`30m`, `2h`, `7d`)."""
    duration = parse_duration(text)
    if duration is not None:
        return datetime.now(UTC) - duration
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither an ISO 8601 time (2026-12-01T09:00) "
                                         "nor a duration (30m, 2h, 7d)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def state_dir_option(parser: argparse.ArgumentParser) -> None:
    # None: resolved after parsing (fraud_ops.local_defaults), so the demo's state is found too
    parser.add_argument("--state-dir", type=Path, default=None,
                        help=f"local runtime state (the InferenceService manifest; default {DEFAULT_STATE_DIR}, "
                             "else the demo's, .fraud-rollout/demo/serving)")


class DefaultsHelp(argparse.HelpFormatter):
    """An option's help ends with its default, unless it names its default itself or has none to name
    (a flag, or a value that is worked out when not given)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (not action.option_strings or "default" in text or action.default in (None, False, "", [])
                or action.default is argparse.SUPPRESS or text == argparse.SUPPRESS):
            return action.help
        return f"{text} (default %(default)s)"


class DefaultsHelpRawEpilog(DefaultsHelp, argparse.RawDescriptionHelpFormatter):
    """DefaultsHelp, with the description and epilog kept as written (a table of exit codes)."""


def canary_percent(text: str) -> int:
    """argparse type: a canary's share of traffic (`fraud.canary_percent`)."""
    try:
        return check_canary_percent(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
