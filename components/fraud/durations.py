"""Durations as typed on a command line: `90s`, `30m`, `1h`, `7d` (the CLI's `--since` and the sink's
`--feedback-window` read them alike)."""
from __future__ import annotations

import re
from datetime import timedelta

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta | None:
    """The duration `text` names, None when it names none."""
    match = _DURATION.fullmatch(text.strip())
    return timedelta(**{_UNITS[match[2]]: float(match[1])}) if match else None
