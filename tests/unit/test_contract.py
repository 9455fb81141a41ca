import numpy as np
import pytest
from fraud import simulate
from fraud.contract import FeatureContract, fit_contract
from fraud.schema import FEATURES


@pytest.fixture(scope="module")
def reference():
    frame = simulate.generate(20_000, 3)
    return simulate.split_windows(frame, simulate.WindowSpec(), 15)["reference"]


def test_transform_standardises_after_pre_transforms(reference):
    contract = fit_contract(reference)
    scaled = contract.transform_frame(reference)
    assert scaled.dtype == np.float32 and scaled.shape == (len(reference), 30)
    np.testing.assert_allclose(scaled.mean(axis=0), 0, atol=1e-3)
    np.testing.assert_allclose(scaled.std(axis=0), 1, atol=1e-3)
    # Time enters as time of day, Amount as log1p: check one row by hand.
    row = reference.iloc[0]
    time_of_day = row["Time"] % 86_400
    assert scaled[0, 0] == pytest.approx((time_of_day - contract.mean[0]) / contract.scale[0], rel=1e-5)
    assert scaled[0, 29] == pytest.approx((np.log1p(row["Amount"]) - contract.mean[29]) / contract.scale[29], rel=1e-5)


def test_time_of_day_is_independent_of_the_day(reference):
    contract = fit_contract(reference)
    raw = reference.loc[:, list(FEATURES)].to_numpy()[:5]
    later = raw.copy()
    later[:, 0] += 86_400 * 300
    np.testing.assert_array_equal(contract.transform(raw), contract.transform(later))


def test_id_follows_content_and_round_trips(tmp_path, reference):
    contract = fit_contract(reference)
    loaded = FeatureContract.load(contract.save(tmp_path / "c.json"))
    assert loaded == contract and loaded.id == contract.id
    other = fit_contract(reference.iloc[: len(reference) // 2])
    assert other.id != contract.id


def test_tampered_contract_is_refused(tmp_path, reference):
    body = fit_contract(reference).to_dict()
    body["mean"][3] += 1.0
    with pytest.raises(ValueError, match="does not match its content"):
        FeatureContract.from_dict(body)
