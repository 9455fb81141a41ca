"""What the canary is held to: the objectives and thresholds of `recommend`, and each version's
offline (holdout) metrics."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from fraud.canary_percent import DEFAULT_CANARY_PERCENT, canary_percent

from fraud_canary.counts import finite, ratio
from fraud_canary.proportions import IntervalMethod


@dataclass(frozen=True)
class OfflineMetrics:
    """A version's holdout metrics, as `fraud.evaluate.classification_metrics` reports them."""

    precision: float
    recall: float
    #: Share of holdout rows flagged. It depends on the traffic's fraud rate, so give it only when
    #: online traffic is drawn like the holdout (the replay); NaN skips the flag-rate check.
    flag_rate: float = math.nan

    @classmethod
    def from_mapping(cls, metrics: Mapping[str, float]) -> OfflineMetrics:
        """From a dict with precision and recall, and either flag_rate or tp/fp/fn/tn."""
        flag_rate = metrics.get("flag_rate", math.nan)
        keys = ("tp", "fp", "fn", "tn")
        if not finite(flag_rate) and all(finite(metrics.get(k)) for k in keys):
            tp, fp, fn, tn = (float(metrics[k]) for k in keys)
            flag_rate = ratio(tp + fp, tp + fp + fn + tn)
        return cls(precision=float(metrics.get("precision", math.nan)),
                   recall=float(metrics.get("recall", math.nan)), flag_rate=float(flag_rate))


@dataclass(frozen=True)
class CanaryPolicy:
    """Objectives and thresholds for `recommend`. The alert rules in manifests/monitoring use the
    same numbers (error rate, p99, share ± tolerance, flag-rate ratio): change both together."""

    #: `canaryTrafficPercent` the canary was deployed with.
    target_canary_percent: float = float(DEFAULT_CANARY_PERCENT)
    #: Allowed distance (percentage points) of the observed canary share from the target.
    canary_percent_tolerance: float = 5.0
    #: Error-rate objective, per version.
    max_error_rate: float = 0.01
    #: p99 latency objective (end-to-end, answered requests), per version.
    max_p99_latency_ms: float = 250.0
    #: Significance level of every test, and power of the recall comparison.
    alpha: float = 0.05
    power: float = 0.8
    #: Smallest absolute recall drop (canary vs baseline) the evidence must be able to detect.
    detectable_recall_difference: float = 0.10
    #: Level and kind of the online-vs-offline acceptance intervals. `exact` (the binomial
    #: acceptance region) keeps a good version's false failures below 1 − confidence at every
    #: online count; the score (`wilson`) region does not at a handful of frauds: 0 of 2 caught
    #: at an offline recall of 0.75 happens 6.25 % of the time and fell outside its 95 % region,
    #: which rolled a good canary back at 20 % in a CI run of the progressive rollout.
    confidence: float = 0.95
    interval_method: IntervalMethod = "exact"
    #: The canary may lose at most this much precision (absolute) vs the baseline, when significant.
    max_precision_drop: float = 0.05
    #: Flag rates may differ by at most this factor either way, when significant.
    max_flag_rate_ratio: float = 2.0
    #: Paired (shadow-scored) rows the two versions may decide differently on, as a share of pairs;
    #: beyond it (significantly, one-sided binomial test) the canary rolls back, labels or not. A row
    #: only one version flags is flagged by at least one, so the disagreement is at most the sum of
    #: the two flag rates (≈ 0.1 % and 0.16 % on the holdout at 0.17 % fraud). Measured: v1 and v2
    #: of the 1,000,000-transaction run decide 246 of the ≈ 198,000 holdout rows differently
    #: (≈ 0.12 %; README "Results", McNemar 214 + 32), drift and a new fraud pattern included. 0.02
    #: is ≈ 15× that; a broken canary (wrong scaler, inverted threshold) disagrees on far more.
    max_paired_disagreement: float = 0.02
    #: Failed requests without a model_version count against the canary (worst case: the
    #: baseline has a rolled-out track record, the canary does not).
    unattributed_errors_against_canary: bool = True

    def __post_init__(self) -> None:
        values = {k: v for k, v in asdict(self).items() if isinstance(v, float)}
        if not all(map(math.isfinite, values.values())):
            raise ValueError(f"policy values must be finite: {values}")
        canary_percent(self.target_canary_percent, "target_canary_percent")
        if not 0 <= self.canary_percent_tolerance < 100:
            raise ValueError("canary_percent_tolerance must be in [0, 100)")
        if not (0 < self.alpha < 1 and 0 < self.power < 1 and 0 < self.confidence < 1):
            raise ValueError("alpha, power and confidence must be in (0, 1)")
        if not (0 <= self.max_error_rate < 1 and self.max_p99_latency_ms > 0 and self.max_flag_rate_ratio >= 1):
            raise ValueError("need 0 ≤ max_error_rate < 1, max_p99_latency_ms > 0, max_flag_rate_ratio ≥ 1")
        if not 0 < self.max_paired_disagreement <= 1:
            raise ValueError(f"max_paired_disagreement must be in (0, 1], got {self.max_paired_disagreement}")
