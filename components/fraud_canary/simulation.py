"""The rollout policy's operating characteristics, measured: whole rollouts through the real `judge`.

DESIGN decision 18, issue 17. The model of one window of traffic (no servers):

- `rows` transactions (default 49,552: the demo's window, a quarter of the ≈198,000-row holdout).
  The canary's requests are Binomial(rows, percent / 100), the baseline takes the rest; each
  version's requests fail independently at its error rate.
- Each answered row is one of 8 joint cells (fraud × baseline flags × canary flags), multinomial
  with the scenario's cell probabilities. The cells of `GOOD` are the README's 1,000,000-row
  holdout (v1 baseline, v2 candidate, per 198,000 rows): of 337 frauds both caught 117, v2 only
  162, v1 only 5, neither 53; of the legitimate rows both flag 25, v1 only 52, v2 only 20.
- Shadow scoring: `shadow` of each version's answered rows is also scored by the other version
  (kept only when that call answers too), a multivariate-hypergeometric subset of the version's
  cells: the paired tables (`PairedOutcomes`) come from the same rows as the online counts.
- Latency per answered row is lognormal (median 4 ms, sigma 0.5, the canary's × its scale), counted
  into `LATENCY_BOUNDS_MS` (a multinomial over the bins); p50/p95/p99 are order statistics drawn
  inside their bins (Beta ranks of the truncated lognormal), so they agree with the histogram.
- `labelled`: labels with every window (the demo's replay: confusion counts and the paired
  frauds/legit tables); `live`: no labels (the transformer's counters and shadow pairs only).
- The offline metrics given to the judge are the cells' own holdout values per version, unless the
  scenario states what the canary's holdout claimed.
- The shadow pairs' scores (`ScoredPairs`, optional): without them no window carries the
  `PairedScores` the label-free promotion rule reads, so in the `live` regime nothing can promote.
  Given them, each window's pairs are also counted by decision cell and score bucket: as many
  pairs as its decision table, drawn (with their calibrations) from a real labelled holdout scored
  by both exported models (`fraud_control.rollout.label_free_coverage`, which counts them as the
  transformer's counters do). They are drawn independently of the cell model's decision table:
  the table and the scores are two samples of the same kind of holdout (the same law in
  expectation, up to the difference between the README's run and the scored one), not the same
  rows. That is enough for the promotion rule, which reads only the scores' table (and both
  calibrations); the rollback tests read only the decision table and the counts. What is lost is
  their correlation within a window (a window with more discordant pairs than usual also has more
  discordant scored rows), which matters only where both could fire at once: the `good` canary's
  discordant pairs (0.12 % of rows) sit far below `paired.disagreement`'s null.

A rollout is the controller's loop (`fraud_control.rollout.controller.Controller.run_step/run`) around the
real `judge`: one `Ledger` for the whole rollout, per step windows until the verdict is not hold
(`holds` reset per step); advance moves on, promote and rollback end it, inconclusive pauses it.
"""
from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
from fraud.score_profile import ScoreProfile
from scipy import stats
from scipy.special import ndtr, ndtri

from fraud_canary.metrics import LATENCY_BOUNDS_MS, Confusion, VersionMetrics
from fraud_canary.paired import Discordant, PairedOutcomes
from fraud_canary.paired_scores import PairedScores
from fraud_canary.policy import OfflineMetrics
from fraud_canary.progressive import (
    ADVANCE,
    HOLD,
    INCONCLUSIVE,
    PROMOTE,
    ROLLBACK,
    ROLLBACK_RULES,
    Ledger,
    Look,
    Observation,
    RolloutPolicy,
    judge,
)

Regime = Literal["labelled", "live"]
LABELLED: Final = "labelled"
LIVE: Final = "live"
REGIMES: tuple[Regime, ...] = (LABELLED, LIVE)
OUTCOMES: tuple[str, ...] = (PROMOTE, ROLLBACK, INCONCLUSIVE)
BASELINE, CANARY = "v1", "v2"
#: Rows of the holdout the cells are counted on (the README's 1,000,000-row run).
HOLDOUT_ROWS = 198_000
#: The demo's window: a quarter of the holdout.
DEMO_WINDOW_ROWS = 49_552
#: The transformer's `DEFAULT_SHADOW_PERCENT` / 100 (fraud_serving sits above this layer; a test
#: checks they agree).
DEFAULT_SHADOW = 0.10
LATENCY_MEDIAN_MS = 4.0
LATENCY_SIGMA = 0.5
#: Cell index = 4·fraud + 2·baseline flags + canary flags; these mark the cells of frauds and of each version's flags.
FRAUD_CELLS = np.arange(8) >= 4
BASELINE_FLAGS = (np.arange(8) & 2) > 0
CANARY_FLAGS = (np.arange(8) & 1) > 0


