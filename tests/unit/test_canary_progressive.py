"""The rollout step policy: each branch of `decide_step` on analyses `analyze` really produced."""
from __future__ import annotations

import pytest
from fraud_canary.analysis import analyze
from fraud_canary.metrics import Confusion, VersionMetrics
from fraud_canary.policy import OfflineMetrics
from fraud_canary.progressive import FAST_RULES, REQUIRED_FAST_RULES, SLOW_RULES, RolloutPolicy, decide_step

OFFLINE = {"v1": OfflineMetrics(precision=0.889, recall=0.8, flag_rate=0.009),
           "v2": OfflineMetrics(precision=0.889, recall=0.8, flag_rate=0.009)}
POLICY = RolloutPolicy()


def _metrics(version: str, requests: int, share: float, labelled: bool, errors: int = 0,
             p99: float = 40.0) -> VersionMetrics:
    """1 % fraud, recall 0.8, 0.1 % false flags of the answered rows (OFFLINE's flag rate 0.009)."""
    answered = requests - errors
    frauds, false_flags = answered // 100, answered // 1000
    caught = frauds * 4 // 5
    confusion = Confusion(tp=caught, fp=false_flags, fn=frauds - caught,
                          tn=answered - frauds - false_flags) if labelled else None
    return VersionMetrics(version, requests, errors, caught + false_flags, share, 10.0, 30.0, p99, confusion)


def _analysis(percent: int, *, requests: int = 100_000, labelled: bool = False, canary_errors: int = 0,
              baseline_p99: float = 40.0) -> dict:
    canary = requests * percent // 100
    online = {"v1": _metrics("v1", requests - canary, 1 - percent / 100, labelled, p99=baseline_p99),
              "v2": _metrics("v2", canary, percent / 100, labelled, errors=canary_errors)}
    return analyze(online, OFFLINE, baseline_version="v1", canary_version="v2", canary_percent=percent,
                   detectable=0.12)


def test_intermediate_step_advances_on_the_fast_gate_without_labels():
    analysis = _analysis(20)
    assert analysis["action"] == "hold"  # no labels: the slow checks are insufficient
    decision = decide_step(analysis, percent=20, policy=POLICY, holds=0)
    assert (decision.action, decision.next_percent) == ("advance", 50)
    assert decision.reasons[0].startswith("all ") and decision.reasons[0].endswith("fast checks passed at 20 %: "
                                                                                    "advance to 50 %")
    assert any(r.startswith("INSUFFICIENT canary.recall_vs_baseline: labels unknown") for r in decision.reasons)


def test_step_before_100_needs_the_analysis_to_promote():
    unlabelled = decide_step(_analysis(50), percent=50, policy=POLICY, holds=0)
    assert (unlabelled.action, unlabelled.next_percent) == ("hold", None)
    assert unlabelled.reasons[0] == "hold at 50 % (hold 1 of 3 allowed)"
    assert "INSUFFICIENT evidence.sample_size: labels unknown" in unlabelled.reasons
    labelled = _analysis(50, requests=200_000, labelled=True)
    assert labelled["action"] == "promote", labelled["reasons"]
    promoted = decide_step(labelled, percent=50, policy=POLICY, holds=2)
    assert promoted.to_dict() == {"action": "promote", "percent": 50, "next_percent": 100,
                                  "reasons": ["every check passed at 50 %: promote to 100 %"]}


