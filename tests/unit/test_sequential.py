"""The anytime-valid tests: their error rate at every look is bounded as Ville's inequality says,
measured by simulation over whole sequences of looks (the bound, not a seed, makes them pass)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from fraud_canary.sequential import (
    ABOVE,
    BELOW,
    SHIFTS,
    EProcess,
    bernoulli_log_lr,
    lower_bound,
    rate_ratio_log_lr,
    upper_bound,
)
from scipy import stats
from scipy.special import expit, logit, logsumexp

ALPHA = 0.05
PATHS = 4000


def _max_allowed(rate: float, n: int, confidence: float = 0.999) -> int:
    """The most crossings Binomial(n, rate) gives with `confidence`: a true rate ≤ `rate` passes
    this bound with probability ≥ 0.999, so the test is flaky at most once in a thousand runs."""
    return int(stats.binom.ppf(confidence, n, rate))


def _crossings_bernoulli(p_true: float, p0: float, side, looks: int, rows_per_look: int, rng) -> int:
    """Paths (of PATHS) whose mixture e-process ever reaches 1/ALPHA, looked at after every look."""
    counts = rng.binomial(rows_per_look, p_true, size=(PATHS, looks)).cumsum(axis=1)
    n = rows_per_look * np.arange(1, looks + 1)
    sign = 1.0 if side == ABOVE else -1.0
    p = expit(logit(p0) + sign * np.asarray(SHIFTS))
    log_lr = (counts[..., None] * np.log(p / p0)
              + (n[None, :, None] - counts[..., None]) * (np.log1p(-p) - math.log1p(-p0)))
    log_e = logsumexp(log_lr, axis=2) - math.log(len(SHIFTS))
    return int(np.any(log_e >= -math.log(ALPHA), axis=1).sum())


@pytest.mark.parametrize(("p0", "side"), [(0.01, ABOVE), (0.5, BELOW), (0.02, ABOVE), (0.7, BELOW)])
def test_a_true_null_is_rejected_at_most_alpha_over_every_look(p0, side):
    rng = np.random.default_rng()
    crossed = _crossings_bernoulli(p0, p0, side, looks=100, rows_per_look=50, rng=rng)
    assert crossed <= _max_allowed(ALPHA, PATHS), f"{crossed} of {PATHS} paths crossed at the null's boundary"


def test_the_closed_form_matches_the_process_built_look_by_look():
    t = EProcess("r", ALPHA, ABOVE, 0.01)
    for k, n in ((3, 100), (0, 400), (9, 250)):
        t = t.add(bernoulli_log_lr(k, n, 0.01, ABOVE))
    once = bernoulli_log_lr(12, 750, 0.01, ABOVE)
    assert np.allclose(t.log_lr, once)
    assert t.looks == 3 and t.to_dict()["method"] == "mixture SPRT (e-process)"


def test_a_large_effect_rejects_at_once_and_stays_rejected():
    t = EProcess("flags", ALPHA, ABOVE, 0.02).add(bernoulli_log_lr(990, 1000, 0.02, ABOVE))
    assert t.rejected and t.e_value > 1e100
    # later evidence the other way does not take a rejection back
    assert t.add(bernoulli_log_lr(0, 1_000_000, 0.02, ABOVE)).rejected


def test_rate_ratio_at_its_null_is_rejected_at_most_alpha_over_changing_splits():
    rng = np.random.default_rng()
    looks, theta0 = 40, 2.0
    shares = np.resize([0.05, 0.2, 0.5], looks)  # the split changes between looks, as the steps do
    crossed = 0
    for _ in range(1000):
        t = EProcess("ratio", ALPHA, ABOVE, theta0)
        for share in shares:
            n_c = int(rng.binomial(20_000, share))
            n_b = 20_000 - n_c
            events_b = int(rng.poisson(0.002 * n_b))
            events_c = int(rng.poisson(theta0 * 0.002 * n_c))
            t = t.add(rate_ratio_log_lr(events_c, n_c, events_b, n_b, theta0, ABOVE))
        crossed += t.rejected
    assert crossed <= _max_allowed(ALPHA, 1000)


def test_rate_ratio_detects_a_canary_that_flags_everything():
    log_lr = rate_ratio_log_lr(2_000, 2_000, 40, 38_000, 2.0, ABOVE)
    assert float(logsumexp(log_lr) - math.log(len(log_lr))) > 100
    assert not rate_ratio_log_lr(0, 0, 0, 100, 2.0, ABOVE).any()


def test_the_confidence_sequence_covers_the_truth_at_every_look():
    rng = np.random.default_rng()
    p, looks, rows = 0.003, 60, 500
    misses = 0
    for _ in range(500):
        k = n = 0
        for _ in range(looks):
            k, n = k + int(rng.binomial(rows, p)), n + rows
            if not lower_bound(k, n, ALPHA) <= p <= upper_bound(k, n, ALPHA):
                misses += 1
                break
    assert misses <= _max_allowed(2 * ALPHA, 500)


def test_bounds_at_the_edges():
    assert upper_bound(0, 0, ALPHA) == 1.0 and lower_bound(0, 0, ALPHA) == 0.0
    assert upper_bound(0, 10_000, ALPHA) < 0.002
    assert lower_bound(10_000, 10_000, ALPHA) > 0.998


@pytest.mark.parametrize(("call", "message"), [
    (lambda: bernoulli_log_lr(1, 10, 0.0, ABOVE), "the null proportion must be in (0, 1), got 0.0"),
    (lambda: bernoulli_log_lr(11, 10, 0.5, ABOVE), "need 0 ≤ successes ≤ trials, got 11 of 10"),
    (lambda: bernoulli_log_lr(1, 10, 0.5, "up"), "side must be 'above' or 'below', got 'up'"),
    (lambda: rate_ratio_log_lr(1, 10, 1, 10, 0.0, ABOVE), "the null rate ratio must be positive and finite, got 0.0"),
    (lambda: EProcess("x", 1.5, ABOVE, 0.1), "x: alpha must be in (0, 1), got 1.5"),
])
def test_bad_arguments_name_the_value(call, message):
    with pytest.raises(ValueError) as raised:
        call()
    assert str(raised.value) == message