def cells(frauds: tuple[float, float, float, float], legit: tuple[float, float, float],
          rows: int = HOLDOUT_ROWS) -> tuple[float, ...]:
    """The 8 cell probabilities from holdout counts.

    Args:
        frauds: frauds caught by (both, the canary only, the baseline only, neither).
        legit: legitimate rows flagged by (both, the canary only, the baseline only); the rest neither.
        rows: the holdout's rows.
    """
    both, canary_only, baseline_only, neither = frauds
    legit_both, legit_canary, legit_baseline = legit
    legit_neither = rows - sum(frauds) - sum(legit)
    counts = (legit_neither, legit_canary, legit_baseline, legit_both, neither, canary_only, baseline_only, both)
    if min(counts) < 0:
        raise ValueError(f"cell counts must be non-negative: {counts}")
    return tuple(c / rows for c in counts)


def holdout_metrics(p: tuple[float, ...] | np.ndarray, flags: np.ndarray) -> OfflineMetrics:
    """Precision, recall and flag rate the cells imply for the version whose flags are `flags`."""
    p = np.asarray(p, dtype=float)
    tp, flagged, frauds = p[FRAUD_CELLS & flags].sum(), p[flags].sum(), p[FRAUD_CELLS].sum()
    return OfflineMetrics(precision=float(tp / flagged), recall=float(tp / frauds), flag_rate=float(flagged))


@dataclass(frozen=True)
class Scenario:
    """A canary against the baseline: how they decide (cells), how the canary fails and how slow it is."""

    name: str
    description: str
    cells: tuple[float, ...]
    canary_error_rate: float = 0.0
    baseline_error_rate: float = 0.0
    canary_latency_scale: float = 1.0
    #: The canary's holdout metrics as given to the judge; None: what the cells imply.
    claimed: OfflineMetrics | None = None

    def __post_init__(self) -> None:
        if len(self.cells) != 8 or min(self.cells) < 0 or not math.isclose(sum(self.cells), 1.0):
            raise ValueError(f"{self.name}: need 8 non-negative cell probabilities summing to 1")

    def offline(self) -> dict[str, OfflineMetrics]:
        canary = self.claimed or holdout_metrics(self.cells, CANARY_FLAGS)
        return {BASELINE: holdout_metrics(self.cells, BASELINE_FLAGS), CANARY: canary}


_V1_CAUGHT, _V1_MISSED, _V1_FALSE_ALARMS = 122, 215, 77
_RECALL_DROP = 0.10 * (_V1_CAUGHT + _V1_MISSED)  # frauds the baseline catches and the canary misses
_AS_BASELINE = cells((_V1_CAUGHT, 0, 0, _V1_MISSED), (_V1_FALSE_ALARMS, 0, 0))
_V1 = holdout_metrics(_AS_BASELINE, BASELINE_FLAGS)
GOOD = Scenario("good", "the demo's v2 against v1 (README holdout cells)", cells((117, 162, 5, 53), (25, 20, 52)))
EQUAL = Scenario("equal", "decides exactly as the baseline", _AS_BASELINE)
RECALL_MINUS_010 = Scenario(
    "recall_minus_0.10", "misses frauds the baseline catches: recall 0.10 lower, its holdout claiming the baseline's",
    cells((_V1_CAUGHT - _RECALL_DROP, 0, _RECALL_DROP, _V1_MISSED), (_V1_FALSE_ALARMS, 0, 0)), claimed=_V1)
FLAG_EVERYTHING = Scenario("flag_everything", "flags every row (its holdout metrics are what the cells imply)",
                           cells((_V1_CAUGHT, _V1_MISSED, 0, 0),
                                 (_V1_FALSE_ALARMS, HOLDOUT_ROWS - _V1_CAUGHT - _V1_MISSED - _V1_FALSE_ALARMS, 0)))
ERRORS_2PCT = Scenario("errors_2pct", "2 % of its requests fail, otherwise the baseline", _AS_BASELINE,
                       canary_error_rate=0.02)
