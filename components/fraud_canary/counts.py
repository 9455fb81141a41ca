"""Counts and the numbers derived from them: NaN, never a made-up 0 or 1, when nothing was counted."""
from __future__ import annotations

import math

import numpy as np


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator; NaN when the denominator is 0."""
    return numerator / denominator if denominator else math.nan


def finite(*values: object) -> bool:
    """True when every value is a real, finite number (None, NaN, ±inf and strings are not)."""
    return all(isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(v) for v in values)


def check_count(successes: int, trials: int, name: str) -> None:
    if not (0 <= successes <= trials):
        raise ValueError(f"{name}: need 0 ≤ successes ({successes}) ≤ trials ({trials})")
