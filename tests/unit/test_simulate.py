import numpy as np
import pandas as pd
import pytest
from fraud import simulate
from fraud.schema import DATASET_COLUMNS, LABEL, TRANSACTION_ID, DataError, check_transactions

SPEC = simulate.DriftSpec()


def test_same_seed_same_data_other_seed_other_data():
    a, b = simulate.generate(30_000, 11), simulate.generate(30_000, 11)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(simulate.generate(30_000, 12))
    assert list(a.columns) == list(DATASET_COLUMNS)


def test_every_transaction_has_an_id_unique_stable_for_its_seed_and_not_a_feature():
    a, b, other = simulate.generate(5_000, 11), simulate.generate(5_000, 11), simulate.generate(5_000, 12)
    assert a[TRANSACTION_ID].is_unique and a[TRANSACTION_ID].tolist() == b[TRANSACTION_ID].tolist()
    assert a[TRANSACTION_ID].iloc[:2].tolist() == ["tx-11-0", "tx-11-1"] and other[TRANSACTION_ID].iloc[0] == "tx-12-0"
    parts = simulate.split_windows(a, simulate.WindowSpec(), SPEC.months)
    assert sorted(i for p in parts.values() for i in p[TRANSACTION_ID]) == sorted(a[TRANSACTION_ID])
    check_transactions(a)
    for bad, message in [(["tx-1", "tx-1"], "1 repeated ids (first 'tx-1')"), (["tx-1", 2], "must be strings"),
                         (["", "tx-2"], "must be 1..128 characters (first other at row 0)")]:
        frame = a.iloc[:2].assign(**{TRANSACTION_ID: bad})
        with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
            check_transactions(frame)


def test_shape_like_the_kaggle_set():
    frame = simulate.generate(200_000, 1)
    assert 0.0012 < frame[LABEL].mean() < 0.0022
    assert (frame["Amount"] >= 0).all() and (frame["Time"] >= 0).all()
    assert frame["Time"].is_monotonic_increasing
    months = simulate.month_of(frame["Time"].to_numpy(), SPEC.months)
    assert months.min() == 1 and months.max() == SPEC.months


def test_windows_are_disjoint_ordered_and_holdout_is_after_all_training():
    frame = simulate.generate(100_000, 5)
    parts = simulate.split_windows(frame, simulate.WindowSpec(), SPEC.months)
    assert sum(len(p) for p in parts.values()) == len(frame)
    order = ["reference", "pre_drift", "recent", "holdout"]
    for earlier, later in zip(order, order[1:]):
        assert parts[earlier]["Time"].max() < parts[later]["Time"].min()
    training_end = max(parts["reference"]["Time"].max(), parts["recent"]["Time"].max())
    assert parts["holdout"]["Time"].min() > training_end


def test_drift_moves_fraud_from_the_drift_month_on():
    frame = simulate.generate(400_000, 2, simulate.DriftSpec(fraud_rate=0.01))
    month = simulate.month_of(frame["Time"].to_numpy(), SPEC.months)
    fraud = frame[LABEL] == 1
    before, after = fraud & (month < SPEC.drift_start_month), fraud & (month >= SPEC.drift_start_month)
    # The new pattern lifts V3 (classic fraud pushes it far down) and Amount.
    assert frame.loc[before, "V3"].mean() < -3
    assert frame.loc[after, "V3"].mean() > frame.loc[before, "V3"].mean() + 3
    legit_before, legit_after = ~fraud & (month < SPEC.drift_start_month), ~fraud & (month >= SPEC.drift_start_month)
    shift = frame.loc[legit_after, "V4"].mean() - frame.loc[legit_before, "V4"].mean()
    assert shift == pytest.approx(0.15 * simulate.COMPONENT_STD[3], abs=0.03)


def test_enrich_lays_a_real_csv_over_the_calendar(tmp_path):
    source = simulate.generate(5_000, 9).assign(Time=lambda f: f["Time"] % 172_800)  # two days, like Kaggle
    enriched = simulate.enrich(source, 20_000, 4)
    assert len(enriched) == 20_000 and list(enriched.columns) == list(DATASET_COLUMNS)
    assert simulate.month_of(enriched["Time"].to_numpy(), SPEC.months).max() == SPEC.months
    np.testing.assert_array_equal(enriched["Time"] % 86_400 >= 0, True)
    pd.testing.assert_frame_equal(enriched, simulate.enrich(source, 20_000, 4))


@pytest.mark.parametrize("mutate, message", [
    (lambda f: f.drop(columns=["V7", "Amount"]), r"missing columns \['V7', 'Amount'\]"),
    (lambda f: f.assign(V2=np.where(np.arange(len(f)) == 3, np.nan, f["V2"])), "V2 has 1 NaN/Inf values"),
    (lambda f: f.assign(Amount=-f["Amount"] - 1), "Amount has .* negative"),
    (lambda f: f.assign(Class=2), "Class must be 0 or 1"),
])
def test_enrich_rejects_bad_source(mutate, message):
    with pytest.raises(DataError, match=message):
        simulate.enrich(mutate(simulate.generate(2_000, 1)), 1_000, 1)


@pytest.mark.parametrize("n", [0, -3])
def test_non_positive_size_is_refused(n):
    with pytest.raises(DataError, match="must be positive"):
        simulate.generate(n, 1)


def test_drift_start_must_fall_inside_recent_window():
    with pytest.raises(DataError, match="drift_start_month 8"):
        simulate.check_specs(simulate.DriftSpec(drift_start_month=8), simulate.WindowSpec())
    simulate.check_specs(SPEC, simulate.WindowSpec())


def test_holdout_share_is_its_calendar_days():
    # months 13-15 of 15 from January 2025: January-March 2026 (90 days) of 455 days
    assert simulate.window_share(simulate.WindowSpec(), "holdout", SPEC.months) == pytest.approx(90 / 455)
    frame = simulate.generate(200_000, 3)
    rows = len(simulate.split_windows(frame, simulate.WindowSpec(), SPEC.months)["holdout"])
    assert rows / len(frame) == pytest.approx(90 / 455, abs=0.005)


def test_minimum_size_gives_enough_holdout_frauds_with_margin():
    minimum = simulate.minimum_transactions(100, 0.02)
    share = simulate.window_share(simulate.WindowSpec(), "holdout", SPEC.months)
    expected = minimum * 0.02 * share
    assert expected - 2 * expected ** 0.5 >= 100 > (minimum - 1) * 0.02 * share - 2 * ((minimum - 1) * 0.02 * share) ** 0.5
    holdout_frauds = [int(simulate.split_windows(simulate.generate(minimum, seed, simulate.DriftSpec(fraud_rate=0.02)),
                                                 simulate.WindowSpec(), SPEC.months)["holdout"][LABEL].sum())
                      for seed in range(5)]
    assert min(holdout_frauds) >= 100, holdout_frauds
