"""The one way to wait for something: poll a check until it holds, or time runs out.

Every wait in the project is a readiness check repeated every `poll_s` (a sleep between checks,
never instead of one), bounded by `timeout_s`, and stopped early by `give_up` when waiting can no
longer succeed (the process being waited for has died). The caller names what it waited for:
`poll` returns None on timeout rather than raising a generic error.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll(check: Callable[[], T | None], *, timeout_s: float, poll_s: float,
         give_up: Callable[[], None] | None = None) -> T | None:
    """`check()` until it returns something truthy, which is returned; None once `timeout_s` has
    passed (`check` runs at least once, also with `timeout_s` 0). After each failed check
    `give_up()`, when given, raises to stop waiting."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if give_up is not None:
            give_up()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        time.sleep(min(poll_s, remaining))  # between checks, not instead of one