LATENCY_DOUBLED = Scenario("latency_doubled", "every latency × 2, otherwise the baseline", _AS_BASELINE,
                           canary_latency_scale=2.0)
SCENARIOS: Mapping[str, Scenario] = {s.name: s for s in (GOOD, EQUAL, RECALL_MINUS_010, FLAG_EVERYTHING, ERRORS_2PCT,
                                                         LATENCY_DOUBLED)}


@dataclass(frozen=True)
class ScoredPairs:
    """Where the shadow pairs' scores come from: each version's calibration (`profiles`, by
    `BASELINE` and `CANARY`) and `draw(rng, pairs)`, the `PairedScores` of `pairs` shadow pairs
    (as the transformer's counters count them, baseline `BASELINE`, canary `CANARY`)."""

    profiles: Mapping[str, ScoreProfile]
    draw: Callable[[np.random.Generator, int], PairedScores]

    def __post_init__(self) -> None:
        missing = [v for v in (BASELINE, CANARY) if v not in self.profiles]
        if missing:
            raise ValueError(f"scored pairs need a score profile for {', '.join(missing)}")

    def window(self, rng: np.random.Generator, pairs: int) -> PairedScores:
        """`draw(rng, pairs)`, checked: the window's versions and number of pairs."""
        scores = self.draw(rng, pairs)
        if (scores.baseline_version, scores.canary_version) != (BASELINE, CANARY) or scores.pairs != pairs:
            raise ValueError(f"drew {scores.pairs} pairs of {scores.baseline_version} → {scores.canary_version}, "
                             f"need {pairs} of {BASELINE} → {CANARY}")
        return scores


def _quantile(rng: np.random.Generator, counts: np.ndarray, cdf: np.ndarray, q: float, median: float) -> float:
    """The q-quantile of the answered rows' latencies, given how many fell in each bin: the rank's
    order statistic within its bin (Beta-distributed on the bin's share of the lognormal)."""
    n = int(counts.sum())
    if n == 0:
        return math.nan
    rank = max(1, math.ceil(q * n))
    cumulative = np.cumsum(counts)
    j = int(np.searchsorted(cumulative, rank))
    within = rank - (int(cumulative[j - 1]) if j else 0)
    u = rng.beta(within, int(counts[j]) - within + 1)
    level = float(np.clip(cdf[j] + u * (cdf[j + 1] - cdf[j]), 1e-12, 1 - 1e-12))
    return median * math.exp(LATENCY_SIGMA * float(ndtri(level)))


def draw_latency(rng: np.random.Generator, answered: int, scale: float = 1.0
                 ) -> tuple[tuple[tuple[float, int], ...], float, float, float]:
    """Cumulative latency histogram over `LATENCY_BOUNDS_MS`, and p50, p95, p99 (ms), of `answered` rows."""
    median = LATENCY_MEDIAN_MS * scale
    inner = ndtr(np.log(np.asarray(LATENCY_BOUNDS_MS) / median) / LATENCY_SIGMA)
    cdf = np.concatenate([[0.0], inner, [1.0]])
    counts = rng.multinomial(answered, np.diff(cdf))
    histogram = tuple((bound, int(c)) for bound, c in zip(LATENCY_BOUNDS_MS, np.cumsum(counts)[:-1]))
    p50, p95, p99 = (_quantile(rng, counts, cdf, q, median) for q in (0.50, 0.95, 0.99))
    return histogram, p50, p95, p99


def _confusion(joint: np.ndarray, flags: np.ndarray) -> Confusion:
    fraud = joint[FRAUD_CELLS]
    return Confusion(tp=int(fraud[flags[FRAUD_CELLS]].sum()), fp=int(joint[~FRAUD_CELLS & flags].sum()),
                     fn=int(fraud[~flags[FRAUD_CELLS]].sum()), tn=int(joint[~FRAUD_CELLS & ~flags].sum()))


def _served(rng: np.random.Generator, version: str, requests: int, rows: int, error_rate: float, scenario: Scenario,
            scale: float, labelled: bool) -> tuple[VersionMetrics, np.ndarray]:
    """One version's window: its metrics and the joint cells of its answered rows."""
    errors = int(rng.binomial(requests, error_rate))
    joint = rng.multinomial(requests - errors, scenario.cells)
    flags = CANARY_FLAGS if version == CANARY else BASELINE_FLAGS
    histogram, p50, p95, p99 = draw_latency(rng, requests - errors, scale)
    metrics = VersionMetrics(version, requests, errors, int(joint[flags].sum()), requests / rows, p50, p95, p99,
                             _confusion(joint, flags) if labelled else None, histogram)
    return metrics, joint


