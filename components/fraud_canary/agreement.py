"""Does a version behave online as it did offline? An online proportion against its holdout value,
judged with the online sample size (the reasoning is in `agreement_with_offline`)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from scipy import stats

from fraud_canary.counts import check_count, ratio
from fraud_canary.proportions import Interval, IntervalMethod, normal_quantile


@dataclass(frozen=True)
class Agreement:
    """Whether an online proportion is consistent with its offline value (see `agreement_with_offline`)."""

    offline: float
    online_successes: int
    online_trials: int
    interval: Interval  # around `offline`, for `online_trials` online trials

    @property
    def online(self) -> float:
        return ratio(self.online_successes, self.online_trials)

    @property
    def agrees(self) -> bool:
        """False also when undecidable (no online trials, non-finite offline value)."""
        return self.interval.contains(self.online)

    @property
    def direction(self) -> Literal["below", "within", "above", "unknown"]:
        if not (math.isfinite(self.online) and math.isfinite(self.interval.low)):
            return "unknown"
        return "within" if self.agrees else ("below" if self.online < self.interval.low else "above")

    def to_dict(self) -> dict[str, Any]:
        return {"offline": self.offline, "online": self.online, "online_successes": self.online_successes,
                "online_trials": self.online_trials, "low": self.interval.low, "high": self.interval.high,
                "confidence": self.interval.confidence, "method": self.interval.method,
                "agrees": self.agrees, "direction": self.direction}


def offline_acceptance_interval(
    offline: float, online_trials: int, confidence: float = 0.95, method: IntervalMethod = "wilson",
) -> Interval:
    """The online proportions, out of `online_trials`, consistent with a true value of `offline`.

    `wilson`: offline ± z·sqrt(offline (1 − offline) / n_online), the acceptance region of the
    score test of H0: p = offline. An online estimate lies in it exactly when `offline` lies in the
    online estimate's Wilson interval. `exact`: the central binomial acceptance region
    [F⁻¹(α/2), F⁻¹(1 − α/2)] / n of Binomial(n_online, offline), the counterpart of Clopper-Pearson.
    """
    z = normal_quantile(confidence)
    if online_trials < 0:
        raise ValueError("online_trials must be non-negative")
    if online_trials == 0 or not (math.isfinite(offline) and 0 <= offline <= 1):
        return Interval(math.nan, math.nan, confidence, method)
    if method == "wilson":
        half = z * math.sqrt(offline * (1 - offline) / online_trials)
        return Interval(max(0.0, offline - half), min(1.0, offline + half), confidence, method)
    if method == "exact":
        a = 1 - confidence
        low = float(stats.binom.ppf(a / 2, online_trials, offline))
        high = float(stats.binom.ppf(1 - a / 2, online_trials, offline))
        return Interval(low / online_trials, high / online_trials, confidence, method)
    raise ValueError(f"unknown interval method {method!r}")


def agreement_with_offline(
    online_successes: int, online_trials: int, offline: float,
    confidence: float = 0.95, method: IntervalMethod = "wilson",
) -> Agreement:
    """Does an online proportion (e.g. recall = caught / frauds seen) agree with its offline value?

    Which interval, and why. The question is not "where is the true recall?" (that is the offline
    estimate's own CI, whose width comes from the holdout's size) but "could this online sample
    have come from a model whose recall is the offline one?". The spread of an online estimate is
    set by the number of *online* trials: a canary that saw 40 frauds has a recall that moves in
    steps of 2.5 points, so judging it against an interval sized for the holdout's thousands of
    frauds would flag agreement as skew. Hence the interval is centred on the offline value and
    sized with the online count: the acceptance region of a one-sample test of H0: p = offline
    (see `offline_acceptance_interval`); equivalently, offline lies inside the online Wilson
    (or Clopper-Pearson) interval.

    The offline value is taken as the reference, not as a second noisy sample: when the replay
    sends the holdout itself, each version's online frauds are a random subset of the very frauds
    the offline recall was computed on, so the two are not independent (a two-sample test would be
    wrong) and the true spread is the hypergeometric one, narrower than this binomial interval by
    the finite-population factor sqrt((N − n)/(N − 1)). With the `exact` region and no
    training/serving skew the check fails at most 1 − confidence of the time at any online count;
    the `wilson` (score) region is an approximation that exceeds that at a handful of trials (0 of
    2 at offline 0.75: probability 6.25 %, outside the 95 % region). On live traffic (new
    transactions), offline and online are independent samples; then also consider
    `compare_proportions` on the two counts.
    """
    check_count(online_successes, online_trials, "online")
    return Agreement(offline=float(offline), online_successes=int(online_successes),
                     online_trials=int(online_trials),
                     interval=offline_acceptance_interval(offline, online_trials, confidence, method))
