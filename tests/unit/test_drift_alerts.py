"""FraudFeatureDrift on real simulated months: the per-month drift metrics of a simulated frame
become a promtool test (one sample per month, 1 month = 1 h of series time) and promtool, on the
deployed rule file, must fire exactly on the drifted months and stay silent on the pre-drift ones.

Measured (seed 7, 15 months, drift from month 10), `drift_by_month` per month size:
  ≈67k rows/month (1M): V4, V11, Amount every drifted month, nothing before (seeds 7, 8, 9)
  ≈20k (300k): V4, V11 (Amount in some); ≈5k (75k): V4, V11; ≈2.7k (40k): V4 (V11 in some);
  ≈1.3k (20k): months missed. Months 1-7 are the profile's own reference; 8 and 9 are
  out-of-sample pre-drift months.
"""
from __future__ import annotations

import pytest
from fraud import simulate
from fraud.contract import fit_contract
from fraud.profile import fit_feature_profile
from fraud_canary.feature_drift import drift_by_month, drifted_features

from tests.promtool import alert_rule, expected_alert, go_float, run_rule_test

N_TRANSACTIONS = 300_000  # ≈ 20k a month: a few seconds here; the 1M table is in the docstring


@pytest.fixture(scope="module")
def months():
    drift = simulate.DriftSpec()
    frame = simulate.generate(N_TRANSACTIONS, 7, drift)
    reference = simulate.split_windows(frame, simulate.WindowSpec(), drift.months)["reference"]
    profile = fit_feature_profile(reference, fit_contract(reference))
    return drift, drift_by_month(frame, profile, drift.months)


def test_drift_by_month_names_the_shifted_features_from_the_drift_month_on(months):
    drift, by_month = months
    assert sorted(by_month) == list(range(1, drift.months + 1))
    for month, drifts in by_month.items():
        names = set(drifted_features(drifts))
        if month < drift.drift_start_month:
            assert names == set(), month
        else:
            assert {"V4", "V11"} <= names <= {"V4", "V11", "Amount"}, (month, names)


def test_promtool_fires_the_drift_alert_exactly_on_the_drifted_months(months, tmp_path):
    drift, by_month = months
    rule = alert_rule("FraudFeatureDrift")
    features = [d.feature for d in by_month[1]]
    series = [{"series": f'fraud_feature_drift_adjusted_p{{feature="{feature}"}}',
               "values": " ".join(go_float(next(d for d in by_month[m] if d.feature == feature).adjusted_p)
                                  for m in sorted(by_month))}
              for feature in features]
    checks = []
    for month, drifts in sorted(by_month.items()):
        expected = [expected_alert(rule, {"feature": d.feature}, d.adjusted_p) for d in drifts if d.drifted]
        assert bool(expected) == (month >= drift.drift_start_month), month
        checks.append({"eval_time": f"{month - 1}h", "alertname": "FraudFeatureDrift", "exp_alerts": expected})
    spec = {"tests": [{"name": "simulated months", "interval": "1h", "input_series": series,
                       "alert_rule_test": checks}]}
    result = run_rule_test(spec, tmp_path / "drift-months.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