def _table(y: np.ndarray, rows: np.ndarray) -> Discordant:
    def count(mask: np.ndarray) -> int:
        return int(y[rows & mask].sum())

    return Discordant(pairs=count(np.ones(8, bool)), canary_only=count(CANARY_FLAGS & ~BASELINE_FLAGS),
                      baseline_only=count(BASELINE_FLAGS & ~CANARY_FLAGS), both=count(CANARY_FLAGS & BASELINE_FLAGS))


def paired_tables(y: np.ndarray, labelled: bool) -> PairedOutcomes:
    """The paired tables of the shadow-scored rows' joint cells `y`."""
    every = np.ones(8, bool)
    if not labelled:
        return PairedOutcomes(BASELINE, CANARY, _table(y, every))
    return PairedOutcomes(BASELINE, CANARY, _table(y, every), frauds=_table(y, FRAUD_CELLS), legit=_table(y, ~FRAUD_CELLS))


def draw_window(rng: np.random.Generator, scenario: Scenario, regime: Regime, percent: int,
                rows: int = DEMO_WINDOW_ROWS, shadow: float = DEFAULT_SHADOW, scored: ScoredPairs | None = None
                ) -> Observation:
    """One window of `rows` transactions with the canary at `percent`, as the judge sees it; with
    `scored`, its shadow pairs carry scores (as many as its decision table has pairs)."""
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {REGIMES}, got {regime!r}")
    labelled = regime == LABELLED
    canary_requests = int(rng.binomial(rows, percent / 100))
    baseline, baseline_joint = _served(rng, BASELINE, rows - canary_requests, rows, scenario.baseline_error_rate,
                                       scenario, 1.0, labelled)
    canary, canary_joint = _served(rng, CANARY, canary_requests, rows, scenario.canary_error_rate, scenario,
                                   scenario.canary_latency_scale, labelled)
    paired = None
    if shadow > 0:
        # a shadow call to the other version counts as a pair only when that version answers it
        y = (rng.multivariate_hypergeometric(baseline_joint, rng.binomial(baseline.answered,
                                                                         shadow * (1 - scenario.canary_error_rate)))
             + rng.multivariate_hypergeometric(canary_joint, rng.binomial(canary.answered,
                                                                         shadow * (1 - scenario.baseline_error_rate))))
        paired = paired_tables(y, labelled)
    online, offline = {BASELINE: baseline, CANARY: canary}, scenario.offline()
    if scored is None or paired is None or paired.pairs == 0:
        return Observation(online, BASELINE, CANARY, offline, paired)
    return Observation(online, BASELINE, CANARY, offline, paired, scored.window(rng, paired.pairs), scored.profiles)


@dataclass(frozen=True)
class Rollout:
    """How one simulated rollout ended: its outcome, after how many windows, at which step, and the
    first rollback rule that rejected ("fail_closed" for a rollback by exhaustion, "" otherwise)."""

    outcome: str
    windows: int
    percent: int
    rule: str = ""


def _first_rule(look: Look) -> str:
    rejected = [rule for rule in ROLLBACK_RULES if look.ledger.tests[rule].rejected]
    return rejected[0] if rejected else "fail_closed"


def run_rollout(rng: np.random.Generator, scenario: Scenario, regime: Regime, policy: RolloutPolicy,
                rows: int = DEMO_WINDOW_ROWS, shadow: float = DEFAULT_SHADOW, scored: ScoredPairs | None = None
                ) -> Rollout:
    """One whole rollout: the controller's loop around `judge`, one window per look."""
    ledger, windows = Ledger.start(policy), 0
    for percent in policy.plan[:-1]:
        holds = 0
        while True:
            look = judge(ledger, draw_window(rng, scenario, regime, percent, rows, shadow, scored), percent=percent,
                         policy=policy, holds=holds)
            ledger, windows = look.ledger, windows + 1
            if look.action != HOLD:
                break
            holds += 1
        if look.action == ROLLBACK:
            return Rollout(ROLLBACK, windows, percent, _first_rule(look))
        if look.action in (PROMOTE, INCONCLUSIVE):
            return Rollout(look.action, windows, percent)
        if look.action != ADVANCE:
            raise AssertionError(f"unexpected verdict {look.action!r} from judge")
    raise AssertionError("judge promotes, rolls back or stops inconclusive at the plan's last step below 100")


