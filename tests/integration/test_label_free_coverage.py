"""The interval the label-free promotion rule uses keeps its promise on the tiny run's real models
(issue 17): bootstrap rollouts of the demo's shadow pairs (49,552 rows × 10 % × 3 windows) drawn
from the drifted holdout, the rule's lower bound (`own_flags_difference`: each version's calibration
on the rows it alone flags, at the rule's level) against the true Δ recall on the same drawn rows.

Chance decides each assertion; the bootstrap seed is fresh every run (shown on failure) and each
bound is set so that a rule keeping its promise fails it rarely:

* coverage ≥ nominal − 3 Monte Carlo standard errors: at a true coverage of exactly nominal
  (0.9875, 1,000 draws: 12.5 misses expected) the test fails when 24 or more draws miss,
  P ≈ 0.2 % (Binomial tail);
* with v1 as the canary its true Δ is far below −0.1 (about −0.44), so promoting it in over 5 % of
  draws would mean the rule's bound misses by more than 0.3 in those draws (on the 1M run's models
  that case is refused in every draw, its coverage 0.945-0.968: README).

The numbers on the 1,000,000-row run's models are in the README ("Label-free promotion") and in
`fraud_control.rollout.label_free_coverage`'s docstring.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from fraud_canary.progressive import Ledger, Observation, RolloutPolicy, label_free_evidence
from fraud_canary.simulation import DEMO_WINDOW_ROWS
from fraud_control.rollout.label_free_coverage import (
    RULE,
    PairedHoldout,
    lower_bounds,
    measure_coverage,
    pairs_per_rollout,
    rule_level,
    score_holdout,
)

pytestmark = pytest.mark.integration

POLICY = RolloutPolicy()
DRAWS = 1000
PAIRS = pairs_per_rollout(DEMO_WINDOW_ROWS, 0.10, 3)


@pytest.fixture(scope="module")
def scored(tiny_run):
    return score_holdout(tiny_run.windows["holdout"], {"v1": tiny_run.v1, "v2": tiny_run.v2})


def test_the_study_judges_with_the_promotion_rule_itself(scored):
    """The study's bounds and decision are `label_free_evidence`'s on the same pairs."""
    paired = PairedHoldout(scored, "v1", "v2")
    rng = np.random.default_rng()
    for _ in range(5):
        scores, _truth = paired.draw(rng, PAIRS)
        bounds = lower_bounds(scores, paired.profiles, rule_level(POLICY))
        ledger = dataclasses.replace(Ledger.start(POLICY), paired_scores=scores)
        promoted, line = label_free_evidence(ledger, Observation({}, "v1", "v2", profiles=paired.profiles), POLICY)
        assert promoted == (bounds[RULE].lower >= -POLICY.canary.detectable_recall_difference)
        assert f"at {rule_level(POLICY):.4g}" in line and f"on {PAIRS} shadow pairs" in line


def test_the_rules_lower_bound_covers_the_true_recall_difference_at_its_level(scored):
    seed = int(np.random.SeedSequence().entropy)
    coverage = measure_coverage(PairedHoldout(scored, "v1", "v2"), pairs=PAIRS, draws=DRAWS, policy=POLICY, seed=seed)
    shown = (seed, coverage.to_dict())
    assert coverage.level == 1 - 0.05 / 4
    assert coverage.judged == DRAWS, shown  # every draw holds frauds: the truth exists
    assert coverage.coverage(RULE) >= coverage.level - 3 * coverage.standard_error, shown
    assert coverage.median_width[RULE] < 0.5, shown  # an interval of [−1, 1] would not pass


def test_the_rule_refuses_to_promote_the_model_blind_to_the_new_pattern(scored):
    """v1 as the canary over v2: v1's own calibration cannot see the frauds only v2 flags (they
    score low under v1) and misses the truth; the rule judges them by v2's calibration, which flagged
    them, and refuses."""
    seed = int(np.random.SeedSequence().entropy)
    paired = PairedHoldout(scored, "v2", "v1")
    assert paired.true_delta < -2 * POLICY.canary.detectable_recall_difference
    coverage = measure_coverage(paired, pairs=PAIRS, draws=DRAWS, policy=POLICY, seed=seed)
    shown = (seed, coverage.to_dict())
    assert coverage.promote_share <= 0.05, shown
    # no coverage promise here: the rule trusts the canary's calibration on its own flags, and v1's
    # precision fell under drift (its gains are over-counted; on the 1M run's holdout the rule's
    # bound covered 0.953 at 148,656 pairs), but its loss is far beyond the margin: refused anyway
    # the known failure, seen: v1's own calibration puts its bound above the truth
    assert coverage.median_estimate["v1"] > coverage.median_true_delta + 0.1, shown


def test_the_bench_prints_both_role_orders_for_models_given_directly(tiny_run, tmp_path, capsys):
    from fraud_rollout.cli import main

    holdout = tmp_path / "holdout.parquet"
    tiny_run.windows["holdout"].to_parquet(holdout)
    code = main(["bench", "coverage", "--baseline", str(tiny_run.v1), "--candidate", str(tiny_run.v2), "--holdout",
                 str(holdout), "--draws", "20", "--shadow", "0.1", "--mc-draws", "500"])
    out = capsys.readouterr().out
    assert code == 0, out
    rows = [line.split() for line in out.splitlines() if " over " in line and "canary over baseline" not in line]
    assert [(r[0], r[2], r[3], r[4]) for r in rows] == [("v2", "v1", "0.1", "14,866"), ("v1", "v2", "0.1", "14,866")]
    assert "20 draws per row, 500 Monte Carlo draws per lower bound" in out
