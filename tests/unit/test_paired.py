import math

import numpy as np
import pytest
from fraud_canary.paired import Discordant, combine, discordant, paired_outcomes


def test_mcnemar_exact_p_is_twice_the_binomial_tail_of_the_smaller_discordant_count():
    table = Discordant(pairs=1000, canary_only=10, baseline_only=2)
    assert table.p_value == pytest.approx(2 * (1 + 12 + 66) / 4096)
    assert table.rate == pytest.approx(0.012) and table.difference == pytest.approx(0.008)
    assert Discordant(1000, 6, 6).p_value == pytest.approx(1.0)
    assert math.isnan(Discordant(1000, 0, 0).p_value)  # no discordant pair: no evidence either way


def test_paired_outcomes_split_discordant_rows_by_label():
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0], dtype=bool)
    v1 = np.array([1, 0, 0, 1, 1, 0, 0, 0], dtype=bool)
    v2 = np.array([1, 1, 1, 0, 0, 0, 1, 1], dtype=bool)
    paired = paired_outcomes(v1, v2, baseline_version="v1", canary_version="v2", labels=labels)
    assert paired.decisions == Discordant(8, 4, 2, both=1)  # row 0 flagged by both
    assert paired.frauds == Discordant(4, 2, 1, both=1)  # caught by v2 only: rows 1, 2; by v1 only: row 3
    assert paired.legit == Discordant(4, 2, 1, both=0)  # false alarms of v2 only: rows 6, 7; of v1 only: row 4
    shown = paired.to_dict()
    assert (shown["pairs"], shown["v2_only_right"], shown["v1_only_right"]) == (8, 2, 1)
    assert shown["p_value"] == pytest.approx(1.0)


def test_without_labels_only_the_decision_table_exists_and_combine_keeps_that():
    a = paired_outcomes(np.array([1, 0]), np.array([0, 1]), baseline_version="v1", canary_version="v2")
    b = paired_outcomes(np.array([1, 0]), np.array([1, 1]), baseline_version="v1", canary_version="v2",
                        labels=np.array([1, 0]))
    both = combine([a, b])
    assert both.decisions == Discordant(4, 2, 1, both=1) and both.frauds is None
    assert (both.decisions.canary_rate, both.decisions.baseline_rate) == (0.75, 0.5)
    assert both.to_dict()["p_value"] is None


def test_inconsistent_inputs_are_refused():
    with pytest.raises(ValueError, match="differ in shape"):
        discordant(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="canary_only \\+ baseline_only \\+ both ≤ pairs"):
        Discordant(2, 2, 1)
    with pytest.raises(ValueError, match="canary_only \\+ baseline_only \\+ both ≤ pairs"):
        Discordant(4, 2, 1, both=2)
    assert math.isnan(Discordant(4, 2, 1).canary_rate)  # both not counted: the rates are unknown
    a = paired_outcomes(np.array([1]), np.array([0]), baseline_version="v1", canary_version="v2")
    c = paired_outcomes(np.array([1]), np.array([0]), baseline_version="v2", canary_version="v3")
    with pytest.raises(ValueError, match="different version pairs"):
        combine([a, c])


def test_a_report_round_trips_through_to_dict_and_from_dict():
    from fraud_canary.paired import PairedOutcomes

    labels = np.array([1, 1, 0, 0, 1], dtype=bool)
    paired = paired_outcomes(np.array([1, 0, 1, 0, 0]), np.array([1, 1, 0, 0, 1]), baseline_version="v1",
                             canary_version="v2", labels=labels)
    assert PairedOutcomes.from_dict(paired.to_dict()) == paired
    unlabelled = paired_outcomes(np.array([1, 0]), np.array([0, 1]), baseline_version="v1", canary_version="v2")
    assert PairedOutcomes.from_dict(unlabelled.to_dict()) == unlabelled
