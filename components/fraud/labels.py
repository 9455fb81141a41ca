"""Late labels (chargebacks, confirmed fraud reports): a file of `transaction_id, label, label_time`
that joins the prediction log on the transaction id."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from fraud.schema import DataError

LABEL_COLUMNS = ("transaction_id", "label", "label_time")
READERS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def read_labels(path: str | Path) -> pd.DataFrame:
    """The checked labels of a CSV or parquet file (by extension); DataError naming the bad value."""
    path = Path(path)
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: not a labels file (expected {', '.join(READERS)})")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    expected = f"a {'CSV' if kind == 'csv' else 'parquet file'} of {','.join(LABEL_COLUMNS)}"
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file; expected {expected}")
    try:
        if kind == "csv":
            # Ids stay strings ("007" is not 7); the other columns are checked below.
            frame = pd.read_csv(path, dtype={"transaction_id": str, "label_time": str}, keep_default_na=False)
        else:
            frame = pd.read_parquet(path)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not {expected} (not UTF-8 text)") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, OSError) as error:
        # pandas' and pyarrow's messages never name the file (pyarrow's ArrowInvalid is a ValueError)
        raise DataError(f"{path}: not {expected} ({' '.join(str(error).split())})") from None
    return check_labels(frame, source=str(path))


def check_labels(frame: pd.DataFrame, source: str = "labels") -> pd.DataFrame:
    """`frame` as (transaction_id str, label int 0/1, label_time UTC); DataError naming the first bad value.

    A time without a zone is read as UTC. A transaction twice in one file is refused: which label
    holds would depend on row order (a correction comes in a later file and overwrites)."""
    missing = [column for column in LABEL_COLUMNS if column not in frame.columns]
    if missing:
        raise DataError(f"{source}: missing columns {missing} (expected {', '.join(LABEL_COLUMNS)})")
    ids = frame["transaction_id"]
    blank = ids.isna() | (ids.astype(str).str.len() == 0)
    if blank.any():
        raise DataError(f"{source}: row {_first(blank)}: empty transaction_id")
    ids = ids.astype(str)
    repeated = ids.duplicated()
    if repeated.any():
        raise DataError(f"{source}: transaction_id {ids[repeated].iloc[0]!r} appears more than once")
    labels = pd.to_numeric(frame["label"], errors="coerce")
    bad = ~labels.isin((0, 1))
    if bad.any():
        row = _first(bad)
        raise DataError(f"{source}: row {row}: label {frame['label'].tolist()[row]!r} is not 0 or 1")
    times = pd.to_datetime(frame["label_time"], errors="coerce", utc=True, format="ISO8601")
    if times.isna().any():
        row = _first(times.isna())
        raise DataError(f"{source}: row {row}: label_time {frame['label_time'].tolist()[row]!r} is not a time "
                        "(ISO 8601, e.g. 2025-03-01T12:00:00Z)")
    return pd.DataFrame({"transaction_id": ids, "label": labels.astype(int), "label_time": times}).reset_index(drop=True)


def _first(mask: pd.Series) -> int:
    return int(mask.to_numpy().argmax())
