"""The one wait helper: checks until true, at least once, bounded, stopped by give_up."""
import time

import pytest
from fraud.waiting import poll


def test_returns_the_first_truthy_value_of_the_check():
    answers = iter([None, 0, "", "ready"])
    assert poll(lambda: next(answers), timeout_s=5, poll_s=0.001) == "ready"


def test_checks_once_with_no_time_left_and_then_gives_none():
    calls = []
    assert poll(lambda: calls.append(1), timeout_s=0, poll_s=1) is None
    assert calls == [1]


def test_times_out_after_the_timeout_not_the_next_poll():
    started = time.monotonic()
    assert poll(lambda: False, timeout_s=0.2, poll_s=10) is None
    assert 0.2 <= time.monotonic() - started < 5  # the sleep is cut to the time left


def test_give_up_stops_the_wait_with_its_error():
    def dead():
        raise RuntimeError("the server exited")

    with pytest.raises(RuntimeError, match="the server exited"):
        poll(lambda: False, timeout_s=60, poll_s=0.01, give_up=dead)
