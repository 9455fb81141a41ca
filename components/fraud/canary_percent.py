"""A canary's share of traffic: one range, one default, one check.

A canary runs at a whole percent in 1..99. 0 and 100 are not canaries but operations of their own:
a rollback sends all traffic back to the rolled-out revision, a promotion removes
`canaryTrafficPercent` so the latest revision takes all (KServe's semantics, DESIGN 6).
"""
from __future__ import annotations

from typing import TypeGuard

DEFAULT_CANARY_PERCENT = 20
LOWEST, HIGHEST = 1, 99


def canary_percent(value: object, name: str = "") -> int:
    """`value` (an int, its text or a whole float) as a canary's percent; ValueError naming it (after `name`) and what to do."""
    shown = f"{name} {value!r}" if name else repr(value)
    if isinstance(value, float) and value.is_integer():  # a policy's 20.0
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{shown} is not a whole number")
    try:
        percent = int(value)
    except ValueError:
        raise ValueError(f"{shown} is not a whole number") from None
    if not LOWEST <= percent <= HIGHEST:
        raise ValueError(f"{shown} must be between {LOWEST} and {HIGHEST} (0 is `fraud-rollout canary rollback`, "
                         f"100 `fraud-rollout canary promote`)")
    return percent


def splits_traffic(percent: object) -> TypeGuard[int]:
    """Whether an InferenceService's `canaryTrafficPercent` (None when absent) runs a canary."""
    return isinstance(percent, int) and not isinstance(percent, bool) and LOWEST <= percent <= HIGHEST
