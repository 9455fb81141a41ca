"""The Kaggle credit-card transaction schema and checks on raw transaction frames."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

#: Model inputs, in the order every artifact and request uses.
FEATURES: tuple[str, ...] = ("Time", *(f"V{i}" for i in range(1, 29)), "Amount")
LABEL = "Class"
COLUMNS: tuple[str, ...] = (*FEATURES, LABEL)
#: Each simulated transaction's id (`tx-<seed>-<row>`): the join key of late labels, never a feature.
#: Clients send it with the features (the transformer's `transaction_id` input).
TRANSACTION_ID = "transaction_id"
#: The columns of a simulated dataset and of every window cut from it.
DATASET_COLUMNS: tuple[str, ...] = (TRANSACTION_ID, *COLUMNS)
MAX_TRANSACTION_ID_CHARS = 128
#: `Time` counts seconds from this instant (midnight UTC, so Time % 86400 is the time of day).
EPOCH = pd.Timestamp("2025-01-01T00:00:00Z")
NON_NEGATIVE: tuple[str, ...] = ("Time", "Amount")
#: Bounds (seconds) of the request-latency histogram: the transformer's `fraud_request_seconds`
#: buckets, and the bins a replay counts its rows in, so both give the rollout the same histogram.
LATENCY_BUCKETS_S: tuple[float, ...] = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.008, 0.01, 0.025, 0.05, 0.1, 0.25,
                                        0.5, 1.0, 2.5)
#: Upper bounds of the score buckets shadow pairs are counted in (`fraud_shadow_score_bucket`), 0.3
#: apart in log-odds from e^-12 to e^12: fine enough that a bucket rarely straddles a calibration
#: block (isotonic blocks are data-chosen), so paired CBPE can be computed from counters.
PAIRED_SCORE_BOUNDS: tuple[float, ...] = tuple(float(round(1 / (1 + math.exp(-x)), 12))
                                               for x in (-12 + 0.3 * i for i in range(81)))


class DataError(ValueError):
    """Input data that cannot be used; the message names the problem."""


def check_transactions(frame: pd.DataFrame, *, labelled: bool = True, source: str = "data") -> None:
    """Raise DataError naming every missing column, non-numeric column, NaN/Inf or negative value."""
    wanted = COLUMNS if labelled else FEATURES
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise DataError(f"{source}: missing columns {missing}")
    if frame.empty:
        raise DataError(f"{source}: no rows")
    problems = []
    for column in wanted:
        values = frame[column]
        if not pd.api.types.is_numeric_dtype(values):
            problems.append(f"{column} is not numeric ({values.dtype})")
            continue
        bad = ~np.isfinite(values.to_numpy(dtype=float))
        if bad.any():
            problems.append(f"{column} has {int(bad.sum())} NaN/Inf values (first at row {int(np.argmax(bad))})")
        elif column in NON_NEGATIVE and (values < 0).any():
            problems.append(f"{column} has {int((values < 0).sum())} negative values")
    if labelled and not problems and not frame[LABEL].isin((0, 1)).all():
        problems.append(f"{LABEL} must be 0 or 1")
    if TRANSACTION_ID in frame.columns:
        problems.extend(transaction_id_problems(frame[TRANSACTION_ID]))
    if problems:
        raise DataError(f"{source}: " + "; ".join(problems))


def transaction_id_problems(ids: pd.Series) -> list[str]:
    """What is wrong with a `transaction_id` column: ids are non-empty strings of at most
    MAX_TRANSACTION_ID_CHARS characters, unique within the frame."""
    texts = ids.map(lambda value: value if isinstance(value, str) else None)
    if texts.isna().any():
        return [f"{TRANSACTION_ID} must be strings (first other value at row {int(np.argmax(texts.isna()))})"]
    lengths = texts.str.len()
    if ((lengths < 1) | (lengths > MAX_TRANSACTION_ID_CHARS)).any():
        return [f"{TRANSACTION_ID} must be 1..{MAX_TRANSACTION_ID_CHARS} characters "
                f"(first other at row {int(np.argmax((lengths < 1) | (lengths > MAX_TRANSACTION_ID_CHARS)))})"]
    repeated = texts.duplicated()
    if repeated.any():
        return [f"{TRANSACTION_ID} has {int(repeated.sum())} repeated ids (first {texts[repeated].iloc[0]!r})"]
    return []


def transaction_ids(seed: int, rows: int) -> list[str]:
    """The ids of a simulated dataset of `rows` rows (after sorting by Time): `tx-<seed>-<row>`."""
    return [f"tx-{seed}-{row}" for row in range(rows)]


def timestamps(time_seconds: pd.Series | np.ndarray) -> pd.DatetimeIndex:
    """Calendar instants of `Time` values."""
    return EPOCH + pd.to_timedelta(np.asarray(time_seconds), unit="s")
