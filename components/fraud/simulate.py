"""Drifting credit-card transactions in the Kaggle schema, and the time windows cut from them.

Generated data imitates the Kaggle set's shape: `V1`…`V28` are PCA-like components with falling
variance, fraud (≈ 0.17 %) carries a signature on a handful of components, `Amount` is
log-normal, fraud is more frequent at night. From `drift_start_month` on, a share of fraud
follows a new pattern (legitimate-looking components except for shifts on a few others, and
larger amounts), and legitimate traffic shifts mildly. `enrich` lays a real `creditcard.csv`
over the same calendar and applies the same drift.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fraud.pipeline_config import DEFAULTS
from fraud.schema import (
    COLUMNS,
    DATASET_COLUMNS,
    EPOCH,
    FEATURES,
    LABEL,
    TRANSACTION_ID,
    DataError,
    check_transactions,
    timestamps,
    transaction_ids,
)

COMPONENTS = tuple(f"V{i}" for i in range(1, 29))
#: Standard deviations of the Kaggle set's V1…V28 (rounded), so generated data has its scale.
COMPONENT_STD = np.array([1.96, 1.65, 1.52, 1.42, 1.38, 1.33, 1.24, 1.19, 1.10, 1.09, 1.02, 1.00,
                          1.00, 0.96, 0.92, 0.88, 0.85, 0.84, 0.81, 0.77, 0.73, 0.73, 0.62, 0.61,
                          0.52, 0.48, 0.40, 0.33])
#: Mean shift of the classic fraud signature (close to the Kaggle set's fraud means).
CLASSIC_FRAUD_SHIFT = {"V1": -4.8, "V2": 3.6, "V3": -7.0, "V4": 4.5, "V5": -3.2, "V7": -5.6,
                       "V9": -2.6, "V10": -5.7, "V11": 3.8, "V12": -6.3, "V14": -7.0, "V16": -4.1,
                       "V17": -6.7, "V18": -2.2}
#: Share of legitimate transactions by hour of day (UTC); fraud is flatter with a night bump.
LEGIT_HOURS = np.array([1, 0.6, 0.4, 0.3, 0.3, 0.5, 1.2, 2.5, 4, 5, 5.5, 6, 6.2, 6, 5.8, 5.6, 5.5,
                        5.6, 5.8, 5.5, 4.5, 3.5, 2.5, 1.6])
FRAUD_HOURS = np.array([4, 4.5, 5, 5, 4.5, 4, 3, 3, 3, 3, 3.5, 3.5, 3.5, 3.5, 3.5, 3.5, 3.5, 3.5,
                        3.5, 3.5, 3.5, 3.5, 3.5, 3.8])


@dataclass(frozen=True)
class DriftSpec:
    """What changes from `drift_start_month` on (README: "The simulated drift")."""

    months: int = 15
    drift_start_month: int = DEFAULTS.drift_start_month
    fraud_rate: float = DEFAULTS.fraud_rate
    #: Share of fraud in drift months that follows the new pattern.
    new_pattern_share: float = 0.6
    #: New-pattern fraud: a legitimate transaction's components plus these absolute shifts, each
    #: scaled by a per-row factor drawn from `new_pattern_strength`.
    new_pattern_shift: dict[str, float] = field(default_factory=lambda: {
        "V1": 4.5, "V2": -4.0, "V3": 4.5, "V5": 3.5, "V7": 3.5})
    new_pattern_strength: tuple[float, float] = (0.7, 1.3)
    #: New-pattern fraud amounts are multiplied by a factor drawn from this range.
    new_pattern_amount_factor: tuple[float, float] = (1.2, 1.5)
    #: Legitimate traffic in drift months: shift in units of the component's standard deviation.
    legit_shift_std: dict[str, float] = field(default_factory=lambda: {"V4": 0.15, "V11": -0.10})
    legit_amount_factor: float = 1.05


@dataclass(frozen=True)
class WindowSpec:
    """Inclusive month ranges (1 = the epoch's month). Windows are contiguous and ordered:
    v1 trains on reference, v2 on recent, both are scored on pre_drift and holdout."""

    reference: tuple[int, int] = (1, 7)
    pre_drift: tuple[int, int] = (8, 8)
    recent: tuple[int, int] = (9, 12)
    holdout: tuple[int, int] = (13, 15)

    def items(self) -> list[tuple[str, tuple[int, int]]]:
        return [("reference", self.reference), ("pre_drift", self.pre_drift),
                ("recent", self.recent), ("holdout", self.holdout)]


def check_specs(drift: DriftSpec, windows: WindowSpec) -> None:
    """Raise DataError unless the windows are ordered, within the months, and the recent window
    holds both pre-drift and drifted months while pre_drift ends before the drift."""
    previous_end = 0
    for name, (start, end) in windows.items():
        if start != previous_end + 1 or end < start:
            raise DataError(f"window {name} {start}-{end} must start at month {previous_end + 1} and not end before it starts")
        previous_end = end
    if previous_end > drift.months:
        raise DataError(f"windows end at month {previous_end} but the data has {drift.months} months")
    if not windows.recent[0] < drift.drift_start_month <= windows.recent[1]:
        raise DataError(f"drift_start_month {drift.drift_start_month} must fall inside the recent window "
                        f"{windows.recent} after its first month, so v2 trains on early drift")
    if not 0 < drift.fraud_rate < 0.5:
        raise DataError(f"fraud_rate {drift.fraud_rate} must be in (0, 0.5)")


def window_share(windows: WindowSpec, name: str, months: int) -> float:
    """Expected share of transactions in window `name`: every transaction's day is uniform over the calendar."""
    days = month_starts(months) / 86_400
    start, end = dict(windows.items())[name]
    return float((days[end] - days[start - 1]) / days[-1])


def minimum_transactions(min_holdout_frauds: int, fraud_rate: float, windows: WindowSpec = WindowSpec(),
                         months: int = DriftSpec.months) -> int:
    """Smallest `n_transactions` whose holdout holds `min_holdout_frauds` frauds in ≈ 98 % of seeds.

    Holdout frauds are Poisson with mean λ = n · fraud_rate · holdout share; asking λ − 2√λ ≥ m
    (two standard deviations of margin) gives √λ = 1 + √(1 + m)."""
    expected = (1 + math.sqrt(1 + min_holdout_frauds)) ** 2
    return math.ceil(expected / (fraud_rate * window_share(windows, "holdout", months)))


def month_starts(months: int) -> np.ndarray:
    """Seconds from the epoch to the start of months 1…months+1."""
    starts = [EPOCH + pd.DateOffset(months=m) for m in range(months + 1)]
    return np.array([(s - EPOCH).total_seconds() for s in starts])


def month_of(time_seconds: np.ndarray, months: int) -> np.ndarray:
    """1-based month index of each `Time` value."""
    return np.searchsorted(month_starts(months), time_seconds, side="right")


def _times(rng: np.random.Generator, n: int, span_days: int, hour_weights: np.ndarray) -> np.ndarray:
    days = rng.integers(0, span_days, n)
    hours = rng.choice(24, n, p=hour_weights / hour_weights.sum())
    return days * 86_400.0 + hours * 3_600.0 + rng.uniform(0, 3_600, n).round()


def generate(n_transactions: int, seed: int, drift: DriftSpec = DriftSpec()) -> pd.DataFrame:
    """`n_transactions` seeded transactions over `drift.months` months, drift applied, sorted by Time."""
    if n_transactions <= 0:
        raise DataError(f"n_transactions must be positive, got {n_transactions}")
    rng = np.random.default_rng(seed)
    span_days = int(month_starts(drift.months)[-1] // 86_400)
    fraud = rng.random(n_transactions) < drift.fraud_rate
    n_fraud = int(fraud.sum())

    # Legitimate components: Student-t (df 6) for heavier tails than a Gaussian, unit variance.
    df = 6.0
    components = rng.standard_t(df, (n_transactions, 28)) * np.sqrt((df - 2) / df) * COMPONENT_STD
    # Classic fraud: most carry the full signature, a fifth only faintly (the misses a model makes).
    strength = np.where(rng.random(n_fraud) < 0.8, rng.uniform(0.6, 1.2, n_fraud), rng.uniform(0.05, 0.35, n_fraud))
    shift = np.array([CLASSIC_FRAUD_SHIFT.get(c, 0.0) for c in COMPONENTS])
    components[fraud] = components[fraud] * 1.5 + strength[:, None] * shift

    amount = rng.lognormal(3.1, 1.4, n_transactions)
    small = rng.random(n_fraud) < 0.6  # card testing: many tiny amounts, the rest large
    amount[fraud] = np.where(small, rng.lognormal(1.5, 1.0, n_fraud), rng.lognormal(5.0, 1.0, n_fraud))

    time = np.empty(n_transactions)
    time[~fraud] = _times(rng, n_transactions - n_fraud, span_days, LEGIT_HOURS)
    time[fraud] = _times(rng, n_fraud, span_days, FRAUD_HOURS)

    frame = pd.DataFrame(components, columns=list(COMPONENTS))
    frame.insert(0, "Time", time)
    frame["Amount"] = amount
    frame[LABEL] = fraud.astype(np.int64)
    return _finish(apply_drift(frame, rng, drift), seed)


def enrich(source: pd.DataFrame, n_transactions: int, seed: int, drift: DriftSpec = DriftSpec()) -> pd.DataFrame:
    """Resample a real `creditcard.csv` frame onto the calendar (keeping each row's time of day)
    and apply the same drift as `generate`."""
    check_transactions(source, source="source CSV")
    if n_transactions <= 0:
        raise DataError(f"n_transactions must be positive, got {n_transactions}")
    rng = np.random.default_rng(seed)
    span_days = int(month_starts(drift.months)[-1] // 86_400)
    frame = source.loc[rng.integers(0, len(source), n_transactions), list(COLUMNS)].reset_index(drop=True)
    frame["Time"] = rng.integers(0, span_days, n_transactions) * 86_400.0 + np.mod(frame["Time"].to_numpy(float), 86_400)
    frame[LABEL] = frame[LABEL].astype(np.int64)
    return _finish(apply_drift(frame, rng, drift), seed)


def apply_drift(frame: pd.DataFrame, rng: np.random.Generator, drift: DriftSpec) -> pd.DataFrame:
    """Apply `drift` to rows from `drift.drift_start_month` on (the frame is modified and returned)."""
    drifted = month_of(frame["Time"].to_numpy(), drift.months) >= drift.drift_start_month
    fraud = frame[LABEL].to_numpy() == 1
    legit_rows = np.flatnonzero(drifted & ~fraud)
    for column, sigma_shift in drift.legit_shift_std.items():
        frame.loc[legit_rows, column] += sigma_shift * COMPONENT_STD[COMPONENTS.index(column)]
    frame.loc[legit_rows, "Amount"] *= drift.legit_amount_factor

    candidates = np.flatnonzero(drifted & fraud)
    new_pattern = candidates[rng.random(len(candidates)) < drift.new_pattern_share]
    if len(new_pattern) and len(legit_rows):
        # A legitimate transaction's components, moved along a few others the classic signature
        # does not use, so a model that learned only the classic signature misses it.
        lookalikes = rng.choice(legit_rows, len(new_pattern))
        frame.loc[new_pattern, list(COMPONENTS)] = frame.loc[lookalikes, list(COMPONENTS)].to_numpy()
        factor = rng.uniform(*drift.new_pattern_strength, len(new_pattern))
        for column, value in drift.new_pattern_shift.items():
            frame.loc[new_pattern, column] += factor * value
        frame.loc[new_pattern, "Amount"] *= rng.uniform(*drift.new_pattern_amount_factor, len(new_pattern))
    return frame


def _finish(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Amounts in cents, rows by Time, each with its id (`schema.transaction_ids`: stable for a seed)."""
    frame["Amount"] = frame["Amount"].round(2)
    frame = frame.sort_values("Time", kind="stable").reset_index(drop=True)[list(COLUMNS)]
    frame.insert(0, TRANSACTION_ID, transaction_ids(seed, len(frame)))
    return frame[list(DATASET_COLUMNS)]


def split_windows(frame: pd.DataFrame, windows: WindowSpec, months: int) -> dict[str, pd.DataFrame]:
    """Cut the frame into the named windows by calendar month."""
    month = month_of(frame["Time"].to_numpy(), months)
    parts = {}
    for name, (start, end) in windows.items():
        part = frame[(month >= start) & (month <= end)].reset_index(drop=True)
        if part.empty:
            raise DataError(f"window {name} (months {start}-{end}) has no transactions")
        parts[name] = part
    return parts


def summarize_window(frame: pd.DataFrame) -> dict:
    """Rows, fraud count and first/last transaction instant (ISO 8601) of a window."""
    first, last = timestamps([frame["Time"].min(), frame["Time"].max()])
    return {"start": first.isoformat(), "end": last.isoformat(), "rows": int(len(frame)),
            "fraud": int(frame[LABEL].sum())}


def monthly_profile(frame: pd.DataFrame, months: int) -> list[dict]:
    """Per month: rows, fraud rate and the mean of each feature for fraud and for legitimate rows
    (what the drift report plots)."""
    month = month_of(frame["Time"].to_numpy(), months)
    grouped = frame[list(FEATURES) + [LABEL]].assign(month=month).groupby(["month", LABEL])
    means = grouped.mean()
    counts = grouped.size()
    profile = []
    for m in sorted(set(month)):
        row = {"month": int(m), "start": (EPOCH + pd.DateOffset(months=int(m) - 1)).date().isoformat()}
        for label, name in ((0, "legit"), (1, "fraud")):
            row[f"{name}_rows"] = int(counts.get((m, label), 0))
            if (m, label) in means.index:
                row[f"{name}_mean"] = {c: round(float(v), 4) for c, v in means.loc[(m, label)].items()}
        profile.append(row)
    return profile
