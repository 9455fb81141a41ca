"""Online evidence for a canary: per-version metrics, significance tests, and promote/hold/rollback.

Pure functions on NumPy arrays and plain counts; the replay report and `canary analyze` call them.
Three questions, each answered with the sample size it actually has:

* **Is the canary healthy?** Error rate and p99 latency per version against objectives, and the
  canary's traffic share against the target `canaryTrafficPercent`.
* **Does each version behave online as it did offline?** Each version's online recall, precision
  and flag rate must lie in the acceptance interval around its offline holdout value, computed
  with the *online* sample size (`agreement_with_offline`; the reasoning is in its docstring).
* **Is the canary worse than the baseline?** Two-proportion tests of v2 vs v1 recall (denominator:
  the frauds each version saw), precision, and flag rate (denominator: the requests each version
  answered), with Fisher's exact test when counts are small; and a power analysis that says how
  many requests are needed before "no significant difference" means anything
  (`plan_recall_evidence`, `evidence_status`).

`recommend` combines them. It fails closed: a missing or non-finite number never promotes.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

#: Version key for rows no version can be attributed to: a failed request whose response carried
#: no model_version. Same value as the transformer's metric label for such failures
#: (`fraud_predictor_errors_total{model_version="unknown"}`: in a cluster Knative splits behind
#: one address, so the transformer cannot tell which revision failed).
UNATTRIBUTED = "unknown"

PROMOTE, HOLD, ROLLBACK = "promote", "hold", "rollback"
Action = Literal["promote", "hold", "rollback"]
CheckStatus = Literal["pass", "fail", "insufficient"]
IntervalMethod = Literal["wilson", "exact"]

#: Fisher's exact test replaces the z-test when any expected cell count is below this.
MIN_EXPECTED_COUNT = 5.0


# --------------------------------------------------------------------------------------------
# Per-version online metrics
# --------------------------------------------------------------------------------------------


def _ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator; NaN (never a made-up 0 or 1) when the denominator is 0."""
    return numerator / denominator if denominator else math.nan