def proportion_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson interval of k in n (the Monte Carlo error of a simulated rate)."""
    if n == 0:
        return (0.0, 1.0)
    ci = stats.binomtest(k, n).proportion_ci(confidence, method="exact")
    return float(ci.low), float(ci.high)


def _median(values: list[int]) -> float:
    return float(np.median(values)) if values else math.nan


def _number(x: float) -> float | None:
    """NaN as None, for JSON."""
    return None if math.isnan(x) else x


@dataclass(frozen=True)
class Summary:
    """Outcomes of `rollouts` simulated rollouts of one scenario in one regime."""

    scenario: str
    regime: str
    rollouts: int
    rows: int
    shadow: float
    outcomes: Mapping[str, int]
    #: Median windows to each outcome (NaN when it never happened), and to any outcome.
    median_windows: Mapping[str, float]
    median_windows_all: float
    #: The first rollback rule that rejected, per rolled-back rollout.
    first_rules: Mapping[str, int]
    seconds: float
    confidence: float = 0.95

    def share(self, outcome: str) -> float:
        return self.outcomes.get(outcome, 0) / self.rollouts

    def interval(self, outcome: str) -> tuple[float, float]:
        return proportion_interval(self.outcomes.get(outcome, 0), self.rollouts, self.confidence)

    @property
    def rollouts_per_second(self) -> float:
        return self.rollouts / self.seconds if self.seconds > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "regime": self.regime, "rollouts": self.rollouts, "rows": self.rows,
                "shadow": self.shadow,
                "outcomes": {o: {"count": self.outcomes.get(o, 0), "share": self.share(o),
                                 "interval": list(self.interval(o)),
                                 "median_windows": _number(self.median_windows[o])}
                             for o in OUTCOMES},
                "median_windows": _number(self.median_windows_all), "first_rules": dict(self.first_rules),
                "seconds": self.seconds, "rollouts_per_second": self.rollouts_per_second}


def summarize(scenario: str, regime: str, results: list[Rollout], rows: int, shadow: float, seconds: float
              ) -> Summary:
    """Shares, median windows and first rollback rules of simulated rollouts."""
    outcomes = Counter(r.outcome for r in results)
    median_windows = {o: _median([r.windows for r in results if r.outcome == o]) for o in OUTCOMES}
    rules = Counter(r.rule for r in results if r.outcome == ROLLBACK)
    return Summary(scenario, regime, len(results), rows, shadow, dict(outcomes), median_windows,
                   _median([r.windows for r in results]), dict(rules.most_common()), seconds)


def simulate(scenario: Scenario | str, regime: Regime, policy: RolloutPolicy | None = None, rollouts: int = 2000,
             rows: int = DEMO_WINDOW_ROWS, shadow: float = DEFAULT_SHADOW, seed: int = 0,
             scored: ScoredPairs | None = None) -> Summary:
    """`rollouts` independent rollouts of `scenario` (each its own random stream spawned from `seed`),
    the shadow pairs' scores drawn from `scored` when given."""
    scenario = SCENARIOS[scenario] if isinstance(scenario, str) else scenario
    if rollouts < 1 or rows < 1 or not 0 <= shadow <= 1:
        raise ValueError(f"need rollouts ≥ 1, rows ≥ 1 and 0 ≤ shadow ≤ 1, got {rollouts}, {rows}, {shadow}")
    policy = policy or RolloutPolicy()
    started = time.perf_counter()
    results = [run_rollout(np.random.default_rng(child), scenario, regime, policy, rows, shadow, scored)
               for child in np.random.SeedSequence(seed).spawn(rollouts)]
    return summarize(scenario.name, regime, results, rows, shadow, time.perf_counter() - started)


def seeds_promoted(n_seeds: int = 20, policy: RolloutPolicy | None = None, rows: int = DEMO_WINDOW_ROWS,
                   shadow: float = DEFAULT_SHADOW, seed: int = 0) -> int:
    """Of `n_seeds` good-canary rollouts with labels, seeded `seed`, `seed + 1` …, how many promote."""
    policy = policy or RolloutPolicy()
    return sum(run_rollout(np.random.default_rng(s), GOOD, LABELLED, policy, rows, shadow).outcome == PROMOTE
               for s in range(seed, seed + n_seeds))
