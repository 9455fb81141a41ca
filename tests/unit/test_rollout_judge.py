"""The rollout's verdict at each look (`fraud_canary.progressive.judge`), on windows built by hand."""
from __future__ import annotations

import numpy as np
import pytest
from fraud.schema import PAIRED_SCORE_BOUNDS
from fraud.score_profile import ScoreProfile, fit_score_profile
from fraud_canary.metrics import LATENCY_BOUNDS_MS, Confusion, VersionMetrics
from fraud_canary.paired import Discordant, PairedOutcomes
from fraud_canary.paired_scores import CELLS, PairedScores, own_flags_difference, recall_difference
from fraud_canary.policy import OfflineMetrics
from fraud_canary.progressive import ROLLBACK_RULES, Ledger, Observation, RolloutPolicy, judge

OFFLINE = {"v1": OfflineMetrics(precision=0.6, recall=0.4, flag_rate=0.001),
           "v2": OfflineMetrics(precision=0.85, recall=0.8, flag_rate=0.0016)}
POLICY = RolloutPolicy()


def _version(name: str, requests: int, *, errors: int = 0, flag_rate: float = 0.001, recall: float | None = None,
             slow_share: float = 0.0) -> VersionMetrics:
    answered = requests - errors
    flagged = round(answered * flag_rate)
    confusion = None
    if recall is not None:
        frauds = answered // 500
        tp = min(flagged, round(frauds * recall))
        confusion = Confusion(tp=tp, fp=flagged - tp, fn=frauds - tp, tn=answered - frauds - (flagged - tp))
    fast = round(answered * (1 - slow_share))
    histogram = tuple((b, fast if b < 25 else answered) for b in LATENCY_BOUNDS_MS)
    return VersionMetrics(name, requests, errors, flagged, 0.0, 4.0, 8.0, 10.0, confusion, histogram)


def _window(percent: int, rows: int = 40_000, *, canary: dict | None = None, paired: PairedOutcomes | None = None,
            labelled: bool = False) -> Observation:
    n_c = rows * percent // 100
    online = {"v1": _version("v1", rows - n_c, recall=0.4 if labelled else None),
              "v2": _version("v2", n_c, recall=0.8 if labelled else None, **{"flag_rate": 0.0016, **(canary or {})})}
    return Observation(online, "v1", "v2", OFFLINE, paired)


def test_a_healthy_canary_advances_without_labels_and_waits_for_labels_at_the_last_step():
    ledger = Ledger.start(POLICY)
    look = judge(ledger, _window(5), percent=5, policy=POLICY, holds=0)
    assert (look.action, look.next_percent) == ("advance", 20)
    assert look.reasons == ("no rollback test rejected and every hold check passed at 5 %: advance to 20 %",)
    looks = [judge(look.ledger, _window(50), percent=50, policy=POLICY, holds=h) for h in range(3)]
    assert [x.action for x in looks] == ["hold"] * 3
    assert looks[0].reasons[0] == "hold at 50 % (hold 1 of 3 allowed)"
    assert looks[0].reasons[1] == ("WAIT labels: no labelled frauds yet; promotion needs the paired recall test or "
                                   "labelled recall (waiting for labels)")
    last = judge(looks[-1].ledger, _window(50), percent=50, policy=POLICY, holds=3)
    assert (last.action, last.next_percent) == ("inconclusive", None)
    assert last.reasons[0] == "inconclusive after 4 windows at 50 %: paused here, waiting for a person"


def test_fail_closed_rolls_back_where_the_default_pauses():
    strict = RolloutPolicy(max_holds=0, fail_closed=True)
    look = judge(Ledger.start(strict), _window(50), percent=50, policy=strict, holds=0)
    assert (look.action, look.next_percent) == ("rollback", 0)
    assert look.reasons[0] == "no decision after 1 windows at 50 % and the policy fails closed"


def test_paired_labelled_frauds_the_canary_catches_promote():
    pairs = PairedOutcomes("v1", "v2", Discordant(4000, 30, 5, 6), frauds=Discordant(20, 14, 0, 6),
                           legit=Discordant(3980, 16, 5, 0))
    look = judge(Ledger.start(POLICY), _window(50, paired=pairs, labelled=True), percent=50, policy=POLICY, holds=0)
    assert look.action == "promote", look.reasons
    assert look.reasons[1].startswith("PASS canary.error_rate_bound: error rate ≤ ")
    assert look.reasons[2].startswith("PASS paired.recall_better: the canary catches more of the paired frauds; "
                                      "paired.recall_better: e-value ")