@dataclass(frozen=True)
class Confusion:
    """Confusion counts of answered, labelled requests (positive = fraud)."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def frauds(self) -> int:
        return self.tp + self.fn

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        # 2TP / (2TP + FP + FN): defined whenever anything was flagged or missed.
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)


@dataclass(frozen=True)
class VersionMetrics:
    """What one model version did online.

    Counts are per transaction (row): a batched request contributes its rows, each with the
    request's latency and error flag. `confusion` is None when labels are unknown (metrics read
    from Prometheus); precision, recall and F1 are then NaN.
    """

    model_version: str
    requests: int  # rows routed to this version, answered or failed
    errors: int  # rows whose request failed
    flagged: int  # answered rows decided "fraud"
    traffic_share: float  # requests / all requests of every version (unattributed included)
    latency_p50_ms: float  # over answered rows: a fast failure is not a fast answer
    latency_p95_ms: float
    latency_p99_ms: float
    confusion: Confusion | None = None

    def __post_init__(self) -> None:
        if min(self.requests, self.errors, self.flagged) < 0:
            raise ValueError(f"{self.model_version}: counts must be non-negative")
        if self.errors > self.requests or self.flagged > self.answered:
            raise ValueError(f"{self.model_version}: errors ≤ requests and flagged ≤ answered rows required")
        c = self.confusion
        if c is not None:
            if min(c.tp, c.fp, c.fn, c.tn) < 0:
                raise ValueError(f"{self.model_version}: confusion counts must be non-negative")
            if c.tp + c.fp + c.fn + c.tn != self.answered or c.tp + c.fp != self.flagged:
                raise ValueError(f"{self.model_version}: confusion counts disagree with answered/flagged rows")

    @property
    def answered(self) -> int:
        return self.requests - self.errors

    @property
    def error_rate(self) -> float:
        return _ratio(self.errors, self.requests)

    @property
    def flag_rate(self) -> float:
        """Share of answered rows decided "fraud" (failed rows have no decision)."""
        return _ratio(self.flagged, self.answered)

    @property
    def frauds(self) -> int | None:
        return None if self.confusion is None else self.confusion.frauds

    @property
    def fraud_rate(self) -> float:
        return math.nan if self.confusion is None else _ratio(self.confusion.frauds, self.answered)

    @property
    def precision(self) -> float:
        return math.nan if self.confusion is None else self.confusion.precision

    @property
    def recall(self) -> float:
        return math.nan if self.confusion is None else self.confusion.recall

    @property
    def f1(self) -> float:
        return math.nan if self.confusion is None else self.confusion.f1

    def to_dict(self) -> dict:
        """Counts, derived metrics and percentiles as one flat dict (NaN stays NaN)."""
        out = {k: v for k, v in asdict(self).items() if k != "confusion"}
        out.update(answered=self.answered, error_rate=self.error_rate, flag_rate=self.flag_rate,
                   fraud_rate=self.fraud_rate, precision=self.precision, recall=self.recall, f1=self.f1)
        out.update(asdict(self.confusion) if self.confusion else dict(tp=None, fp=None, fn=None, tn=None))
        return out


def _versions(model_versions: ArrayLike, n: int) -> np.ndarray:
    raw = np.asarray(model_versions).reshape(-1)
    if raw.shape[0] != n:
        raise ValueError(f"model_versions has {raw.shape[0]} entries, expected {n}")
    if raw.dtype.kind == "U":  # plain strings: no per-row Python work (a 1M-row replay)
        return np.where(raw == "", UNATTRIBUTED, raw)
    missing = lambda v: v is None or v in ("", UNATTRIBUTED) or (isinstance(v, float) and math.isnan(v))  # noqa: E731
    return np.array([UNATTRIBUTED if missing(v) else str(v) for v in raw.tolist()], dtype=object)


def _binary(values: ArrayLike, name: str, rows: np.ndarray) -> np.ndarray:
    """`values` as bool, requiring 0/1 (or bool) on the selected rows."""
    array = np.asarray(values, dtype=float).reshape(-1)
    if array.shape != rows.shape:
        raise ValueError(f"{name} has {array.shape[0]} entries, expected {rows.shape[0]}")
    picked = array[rows]
    if not np.isin(picked, (0.0, 1.0)).all():
        raise ValueError(f"{name} must be 0/1 on every {'answered ' if not rows.all() else ''}row")
    return np.where(rows, array, 0.0) == 1.0


def version_metrics(
    labels: ArrayLike | None,
    decisions: ArrayLike,
    model_versions: ArrayLike,
    latency_ms: ArrayLike,
    errors: ArrayLike,
) -> dict[str, VersionMetrics]:
    """Per-version online metrics from one entry per transaction.

    Args:
        labels: true class (1 = fraud) per row, or None when unknown.
        decisions: the served decision (1 = flagged as fraud); ignored (may be NaN) on failed rows.
        model_versions: the `model_version` of the response; None, "", NaN and "unknown" (a failed
            request that reached no identifiable version) are grouped under `UNATTRIBUTED`.
        latency_ms: end-to-end latency of the row's request; NaN rows are left out of percentiles.
        errors: True where the row's request failed.

    Returns:
        {model_version: VersionMetrics}, sorted by version. Traffic shares sum to 1 over all keys.
    """
    failed = np.asarray(errors, dtype=bool).reshape(-1)
    n = failed.shape[0]
    answered = ~failed
    versions = _versions(model_versions, n)
    flagged = _binary(decisions, "decisions", answered)
    fraud = None if labels is None else _binary(labels, "labels", np.ones(n, dtype=bool))
    latency = np.asarray(latency_ms, dtype=float).reshape(-1)
    if latency.shape[0] != n:
        raise ValueError(f"latency_ms has {latency.shape[0]} entries, expected {n}")
    if (latency < 0).any():
        raise ValueError("latency_ms must not be negative")

    out: dict[str, VersionMetrics] = {}
    for version in sorted(set(versions.tolist())):
        rows = versions == version
        ok = rows & answered
        finite = latency[ok & np.isfinite(latency)]
        p50, p95, p99 = (np.percentile(finite, (50, 95, 99)) if finite.size else (math.nan,) * 3)
        confusion = None
        if fraud is not None:
            confusion = Confusion(tp=int(np.sum(ok & fraud & flagged)), fp=int(np.sum(ok & ~fraud & flagged)),
                                  fn=int(np.sum(ok & fraud & ~flagged)), tn=int(np.sum(ok & ~fraud & ~flagged)))
        out[version] = VersionMetrics(
            model_version=version, requests=int(rows.sum()), errors=int((rows & failed).sum()),
            flagged=int((ok & flagged).sum()), traffic_share=_ratio(int(rows.sum()), n),
            latency_p50_ms=float(p50), latency_p95_ms=float(p95), latency_p99_ms=float(p99),
            confusion=confusion)
    return out


# --------------------------------------------------------------------------------------------
# Tests and intervals for proportions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProportionComparison:
    """Candidate vs baseline proportion: pooled two-sided z-test, or Fisher's exact test when any
    expected cell count is below 5, or "undefined" (not significant) when either has no trials."""

    baseline_successes: int
    baseline_trials: int
    candidate_successes: int
    candidate_trials: int
    method: Literal["z", "fisher", "undefined"]
    z: float  # (candidate − baseline) / pooled SE; NaN unless method == "z"
    p_value: float
    alpha: float
    min_expected_count: float

    @property
    def baseline_proportion(self) -> float:
        return _ratio(self.baseline_successes, self.baseline_trials)

    @property
    def candidate_proportion(self) -> float:
        return _ratio(self.candidate_successes, self.candidate_trials)

    @property
    def difference(self) -> float:
        """candidate − baseline (positive: the candidate's proportion is higher)."""
        return self.candidate_proportion - self.baseline_proportion

    @property
    def significant(self) -> bool:
        return math.isfinite(self.p_value) and self.p_value < self.alpha

    def to_dict(self) -> dict:
        return {**asdict(self), "baseline_proportion": self.baseline_proportion,
                "candidate_proportion": self.candidate_proportion, "difference": self.difference,
                "significant": self.significant}


def _check_count(successes: int, trials: int, name: str) -> None:
    if not (0 <= successes <= trials):
        raise ValueError(f"{name}: need 0 ≤ successes ({successes}) ≤ trials ({trials})")


def compare_proportions(
    baseline_successes: int, baseline_trials: int, candidate_successes: int, candidate_trials: int,
    *, alpha: float = 0.05,
) -> ProportionComparison:
    """Two-sided test of equal proportions, candidate vs baseline.

    The pooled two-proportion z-test, z = (p_c − p_b) / sqrt(p (1 − p) (1/n_b + 1/n_c)) with p the
    pooled proportion; when any expected count of the 2×2 table (successes/failures × versions)
    is below 5 the normal approximation is poor, so Fisher's exact test is used instead (this
    includes the degenerate tables where every trial succeeded or every trial failed: p = 1).
    """
    _check_count(baseline_successes, baseline_trials, "baseline")
    _check_count(candidate_successes, candidate_trials, "candidate")
    common = dict(baseline_successes=int(baseline_successes), baseline_trials=int(baseline_trials),
                  candidate_successes=int(candidate_successes), candidate_trials=int(candidate_trials),
                  alpha=alpha)
    if baseline_trials == 0 or candidate_trials == 0:
        return ProportionComparison(**common, method="undefined", z=math.nan, p_value=math.nan,
                                    min_expected_count=0.0)
    total = baseline_trials + candidate_trials
    successes = baseline_successes + candidate_successes
    expected = [t * s / total for t in (baseline_trials, candidate_trials) for s in (successes, total - successes)]
    min_expected = float(min(expected))
    if min_expected < MIN_EXPECTED_COUNT:
        table = [[baseline_successes, baseline_trials - baseline_successes],
                 [candidate_successes, candidate_trials - candidate_successes]]
        p_value = float(stats.fisher_exact(table, alternative="two-sided").pvalue)
        return ProportionComparison(**common, method="fisher", z=math.nan, p_value=min(p_value, 1.0),
                                    min_expected_count=min_expected)
    pooled = successes / total
    se = math.sqrt(pooled * (1 - pooled) * (1 / baseline_trials + 1 / candidate_trials))
    z = (candidate_successes / candidate_trials - baseline_successes / baseline_trials) / se
    return ProportionComparison(**common, method="z", z=z, p_value=float(2 * stats.norm.sf(abs(z))),
                                min_expected_count=min_expected)


@dataclass(frozen=True)
class Interval:
    """A closed interval of proportions; NaN bounds when there were no trials (contains nothing)."""

    low: float
    high: float
    confidence: float
    method: str

    def contains(self, value: float) -> bool:
        # A tiny tolerance so that a bound computed in floating point still contains itself.
        eps = 1e-12
        return all(map(math.isfinite, (self.low, self.high, value))) and self.low - eps <= value <= self.high + eps


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence {confidence} must be in (0, 1)")
    return float(stats.norm.isf((1 - confidence) / 2))


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> Interval:
    """Wilson score interval of successes/trials: the proportions p a two-sided score test at
    1 − confidence would not reject. Good coverage even for few trials and p near 0 or 1."""
    z = _z(confidence)
    _check_count(successes, trials, "wilson_interval")
    if trials == 0:
        return Interval(math.nan, math.nan, confidence, "wilson")
    n, x = trials, successes
    centre = (x + z * z / 2) / (n + z * z)
    half = z / (n + z * z) * math.sqrt(x * (n - x) / n + z * z / 4)
    return Interval(max(0.0, centre - half), min(1.0, centre + half), confidence, "wilson")


def clopper_pearson_interval(successes: int, trials: int, confidence: float = 0.95) -> Interval:
    """Exact (Clopper-Pearson) interval: inverts two one-sided binomial tests at (1 − confidence)/2;
    coverage is at least `confidence` for every p, at the price of width."""
    _z(confidence)
    _check_count(successes, trials, "clopper_pearson_interval")
    if trials == 0:
        return Interval(math.nan, math.nan, confidence, "exact")
    a, x, n = 1 - confidence, successes, trials
    low = 0.0 if x == 0 else float(stats.beta.ppf(a / 2, x, n - x + 1))
    high = 1.0 if x == n else float(stats.beta.ppf(1 - a / 2, x + 1, n - x))
    return Interval(low, high, confidence, "exact")


@dataclass(frozen=True)
class Agreement:
    """Whether an online proportion is consistent with its offline value (see `agreement_with_offline`)."""

    offline: float
    online_successes: int
    online_trials: int
    interval: Interval  # around `offline`, for `online_trials` online trials

    @property
    def online(self) -> float:
        return _ratio(self.online_successes, self.online_trials)

    @property
    def agrees(self) -> bool:
        """False also when undecidable (no online trials, non-finite offline value)."""
        return self.interval.contains(self.online)

    @property
    def direction(self) -> Literal["below", "within", "above", "unknown"]:
        if not (math.isfinite(self.online) and math.isfinite(self.interval.low)):
            return "unknown"
        return "within" if self.agrees else ("below" if self.online < self.interval.low else "above")

    def to_dict(self) -> dict:
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
    z = _z(confidence)
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
    the finite-population factor sqrt((N − n)/(N − 1)): the check is conservative and, with no
    training/serving skew, fails about 1 − confidence of the time or less. On live traffic (new
    transactions), offline and online are independent samples; then also consider
    `compare_proportions` on the two counts.
    """
    _check_count(online_successes, online_trials, "online")
    return Agreement(offline=float(offline), online_successes=int(online_successes),
                     online_trials=int(online_trials),
                     interval=offline_acceptance_interval(offline, online_trials, confidence, method))


# --------------------------------------------------------------------------------------------
# Sample size and evidence
# --------------------------------------------------------------------------------------------


def two_proportion_sample_size(
    p_baseline: float, p_candidate: float, *, alpha: float = 0.05, power: float = 0.8, ratio: float = 1.0,
) -> tuple[int, int]:
    """(n_candidate, n_baseline) trials for a two-sided pooled two-proportion z-test at `alpha`
    to detect p_candidate ≠ p_baseline with probability `power`, with n_baseline = ratio·n_candidate.

    n_c = [z_{1−α/2} sqrt(p̄ q̄ (1 + 1/r)) + z_{1−β} sqrt(p_b q_b / r + p_c q_c)]² / (p_b − p_c)²,
    p̄ = (r p_b + p_c) / (1 + r): pooled variance under H0, unpooled under H1, no continuity
    correction (the formula of R's power.prop.test for r = 1). Both rounded up.
    """
    for name, p in (("p_baseline", p_baseline), ("p_candidate", p_candidate)):
        if not (math.isfinite(p) and 0 <= p <= 1):
            raise ValueError(f"{name} {p} must be a proportion")
    if p_baseline == p_candidate:
        raise ValueError("p_baseline and p_candidate must differ")
    if not (0 < alpha < 1 and 0 < power < 1 and ratio > 0):
        raise ValueError("need 0 < alpha < 1, 0 < power < 1, ratio > 0")
    z_a, z_b = stats.norm.isf(alpha / 2), stats.norm.isf(1 - power)
    pooled = (ratio * p_baseline + p_candidate) / (1 + ratio)
    numerator = (z_a * math.sqrt(pooled * (1 - pooled) * (1 + 1 / ratio))
                 + z_b * math.sqrt(p_baseline * (1 - p_baseline) / ratio + p_candidate * (1 - p_candidate)))
    n_candidate = numerator ** 2 / (p_baseline - p_candidate) ** 2
    # Round away float noise before ceil (76.000000001 is 76).
    return math.ceil(round(n_candidate, 9)), math.ceil(round(n_candidate * ratio, 9))


@dataclass(frozen=True)
class EvidencePlan:
    """How much online evidence the recall comparison needs (see `plan_recall_evidence`)."""

    baseline_recall: float
    candidate_recall: float  # the alternative the test must detect
    alpha: float
    power: float
    canary_share: float
    fraud_rate: float
    candidate_frauds_needed: int
    baseline_frauds_needed: int
    requests_needed: int | None  # None while the fraud rate is unknown (no fraud seen yet)


def plan_recall_evidence(
    baseline_recall: float, detectable_difference: float, *, fraud_rate: float, canary_share: float,
    alpha: float = 0.05, power: float = 0.8,
) -> EvidencePlan:
    """Frauds each version must see, and requests in total, to detect a recall drop of
    `detectable_difference` (absolute) from `baseline_recall` with the given power.

    The canary sees `canary_share` of requests and a fraction `fraud_rate` of those are frauds, so
    it meets `candidate_frauds_needed` after that many / (fraud_rate · canary_share) requests (the
    baseline, with ratio (1 − share)/share, needs the same number). If a drop is impossible
    (baseline_recall − difference < 0) the plan targets an increase of the same size instead.
    """
    if not (0 < canary_share < 1):
        raise ValueError(f"canary_share {canary_share} must be in (0, 1)")
    if not (math.isfinite(detectable_difference) and 0 < detectable_difference < 1):
        raise ValueError(f"detectable_difference {detectable_difference} must be in (0, 1)")
    candidate_recall = baseline_recall - detectable_difference
    if candidate_recall < 0:
        candidate_recall = baseline_recall + detectable_difference
    ratio = (1 - canary_share) / canary_share
    n_candidate, n_baseline = two_proportion_sample_size(baseline_recall, candidate_recall,
                                                         alpha=alpha, power=power, ratio=ratio)
    requests = None
    if math.isfinite(fraud_rate) and 0 < fraud_rate <= 1:
        requests = max(math.ceil(n_candidate / (fraud_rate * canary_share)),
                       math.ceil(n_baseline / (fraud_rate * (1 - canary_share))))
    return EvidencePlan(baseline_recall=baseline_recall, candidate_recall=candidate_recall, alpha=alpha,
                        power=power, canary_share=canary_share, fraud_rate=fraud_rate,
                        candidate_frauds_needed=n_candidate, baseline_frauds_needed=n_baseline,
                        requests_needed=requests)


@dataclass(frozen=True)
class EvidenceStatus:
    plan: EvidencePlan
    candidate_frauds: int
    baseline_frauds: int
    requests: int

    @property
    def sufficient(self) -> bool:
        return (self.candidate_frauds >= self.plan.candidate_frauds_needed
                and self.baseline_frauds >= self.plan.baseline_frauds_needed)

    @property
    def requests_remaining(self) -> int | None:
        """Estimated further requests until both versions have seen enough frauds (0 when
        sufficient; None while the fraud rate is unknown)."""
        if self.sufficient:
            return 0
        p = self.plan
        if p.requests_needed is None:
            return None
        short_c = max(0, p.candidate_frauds_needed - self.candidate_frauds)
        short_b = max(0, p.baseline_frauds_needed - self.baseline_frauds)
        return max(math.ceil(short_c / (p.fraud_rate * p.canary_share)),
                   math.ceil(short_b / (p.fraud_rate * (1 - p.canary_share))))

    @property
    def message(self) -> str:
        p = self.plan
        if self.sufficient:
            return (f"sufficient evidence: canary saw {self.candidate_frauds} frauds (≥ {p.candidate_frauds_needed}), "
                    f"baseline {self.baseline_frauds} (≥ {p.baseline_frauds_needed})")
        remaining = ("unknown (no fraud seen yet)" if self.requests_remaining is None
                     else f"≈ {self.requests_remaining:,}")
        return (f"insufficient evidence: canary saw {self.candidate_frauds}/{p.candidate_frauds_needed} frauds, "
                f"baseline {self.baseline_frauds}/{p.baseline_frauds_needed}; requests still needed {remaining}")

    def to_dict(self) -> dict:
        return {**asdict(self), "sufficient": self.sufficient, "requests_remaining": self.requests_remaining,
                "message": self.message}


def evidence_status(plan: EvidencePlan, *, candidate_frauds: int, baseline_frauds: int, requests: int) -> EvidenceStatus:
    """Compare the frauds each version has seen so far with `plan`."""
    return EvidenceStatus(plan=plan, candidate_frauds=int(candidate_frauds), baseline_frauds=int(baseline_frauds),
                          requests=int(requests))


# --------------------------------------------------------------------------------------------
# Recommendation
# --------------------------------------------------------------------------------------------


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
        counts = [metrics.get(k) for k in ("tp", "fp", "fn", "tn")]
        if not _finite(flag_rate) and all(_finite(c) for c in counts):
            tp, fp, fn, tn = counts
            flag_rate = _ratio(tp + fp, tp + fp + fn + tn)
        return cls(precision=float(metrics.get("precision", math.nan)),
                   recall=float(metrics.get("recall", math.nan)), flag_rate=float(flag_rate))


@dataclass(frozen=True)
class CanaryPolicy:
    """Objectives and thresholds for `recommend`. The alert rules in manifests/monitoring use the
    same numbers (error rate, p99, share ± tolerance, flag-rate ratio): change both together."""

    #: `canaryTrafficPercent` the canary was deployed with.
    target_canary_percent: float = 20.0
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
    #: Level and kind of the online-vs-offline acceptance intervals.
    confidence: float = 0.95
    interval_method: IntervalMethod = "wilson"
    #: The canary may lose at most this much precision (absolute) vs the baseline, when significant.
    max_precision_drop: float = 0.05
    #: Flag rates may differ by at most this factor either way, when significant.
    max_flag_rate_ratio: float = 2.0
    #: Failed requests without a model_version count against the canary (worst case: the
    #: baseline has a rolled-out track record, the canary does not).
    unattributed_errors_against_canary: bool = True

    def __post_init__(self) -> None:
        values = {k: v for k, v in asdict(self).items() if isinstance(v, float)}
        if not all(map(math.isfinite, values.values())):
            raise ValueError(f"policy values must be finite: {values}")
        if not (0 < self.target_canary_percent < 100 and 0 <= self.canary_percent_tolerance < 100):
            raise ValueError("target_canary_percent must be in (0, 100) and the tolerance in [0, 100)")
        if not (0 < self.alpha < 1 and 0 < self.power < 1 and 0 < self.confidence < 1):
            raise ValueError("alpha, power and confidence must be in (0, 1)")
        if not (0 <= self.max_error_rate < 1 and self.max_p99_latency_ms > 0 and self.max_flag_rate_ratio >= 1):
            raise ValueError("need 0 ≤ max_error_rate < 1, max_p99_latency_ms > 0, max_flag_rate_ratio ≥ 1")


@dataclass(frozen=True)
class Check:
    """One reason: `status` pass / fail / insufficient, and what a failure demands."""

    rule: str
    status: CheckStatus
    on_failure: Action  # rollback or hold; insufficient always means hold
    detail: str

    @property
    def passed(self) -> bool:
        return self.status == "pass"


@dataclass(frozen=True)
class Recommendation:
    action: Action
    baseline_version: str
    canary_version: str
    checks: tuple[Check, ...]
    evidence: EvidenceStatus | None = None
    comparisons: dict[str, dict] = field(default_factory=dict)

    @property
    def reasons(self) -> list[str]:
        """Every check as one line, failures first."""
        order = {"fail": 0, "insufficient": 1, "pass": 2}
        return [f"{c.status.upper()} {c.rule}: {c.detail}" + (f" → {c.on_failure}" if c.status == "fail" else "")
                for c in sorted(self.checks, key=lambda c: order[c.status])]

    def to_dict(self) -> dict:
        return {"action": self.action, "baseline_version": self.baseline_version,
                "canary_version": self.canary_version, "reasons": self.reasons,
                "checks": [asdict(c) for c in self.checks],
                "evidence": self.evidence.to_dict() if self.evidence else None,
                "comparisons": self.comparisons}


def _finite(*values: object) -> bool:
    return all(isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(v) for v in values)


def _empty(version: str) -> VersionMetrics:
    return VersionMetrics(version, 0, 0, 0, 0.0, math.nan, math.nan, math.nan, None)


def _fmt(x: float, digits: int = 4) -> str:
    return f"{x:.{digits}g}" if _finite(x) else "n/a"


def recommend(
    online: Mapping[str, VersionMetrics],
    offline: Mapping[str, OfflineMetrics],
    *,
    baseline_version: str,
    canary_version: str,
    policy: CanaryPolicy = CanaryPolicy(),
) -> Recommendation:
    """Promote, hold or roll back the canary, with every reason.

    Rollback when the canary's error rate is above the objective, its recall is significantly
    below the baseline's or below its own offline interval, or its p99 breaks the objective
    while the baseline's does not. Hold on any other failed check (baseline unhealthy, traffic
    share off target, precision/flag rate out of line, unattributed answers) and whenever
    evidence is insufficient (too few frauds for the planned power, missing or non-finite
    metrics). Promote only when every check passes.

    Args:
        online: `version_metrics` output (or metrics built from Prometheus counters).
        offline: holdout metrics per version; a version missing here cannot be promoted.
        baseline_version: the rolled-out version (v1).
        canary_version: the version under test (v2).
    """
    if baseline_version == canary_version:
        raise ValueError("baseline_version and canary_version must differ")
    base = online.get(baseline_version, _empty(baseline_version))
    canary = online.get(canary_version, _empty(canary_version))
    unattributed = online.get(UNATTRIBUTED, _empty(UNATTRIBUTED))
    nan_offline = OfflineMetrics(math.nan, math.nan)
    off_base = offline.get(baseline_version, nan_offline)
    off_canary = offline.get(canary_version, nan_offline)
    checks: list[Check] = []
    comparisons: dict[str, dict] = {}

    def add(rule: str, status: CheckStatus, on_failure: Action, detail: str) -> None:
        checks.append(Check(rule, status, on_failure, detail))

    # Health: errors and latency.
    errors, requests = canary.errors, canary.requests
    note = ""
    if policy.unattributed_errors_against_canary and unattributed.errors:
        errors, requests = errors + unattributed.errors, requests + unattributed.errors
        note = f" (incl. {unattributed.errors} unattributed failures)"
    canary_error_rate = _ratio(errors, requests)
    for name, rate, n, action in (("canary", canary_error_rate, requests, ROLLBACK),
                                  ("baseline", base.error_rate, base.requests, HOLD)):
        detail = f"error rate {_fmt(rate)} of {n} requests, objective ≤ {policy.max_error_rate}"
        detail += note if name == "canary" else ""
        status: CheckStatus = ("insufficient" if not _finite(rate)
                               else "pass" if rate <= policy.max_error_rate else "fail")
        add(f"{name}.error_rate", status, action, detail)

    base_p99_ok = _finite(base.latency_p99_ms) and base.latency_p99_ms <= policy.max_p99_latency_ms
    for name, m, action in (("canary", canary, ROLLBACK if base_p99_ok else HOLD), ("baseline", base, HOLD)):
        p99 = m.latency_p99_ms
        status = ("insufficient" if not _finite(p99) else "pass" if p99 <= policy.max_p99_latency_ms else "fail")
        add(f"{name}.latency_p99", status, action,
            f"p99 {_fmt(p99)} ms, objective ≤ {policy.max_p99_latency_ms} ms")

    # Traffic: share of the canary, and answers nobody can attribute.
    share_pct = 100 * canary.traffic_share
    low = policy.target_canary_percent - policy.canary_percent_tolerance
    high = policy.target_canary_percent + policy.canary_percent_tolerance
    status = ("insufficient" if not _finite(share_pct) or base.requests + canary.requests == 0
              else "pass" if low <= share_pct <= high else "fail")
    add("traffic.canary_share", status, HOLD,
        f"canary share {_fmt(share_pct)} %, target {policy.target_canary_percent} ± {policy.canary_percent_tolerance} %")
    others = {v: m.requests for v, m in online.items() if v not in (baseline_version, canary_version, UNATTRIBUTED)}
    add("traffic.attribution", "pass" if unattributed.answered == 0 and not any(others.values()) else "fail", HOLD,
        f"{unattributed.answered} answered rows without model_version; rows of other versions: {others or 'none'}")

    # Online vs offline, per version: recall (frauds seen), precision (flags), flag rate (answers).
    def agreement(rule: str, successes: int | None, trials: int | None, offline_value: float,
                  action_below: Action) -> None:
        if successes is None or trials is None:
            add(rule, "insufficient", HOLD, "labels unknown")
            return
        if not _finite(offline_value):
            add(rule, "insufficient", HOLD, "offline value missing or non-finite")
            return
        a = agreement_with_offline(successes, trials, offline_value, policy.confidence, policy.interval_method)
        comparisons[rule] = a.to_dict()
        detail = (f"online {_fmt(a.online)} ({successes}/{trials}), offline {_fmt(offline_value)}, "
                  f"{policy.confidence:.0%} acceptance interval [{_fmt(a.interval.low)}, {_fmt(a.interval.high)}]")
        if a.direction == "unknown":
            add(rule, "insufficient", HOLD, detail)
        else:
            add(rule, "pass" if a.agrees else "fail", action_below if a.direction == "below" else HOLD, detail)

    for name, m, off, recall_action in (("canary", canary, off_canary, ROLLBACK), ("baseline", base, off_base, HOLD)):
        c = m.confusion
        agreement(f"{name}.recall_vs_offline", c and c.tp, c and c.frauds, off.recall, recall_action)
        agreement(f"{name}.precision_vs_offline", c and c.tp, c and c.tp + c.fp, off.precision, HOLD)
        if _finite(off.flag_rate):
            agreement(f"{name}.flag_rate_vs_offline", m.flagged, m.answered, off.flag_rate, HOLD)

    # Canary vs baseline.
    evidence = None
    cc, bc = canary.confusion, base.confusion
    baseline_recall = off_base.recall if _finite(off_base.recall) else base.recall
    fraud_rate = _ratio((cc.frauds if cc else 0) + (bc.frauds if bc else 0), canary.answered + base.answered)
    try:
        plan = plan_recall_evidence(baseline_recall, policy.detectable_recall_difference,
                                    fraud_rate=fraud_rate, canary_share=policy.target_canary_percent / 100,
                                    alpha=policy.alpha, power=policy.power)
    except ValueError as exc:
        add("evidence.sample_size", "insufficient", HOLD, f"cannot plan the sample size: {exc}")
    else:
        if cc is None or bc is None:
            add("evidence.sample_size", "insufficient", HOLD, "labels unknown")
        else:
            evidence = evidence_status(plan, candidate_frauds=cc.frauds, baseline_frauds=bc.frauds,
                                       requests=canary.requests + base.requests + unattributed.requests)
            add("evidence.sample_size", "pass" if evidence.sufficient else "insufficient", HOLD,
                evidence.message + f" (to detect a recall drop of {policy.detectable_recall_difference} "
                f"at alpha {policy.alpha}, power {policy.power})")

    if cc is None or bc is None:
        add("canary.recall_vs_baseline", "insufficient", HOLD, "labels unknown")
        add("canary.precision_vs_baseline", "insufficient", HOLD, "labels unknown")
    else:
        t = compare_proportions(bc.tp, bc.frauds, cc.tp, cc.frauds, alpha=policy.alpha)
        comparisons["canary.recall_vs_baseline"] = t.to_dict()
        detail = (f"recall canary {_fmt(t.candidate_proportion)} ({cc.tp}/{cc.frauds}) vs baseline "
                  f"{_fmt(t.baseline_proportion)} ({bc.tp}/{bc.frauds}), {t.method} p={_fmt(t.p_value, 3)}")
        if t.method == "undefined":
            add("canary.recall_vs_baseline", "insufficient", HOLD, detail)
        elif t.significant and t.difference < 0:
            add("canary.recall_vs_baseline", "fail", ROLLBACK, detail + ": significantly worse")
        elif t.significant or (evidence is not None and evidence.sufficient):
            add("canary.recall_vs_baseline", "pass", ROLLBACK,
                detail + (": significantly better" if t.significant else ": no significant difference at planned power"))
        else:
            add("canary.recall_vs_baseline", "insufficient", ROLLBACK,
                detail + ": not significant and too few frauds to rule out the detectable drop")

        t = compare_proportions(bc.tp, bc.tp + bc.fp, cc.tp, cc.tp + cc.fp, alpha=policy.alpha)
        comparisons["canary.precision_vs_baseline"] = t.to_dict()
        detail = (f"precision canary {_fmt(t.candidate_proportion)} vs baseline {_fmt(t.baseline_proportion)}, "
                  f"{t.method} p={_fmt(t.p_value, 3)}, allowed drop {policy.max_precision_drop}")
        if t.method == "undefined":
            add("canary.precision_vs_baseline", "insufficient", HOLD, detail)
        else:
            worse = t.significant and -t.difference > policy.max_precision_drop
            add("canary.precision_vs_baseline", "fail" if worse else "pass", HOLD, detail)

    t = compare_proportions(base.flagged, base.answered, canary.flagged, canary.answered, alpha=policy.alpha)
    comparisons["canary.flag_rate_vs_baseline"] = t.to_dict()
    p_c, p_b = t.candidate_proportion, t.baseline_proportion
    # inf when only the baseline flags nothing; NaN when neither flags (equal: fine) or no data.
    ratio = p_c / p_b if p_b else (math.inf if p_c else math.nan)
    detail = (f"flag rate canary {_fmt(t.candidate_proportion)} vs baseline {_fmt(t.baseline_proportion)} "
              f"(ratio {_fmt(ratio, 3)}), {t.method} p={_fmt(t.p_value, 3)}, allowed ratio ×{policy.max_flag_rate_ratio}")
    if t.method == "undefined":
        add("canary.flag_rate_vs_baseline", "insufficient", HOLD, detail)
    else:
        r = policy.max_flag_rate_ratio
        diverged = t.significant and not (1 / r <= ratio <= r)
        add("canary.flag_rate_vs_baseline", "fail" if diverged else "pass", HOLD, detail)

    if any(c.status == "fail" and c.on_failure == ROLLBACK for c in checks):
        action: Action = ROLLBACK
    elif all(c.passed for c in checks):
        action = PROMOTE
    else:
        action = HOLD
    return Recommendation(action=action, baseline_version=baseline_version, canary_version=canary_version,
                          checks=tuple(checks), evidence=evidence, comparisons=comparisons)


__all__: Sequence[str] = (
    "UNATTRIBUTED", "PROMOTE", "HOLD", "ROLLBACK", "Confusion", "VersionMetrics", "version_metrics",
    "ProportionComparison", "compare_proportions", "Interval", "wilson_interval", "clopper_pearson_interval",
    "Agreement", "offline_acceptance_interval", "agreement_with_offline", "two_proportion_sample_size",
    "EvidencePlan", "plan_recall_evidence", "EvidenceStatus", "evidence_status", "OfflineMetrics",
    "CanaryPolicy", "Check", "Recommendation", "recommend",
)