def test_a_failure_demanding_rollback_rolls_back_at_any_step():
    for percent, requests in ((5, 5_000), (50, 50_000)):
        decision = decide_step(_analysis(percent, canary_errors=requests // 10), percent=percent, policy=POLICY, holds=0)
        assert (decision.action, decision.next_percent) == ("rollback", 0)
        assert decision.reasons == (f"FAIL canary.error_rate: error rate 0.1 of {requests} requests, "
                                    "objective ≤ 0.01 → rollback",)


def test_a_failed_hold_check_holds_an_intermediate_step():
    # Both p99s break the objective: the platform, not the canary, so the canary's check holds.
    analysis = _analysis(20, baseline_p99=400.0)
    decision = decide_step(analysis, percent=20, policy=POLICY, holds=0)
    assert decision.action == "hold"
    assert decision.reasons[1] == "FAIL baseline.latency_p99: p99 400 ms, objective ≤ 250.0 ms → hold"


def test_an_insufficient_fast_check_holds_and_a_missing_required_one_too():
    analysis = _analysis(20)
    insufficient = {**analysis, "checks": [dict(c, status="insufficient") if c["rule"] == "traffic.canary_share"
                                           else c for c in analysis["checks"]]}
    held = decide_step(insufficient, percent=20, policy=POLICY, holds=0)
    assert held.action == "hold" and held.reasons[1].startswith("INSUFFICIENT traffic.canary_share:")
    missing = {**analysis, "checks": [c for c in analysis["checks"] if c["rule"] != "canary.error_rate"]}
    held = decide_step(missing, percent=20, policy=POLICY, holds=0)
    assert held.reasons[1:] == ("MISSING canary.error_rate: the fast gate needs it",)


def test_an_unclassified_rule_gates_like_a_fast_one():
    analysis = _analysis(20)
    extra = {**analysis, "checks": [*analysis["checks"], {"rule": "new.rule", "status": "insufficient",
                                                          "on_failure": "hold", "detail": "not yet known"}]}
    assert decide_step(extra, percent=20, policy=POLICY, holds=0).reasons[1:] == (
        "INSUFFICIENT new.rule: not yet known",)


def test_holding_past_max_holds_rolls_back():
    analysis = _analysis(50)
    assert decide_step(analysis, percent=50, policy=POLICY, holds=2).action == "hold"
    decision = decide_step(analysis, percent=50, policy=POLICY, holds=3)
    assert (decision.action, decision.next_percent) == ("rollback", 0)
    assert decision.reasons[0] == "no decision after 4 windows at 50 %"
    assert "INSUFFICIENT evidence.sample_size: labels unknown" in decision.reasons
    strict = decide_step(analysis, percent=50, policy=RolloutPolicy(max_holds=0), holds=0)
    assert strict.reasons[0] == "no decision after 1 windows at 50 %"


def test_every_rule_recommend_reports_is_classified_once():
    rules = {c["rule"] for c in _analysis(20, labelled=True)["checks"]}
    assert rules <= FAST_RULES | SLOW_RULES
    assert not FAST_RULES & SLOW_RULES and REQUIRED_FAST_RULES <= FAST_RULES


@pytest.mark.parametrize("kwargs, message", [
    ({"plan": (5, 20, 50)}, "plan must increase strictly and end at 100, got (5, 20, 50)"),
    ({"plan": (20, 5, 100)}, "plan must increase strictly and end at 100, got (20, 5, 100)"),
    ({"plan": (0, 100)}, "plan must be whole percentages in (0, 100], got (0, 100)"),
    ({"plan": ()}, "plan must be whole percentages in (0, 100], got ()"),
    ({"max_holds": -1}, "max_holds must be a whole number ≥ 0, got -1"),
])
def test_rollout_policy_validation_names_the_value(kwargs, message):
    with pytest.raises(ValueError) as exc:
        RolloutPolicy(**kwargs)
    assert str(exc.value) == message


def test_decide_step_refuses_a_percent_off_the_plan_or_a_mismatched_analysis():
    with pytest.raises(ValueError, match=r"^100 % is not a step of the plan below 100: \(5, 20, 50, 100\)$"):
        decide_step(_analysis(50), percent=100, policy=POLICY, holds=0)
    with pytest.raises(ValueError, match="^the analysis was computed for a 20 % canary, the step is at 50 %$"):
        decide_step(_analysis(20), percent=50, policy=POLICY, holds=0)