@pytest.mark.parametrize(("canary", "paired", "rule", "rows"), [
    ({"errors": 400}, None, "canary.error_rate", 40_000),
    ({"flag_rate": 1.0}, None, "canary.flag_rate_high", 40_000),
    # flagging nothing where the baseline flags 0.1 %: one window of 8,000 canary rows is not
    # enough (32 baseline flags, e-value ≈ 57 of 140 needed); 40,000 are
    ({"flag_rate": 0.0}, None, "canary.flag_rate_low", 200_000),
    (None, PairedOutcomes("v1", "v2", Discordant(4000, 3990, 0, 4)), "paired.disagreement", 40_000),
])
def test_each_rollback_test_rolls_back_a_broken_canary(canary, paired, rule, rows):
    look = judge(Ledger.start(POLICY), _window(20, rows, canary=canary, paired=paired), percent=20, policy=POLICY,
                 holds=0)
    assert (look.action, look.next_percent) == ("rollback", 0)
    assert look.reasons[0].startswith(f"FAIL {rule}: e-value ")


def test_a_slower_canary_is_judged_against_the_baseline_tail_seen_before():
    first = judge(Ledger.start(POLICY), _window(20), percent=20, policy=POLICY, holds=0)
    assert first.ledger.tests["canary.latency_vs_baseline"].looks == 0  # no baseline tail known yet
    slow = judge(first.ledger, _window(20, canary={"slow_share": 0.3}), percent=20, policy=POLICY, holds=0)
    assert slow.action == "rollback"
    assert slow.reasons[0].startswith("FAIL canary.latency_vs_baseline: e-value ")


def test_a_hold_check_holds_and_never_rolls_back():
    window = _window(20)
    off = Observation({"v1": window.online["v1"], "v2": _version("v2", 200)}, "v1", "v2", OFFLINE)
    look = judge(Ledger.start(POLICY), off, percent=20, policy=POLICY, holds=0)
    assert look.action == "hold"
    assert look.reasons[1].startswith("FAIL traffic.canary_share: canary share 0.6211 %, target 20 ± 5.0 % → hold")


def test_the_family_splits_alpha_and_the_policy_refuses_bad_values():
    assert POLICY.check_alpha == pytest.approx(0.05 / len(ROLLBACK_RULES))
    assert all(Ledger.start(POLICY).tests[r].alpha == POLICY.check_alpha for r in ROLLBACK_RULES)
    for kwargs, message in (({"alpha": 0.0}, "alpha must be in (0, 1), got 0.0"),
                            ({"max_consecutive_errors": 0}, "max_consecutive_errors must be a whole number ≥ 1, got 0"),
                            ({"plan": (5, 50)}, "plan must increase strictly and end at 100, got (5, 50)")):
        with pytest.raises(ValueError) as raised:
            RolloutPolicy(**kwargs)
        assert str(raised.value) == message
    with pytest.raises(ValueError, match="100 % is not a step of the plan below 100"):
        judge(Ledger.start(POLICY), _window(50), percent=100, policy=POLICY, holds=0)


def _paired_scores(scores: dict[str, np.ndarray], flags: dict[str, np.ndarray]) -> PairedScores:
    """PairedScores of rows scored and decided by both versions (the counters' buckets: ≤ bound)."""
    cells = [(flags["v2"] == c) & (flags["v1"] == b) for c, b in CELLS]
    buckets = len(PAIRED_SCORE_BOUNDS) + 1
    rows = {v: tuple(tuple(int(n) for n in np.bincount(np.searchsorted(PAIRED_SCORE_BOUNDS, scores[v][cell]),
                                                       minlength=buckets)) for cell in cells) for v in ("v1", "v2")}
    return PairedScores("v1", "v2", rows)


def _calibrated(rng, frauds: np.ndarray, separation: float) -> tuple[np.ndarray, ScoreProfile]:
    """Scores of a model that separates frauds by `separation` (log-odds), and its profile fitted on
    an independent validation sample of the same kind."""
    def draw(labels):
        return 1 / (1 + np.exp(-(rng.normal(-6, 1.5, len(labels)) + separation * labels)))
    validation = (rng.random(200_000) < 0.01).astype(int)
    return draw(frauds), fit_score_profile(validation, draw(validation), 0.5)


