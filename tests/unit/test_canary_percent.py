"""A canary's share of traffic: one range (1..99), one default, one check for every caller."""
import pytest
from fraud.canary_percent import DEFAULT_CANARY_PERCENT, canary_percent, splits_traffic


@pytest.mark.parametrize("value, percent", [(1, 1), (99, 99), ("20", 20), (20.0, 20), (DEFAULT_CANARY_PERCENT, 20)])
def test_a_whole_percent_in_1_to_99_is_a_canary(value, percent):
    assert canary_percent(value) == percent and splits_traffic(percent)


@pytest.mark.parametrize("value, message", [
    (0, "canary percent 0 must be between 1 and 99 (0 is `fraud-rollout canary rollback`, 100 `fraud-rollout canary "
        "promote`)"),
    (100, "canary percent 100 must be between 1 and 99 (0 is `fraud-rollout canary rollback`, 100 `fraud-rollout "
          "canary promote`)"),
    ("2.5", "canary percent '2.5' is not a whole number"),
    (2.5, "canary percent 2.5 is not a whole number"),
    (True, "canary percent True is not a whole number"),
    (None, "canary percent None is not a whole number"),
])
def test_anything_else_is_refused_naming_it_and_the_operation_it_may_mean(value, message):
    with pytest.raises(ValueError) as refused:
        canary_percent(value, "canary percent")
    assert str(refused.value) == message


@pytest.mark.parametrize("field", [None, 0, 100, True, "20"])
def test_no_percent_rollback_promotion_or_a_non_integer_field_runs_no_canary(field):
    assert not splits_traffic(field)
