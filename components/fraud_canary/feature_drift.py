"""Drift of each input feature against the feature contract's reference window.

Per feature, a chi-square test of homogeneity on the profile's decile bins: reference counts vs
live counts (2 × bins). Binned, because the profile keeps bins, not the reference rows, and
because it treats every feature alike (`Amount` and `Time` have ties that break a continuous
test's assumptions); a two-sample test rather than goodness of fit against fixed proportions
because the reference is a sample too (at 67k live rows vs 467k reference rows, treating the
reference as exact inflates the statistic's variance by 1 + n/m ≈ 14 %). PSI over the same bins
is the effect size. Holm's step-down correction across the features controls the family-wise
error rate: on a month without drift, the chance that ANY feature alert fires is ≤ alpha, which
is what an alert that pages someone needs (Benjamini–Hochberg controls the share of false
alerts among those that fire, and is no stronger when nothing drifted).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from fraud.profile import FeatureProfile
from fraud.simulate import DriftSpec, month_of
from scipy import stats

from fraud_canary.score_shift import psi

#: Family-wise error rate per batch (e.g. a month) across the features.
DRIFT_ALPHA = 0.01
#: Effect-size floor of a drift alert (see `FeatureDriftPolicy`).
DRIFT_MIN_PSI = 0.0


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    psi: float
    statistic: float
    p_value: float
    adjusted_p: float
    drifted: bool


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (same order as given): the i-th smallest becomes
    max over j ≤ i of (m − j + 1) · p_(j), capped at 1."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    scaled = p[order] * (len(p) - np.arange(len(p)))
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted


def chi_square_homogeneity(reference: np.ndarray, observed: np.ndarray) -> tuple[float, float]:
    """(statistic, p) of the 2 × bins test that both count vectors come from one distribution.
    Bins empty in both are dropped; NaN with no observed rows."""
    table = np.vstack([np.asarray(reference, dtype=np.float64), np.asarray(observed, dtype=np.float64)])
    table = table[:, table.sum(axis=0) > 0]
    if table[1].sum() == 0 or table.shape[1] < 2:
        return float("nan"), float("nan")
    result = stats.chi2_contingency(table, correction=False)
    return float(result.statistic), float(result.pvalue)


def feature_drift(raw: np.ndarray, profile: FeatureProfile, alpha: float = DRIFT_ALPHA,
                  min_psi: float = DRIFT_MIN_PSI) -> list[FeatureDrift]:
    """Per feature of raw `[N, F]` inputs (contract order): PSI, chi-square p, Holm-adjusted p, and
    drifted = adjusted p < alpha and PSI ≥ min_psi."""
    observed = profile.bin_counts(raw)
    tests = [chi_square_homogeneity(np.asarray(ref), obs) for ref, obs in zip(profile.counts, observed)]
    p_values = np.array([p for _, p in tests])
    adjusted = np.full_like(p_values, np.nan)
    finite = np.isfinite(p_values)
    adjusted[finite] = holm(p_values[finite])
    drifts = []
    for f, feature in enumerate(profile.features):
        effect = psi(np.asarray(profile.counts[f]), observed[f])
        drifts.append(FeatureDrift(feature, effect, tests[f][0], float(p_values[f]), float(adjusted[f]),
                                   bool(adjusted[f] < alpha and effect >= min_psi)))
    return drifts


def drift_by_month(frame: pd.DataFrame, profile: FeatureProfile, months: int = DriftSpec.months,
                   alpha: float = DRIFT_ALPHA, min_psi: float = DRIFT_MIN_PSI) -> dict[int, list[FeatureDrift]]:
    """`feature_drift` of each calendar month (`simulate.month_of`) of a transactions frame."""
    month = month_of(frame["Time"].to_numpy(), months)
    raw = frame.loc[:, list(profile.features)].to_numpy(dtype=np.float64)
    return {int(m): feature_drift(raw[month == m], profile, alpha, min_psi) for m in np.unique(month)}


def drifted_features(drifts: list[FeatureDrift]) -> list[str]:
    return [d.feature for d in drifts if d.drifted]


def drift_alerts(drifts: list[FeatureDrift]) -> list[dict]:
    """The FraudFeatureDrift alerts (manifests/monitoring) a window's drift fires: one per drifted feature."""
    return [{"alert": "FraudFeatureDrift", "feature": d.feature, "psi": d.psi, "adjusted_p": d.adjusted_p}
            for d in drifts if d.drifted]


def monthly_drift(by_month: dict[int, list[FeatureDrift]]) -> list[dict]:
    """`drift_by_month` as JSON rows: per month, the features that drifted and the alerts they fire."""
    return [{"month": month, "drifted": drifted_features(drifts), "alerts": drift_alerts(drifts)}
            for month, drifts in sorted(by_month.items())]