def test_without_labels_paired_cbpe_promotes_a_canary_no_worse():
    rng = np.random.default_rng()
    frauds = (rng.random(60_000) < 0.01).astype(int)
    v1_scores, v1_profile = _calibrated(rng, frauds, 5.0)
    v2_scores, v2_profile = _calibrated(rng, frauds, 5.5)
    flags = {"v1": v1_scores > 0.5, "v2": v2_scores > 0.5}
    pairs = _paired_scores({"v1": v1_scores, "v2": v2_scores}, flags)
    profiles = {"v1": v1_profile, "v2": v2_profile}
    window = _window(50)
    observation = Observation(window.online, "v1", "v2", OFFLINE, paired_scores=pairs, profiles=profiles)
    look = judge(Ledger.start(POLICY), observation, percent=50, policy=POLICY, holds=0)
    assert look.action == "promote", look.reasons
    assert look.reasons[2].startswith("PASS paired.recall_estimate: recall v2 − v1 on 60000 shadow pairs, no labels, "
                                      "each version's calibration on the rows it alone flags: ")
    # without v1's calibration there is no label-free promotion: it says what is missing
    alone = Observation(window.online, "v1", "v2", OFFLINE, paired_scores=pairs, profiles={"v2": v2_profile})
    waiting = judge(Ledger.start(POLICY), alone, percent=50, policy=POLICY, holds=0)
    assert waiting.action == "hold"
    assert "WAIT paired.recall_estimate: no score profile (calibration) for v1" in waiting.reasons


def test_a_canary_that_catches_what_a_blind_baseline_misses_is_promoted_without_labels():
    """The drift story: the baseline scores half the frauds (a new pattern) like legitimate rows.
    Under its calibration throughout, the canary's extra catches look like false alarms; judged by
    the calibration of the version that flagged them, they are the frauds they are."""
    rng = np.random.default_rng()
    frauds = (rng.random(60_000) < 0.01).astype(int)
    new_pattern = frauds * (rng.random(len(frauds)) < 0.5)
    v1_scores, v1_profile = _calibrated(rng, frauds - new_pattern, 6.0)
    v2_scores, v2_profile = _calibrated(rng, frauds, 6.0)
    flags = {"v1": v1_scores > 0.5, "v2": v2_scores > 0.5}
    pairs = _paired_scores({"v1": v1_scores, "v2": v2_scores}, flags)
    profiles = {"v1": v1_profile, "v2": v2_profile}
    observation = Observation(_window(50).online, "v1", "v2", OFFLINE, paired_scores=pairs, profiles=profiles)
    look = judge(Ledger.start(POLICY), observation, percent=50, policy=POLICY, holds=0)
    assert look.action == "promote", look.reasons
    true = (np.sum(flags["v2"] & ~flags["v1"] & (frauds == 1)) - np.sum(flags["v1"] & ~flags["v2"] & (frauds == 1))) \
        / frauds.sum()
    mixed = own_flags_difference(pairs, profiles, level=0.99)
    assert mixed.lower <= true and true > 0.15
    assert recall_difference(pairs, "v1", v1_profile, level=0.99).estimate < true - 0.15  # the blind calibration


def test_a_canary_blind_to_frauds_the_baseline_catches_is_not_promoted_on_its_own_calibration():
    """The canary scores half the frauds like legitimate rows: under its own calibration those look
    legitimate (its estimate says it loses little), under the baseline's they are frauds."""
    rng = np.random.default_rng()
    frauds = (rng.random(60_000) < 0.01).astype(int)
    v1_scores, v1_profile = _calibrated(rng, frauds, 6.0)
    blind = frauds * (rng.random(len(frauds)) < 0.5)  # a fraud pattern the canary never learned
    v2_scores, v2_profile = _calibrated(rng, frauds - blind, 6.0)
    flags = {"v1": v1_scores > 0.5, "v2": v2_scores > 0.5}
    pairs = _paired_scores({"v1": v1_scores, "v2": v2_scores}, flags)
    observation = Observation(_window(50).online, "v1", "v2", OFFLINE, paired_scores=pairs,
                              profiles={"v1": v1_profile, "v2": v2_profile})
    look = judge(Ledger.start(POLICY), observation, percent=50, policy=POLICY, holds=0)
    assert look.action == "hold", look.reasons
    line = next(r for r in look.reasons if "paired.recall_estimate" in r)
    assert line.startswith("WAIT paired.recall_estimate: ")
    assert own_flags_difference(pairs, {"v1": v1_profile, "v2": v2_profile}, level=0.99).lower < -0.1
    own = recall_difference(pairs, "v2", v2_profile, level=0.99)
    theirs = recall_difference(pairs, "v1", v1_profile, level=0.99)
    true = (np.sum(flags["v2"] & ~flags["v1"] & (frauds == 1)) - np.sum(flags["v1"] & ~flags["v2"] & (frauds == 1))) \
        / frauds.sum()
    # seen over runs: true −0.18 to −0.25, the baseline's estimate −0.23 to −0.30, the canary's +0.07 to +0.18
    assert theirs.lower <= true < -0.1  # the baseline's calibration sees the loss
    assert own.estimate > true + 0.15  # the canary's own calibration does not
