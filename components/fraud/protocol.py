"""The one v2 (Open Inference Protocol) contract of the fraud model: what a request may hold, how
its rows are decoded and checked, and what an answer holds.

Every reader goes through here: the transformer (online), the prediction log (the logged bodies),
the clients and the replay, and batch scoring. A request sends the features either as one input
`[N, 30]` (`MATRIX_INPUT`, FP32/FP64, columns in contract order) or as one `[N]` input per feature,
in either form optionally with `TRANSACTION_ID_INPUT` (BYTES `[N]`, one string of 1–128 characters
per row: checked, never scaled). Every element of the data must be a JSON number: NumPy would
quietly read "NaN", null and true as floats. A refusal is a `RequestRefused` whose `reason` is
the label of `fraud_rejected_requests_total{reason}` and whose message names the field.

The answer holds `FRAUD_PROBABILITY` (FP32 `[N]`, in [0, 1]) and `IS_FRAUD` (INT32 `[N]`, 0 or 1)
and the `model_version` that answered.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NoReturn

import numpy as np

from fraud.schema import FEATURES, MAX_TRANSACTION_ID_CHARS, NON_NEGATIVE, TRANSACTION_ID

MATRIX_INPUT = "transactions"
TRANSACTION_ID_INPUT = TRANSACTION_ID
FRAUD_PROBABILITY = "fraud_probability"
IS_FRAUD = "is_fraud"
#: The answer's outputs: name, datatype (the model metadata's `outputs`).
OUTPUTS: tuple[tuple[str, str], ...] = ((FRAUD_PROBABILITY, "FP32"), (IS_FRAUD, "INT32"))
FEATURE_DATATYPES: dict[str, type[np.floating]] = {"FP32": np.float32, "FP64": np.float64}


class RequestRefused(ValueError):
    """A request the contract refuses: `reason` is a short label, the message names the field."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Tensor:
    """One input as the contract reads it: JSON `data` as a list, or the binary extension's values
    decoded on demand (a callable, so the shape and datatype are checked before the bytes are read)."""

    name: str
    datatype: str
    shape: list[int]
    data: object


@dataclass(frozen=True)
class DecodedRequest:
    """The checked rows: raw float64 features `[N, F]` in contract order, and the ids input if sent."""

    features: np.ndarray
    transaction_ids: list[str] | None


def request_body(raw: np.ndarray, request_id: str | None = None, transaction_ids: Sequence[str] | None = None,
                 arrays: bool = False) -> dict:
    """The v2 request of raw `[N, 30]` transactions in contract order, with their ids (one per row) as
    the `TRANSACTION_ID_INPUT` input when given. `data` is flat, in row-major order, as the protocol
    lays tensors out (half the parse time of nested lists); `arrays` keeps it a NumPy view for
    orjson's OPT_SERIALIZE_NUMPY instead of a list. Send `request_id` also as the `Ce-Id` header:
    the prediction log is keyed by it."""
    raw = np.asarray(raw, dtype=np.float64)
    data = raw.ravel()
    body: dict = {"inputs": [{"name": MATRIX_INPUT, "shape": list(raw.shape), "datatype": "FP64",
                              "data": data if arrays else data.tolist()}]}
    if transaction_ids is not None:
        if len(transaction_ids) != len(raw):
            raise ValueError(f"{len(transaction_ids)} transaction ids for {len(raw)} rows")
        body["inputs"].append({"name": TRANSACTION_ID_INPUT, "shape": [len(raw)], "datatype": "BYTES",
                               "data": [str(i) for i in transaction_ids]})
    if request_id is not None:
        body["id"] = request_id
    return body


def input_types(features: Sequence[str] = FEATURES) -> list[dict]:
    """The model metadata's `inputs`: either feature form, and the optional ids."""
    return ([{"name": MATRIX_INPUT, "datatype": "FP64", "shape": [-1, len(features)]}]
            + [{"name": feature, "datatype": "FP64", "shape": [-1]} for feature in features]
            + [{"name": TRANSACTION_ID_INPUT, "datatype": "BYTES", "shape": [-1]}])


def output_types() -> list[dict]:
    """The model metadata's `outputs`."""
    return [{"name": name, "datatype": datatype, "shape": [-1]} for name, datatype in OUTPUTS]


def refuse(reason: str, message: str) -> NoReturn:
    raise RequestRefused(reason, message)


def json_kind(value: object) -> str:
    """A JSON value's kind as an error message names it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def json_tensor(tensor: object, position: int, binary: bool = False) -> Tensor:
    """One element of a JSON body's `inputs`, its fields checked (`binary`: data comes after the JSON)."""
    if not isinstance(tensor, dict):
        refuse("body", f"inputs[{position}] is not an object")
    name, shape, datatype, data = (tensor.get(key) for key in ("name", "shape", "datatype", "data"))
    if not isinstance(name, str):
        refuse("body", f"inputs[{position}]: 'name' must be a string")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        refuse("body", f"input {name!r}: 'shape' must be a list of non-negative integers")
    if not isinstance(datatype, str):
        refuse("body", f"input {name!r}: 'datatype' must be a string")
    if not binary and not isinstance(data, list):
        refuse("body", f"input {name!r}: 'data' must be a list")
    return Tensor(name, datatype, shape, data)


def decode_request(inputs: Sequence[Tensor], features: Sequence[str] = FEATURES,
                   max_rows: int | None = None) -> DecodedRequest:
    """The rows of a request's inputs, checked; `RequestRefused` naming the first problem."""
    features = tuple(features)
    ids = [tensor for tensor in inputs if tensor.name == TRANSACTION_ID_INPUT]
    feature_inputs = [tensor for tensor in inputs if tensor.name != TRANSACTION_ID_INPUT]
    if not feature_inputs:
        refuse("empty", "the request has no inputs" if not ids else
               f"the request has no feature inputs besides {TRANSACTION_ID_INPUT!r}")
    if len(feature_inputs) == 1 and (len(feature_inputs[0].shape) == 2 or feature_inputs[0].name == MATRIX_INPUT):
        raw = _matrix(feature_inputs[0], features, max_rows)
    else:
        raw = _columns(feature_inputs, features, max_rows)
    if len(ids) > 1:
        refuse("duplicate_column", f"duplicate inputs: {TRANSACTION_ID_INPUT}")
    transaction_ids = _transaction_ids(ids[0], len(raw)) if ids else None
    finite = np.isfinite(raw)
    if not finite.all():
        columns = [features[i] for i in np.flatnonzero(~finite.all(axis=0))]
        refuse("nan", f"NaN or infinite values in {', '.join(columns)}")
    for feature in NON_NEGATIVE:
        column = raw[:, features.index(feature)]
        if (column < 0).any():
            row = int(np.argmax(column < 0))
            refuse("negative_value", f"{feature} must not be negative (row {row}: {column[row]})")
    return DecodedRequest(raw, transaction_ids)


def row_transaction_ids(ids: list[str] | None, rows: int, request_id: object) -> tuple[str | None, ...]:
    """Each row's transaction: the ids input if sent, else a one-row request's own id, else none."""
    if ids is not None:
        return tuple(ids)
    if rows == 1 and request_id is not None:
        return (transaction_id(request_id, "the request's 'id'"),)
    return (None,) * rows


def transaction_id(value: object, where: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_TRANSACTION_ID_CHARS:
        shown = repr(value) if not isinstance(value, str) or len(value) <= 40 else f"{value[:40]!r}…"
        raise ValueError(f"{where}: {shown} is not a transaction id (a string of 1 to "
                         f"{MAX_TRANSACTION_ID_CHARS} characters)")
    return value


def _matrix(tensor: Tensor, features: tuple[str, ...], max_rows: int | None) -> np.ndarray:
    shape = list(tensor.shape)
    _check_datatype(tensor)
    if len(shape) != 2 or shape[1] != len(features):
        refuse("shape", f"input {tensor.name!r}: shape {shape} is not [N, {len(features)}] "
                        f"(columns in contract order: {features[0]}, {features[1]} … {features[-1]})")
    _check_rows(tensor.name, shape[0], max_rows)
    return _as_array(tensor)


def _columns(inputs: list[Tensor], features: tuple[str, ...], max_rows: int | None) -> np.ndarray:
    names = [tensor.name for tensor in inputs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        refuse("duplicate_column", f"duplicate inputs: {', '.join(duplicates)}")
    unknown = [name for name in names if name not in features]
    if unknown:
        refuse("unknown_column", f"unknown inputs: {', '.join(unknown)} (send one [N, "
                                 f"{len(features)}] input or one [N] input per feature)")
    missing = [feature for feature in features if feature not in names]
    if missing:
        refuse("missing_column", f"missing inputs: {', '.join(missing)}")
    lengths = set()
    for tensor in inputs:
        _check_datatype(tensor)
        if len(tensor.shape) != 1:
            refuse("shape", f"input {tensor.name!r}: shape {list(tensor.shape)} is not [N]")
        lengths.add(tensor.shape[0])
    if len(lengths) != 1:
        refuse("shape", f"inputs have different lengths: {', '.join(f'{t.name} {list(t.shape)}' for t in inputs)}")
    _check_rows(inputs[0].name, lengths.pop(), max_rows)
    by_name = {tensor.name: tensor for tensor in inputs}
    return np.column_stack([_as_array(by_name[feature]) for feature in features])


def _transaction_ids(tensor: Tensor, rows: int) -> list[str]:
    """The optional ids input: BYTES `[N]`, one non-empty string of at most 128 characters per row."""
    name = tensor.name
    if tensor.datatype != "BYTES":
        refuse("transaction_id", f"input {name!r}: datatype {tensor.datatype} is not BYTES")
    if len(tensor.shape) != 1 or tensor.shape[0] != rows:
        refuse("transaction_id", f"input {name!r}: shape {list(tensor.shape)} is not [{rows}] (one id per row)")
    data = tensor.data
    if not isinstance(data, list):
        refuse("transaction_id", f"input {name!r}: send the ids as a JSON list of strings (the binary "
                                 "extension is not accepted for them)")
    if len(data) != rows:
        refuse("transaction_id", f"input {name!r}: {len(data)} ids for {rows} rows")
    for index, value in enumerate(data):
        if not isinstance(value, str) or not 0 < len(value) <= MAX_TRANSACTION_ID_CHARS:
            found = f"{len(value)} characters" if isinstance(value, str) else json_kind(value)
            refuse("transaction_id", f"input {name!r}: ids must be strings of 1 to {MAX_TRANSACTION_ID_CHARS} "
                                     f"characters; found {found} at element {index}")
    return data


def _check_datatype(tensor: Tensor) -> None:
    if tensor.datatype not in FEATURE_DATATYPES:
        refuse("datatype", f"input {tensor.name!r}: datatype {tensor.datatype} is not FP32 or FP64")


def _check_rows(name: str, rows: int, max_rows: int | None) -> None:
    if rows < 1:
        refuse("empty", f"input {name!r} has no rows")
    if max_rows is not None and rows > max_rows:
        refuse("row_limit", f"input {name!r}: {rows} rows exceed the limit of {max_rows} per request")


def _as_array(tensor: Tensor) -> np.ndarray:
    if isinstance(tensor.data, list):
        values = _checked_numbers(tensor, tensor.data)
    else:  # the binary extension: raw little-endian floats, numbers by construction
        decode = tensor.data
        if not callable(decode):
            refuse("data", f"input {tensor.name!r}: 'data' must be a list")
        try:
            values = decode()
        except ValueError as error:
            refuse("data", f"input {tensor.name!r}: data does not fit shape {list(tensor.shape)} and "
                           f"datatype {tensor.datatype} ({error})")
    return values.astype(np.float64, copy=False)


def _checked_numbers(tensor: Tensor, data: list) -> np.ndarray:
    """JSON data as an array of the tensor's datatype, refusing anything but numbers.

    `np.asarray(data, dtype=float64)` would turn "NaN" and "1e999" into floats, null into NaN and
    true into 1.0; without a dtype NumPy keeps strings, nulls and lists visible in the dtype (U, O)
    and only booleans mixed with numbers become floats, so only the elements equal to 0 or 1 need a
    type check. Measured on 10,000 rows: see README (bad input)."""
    shape = list(tensor.shape)
    try:
        values = np.asarray(data)
    except ValueError:  # ragged: rows of different lengths, or a list where a number belongs
        values = None
    if values is not None and values.dtype.kind in "fi" and (values.shape == tuple(shape) or (
            values.ndim == 1 and values.size == int(np.prod(shape)))):
        if _has_booleans(data, values):
            _refuse_element(tensor, data)
        return values.reshape(shape).astype(FEATURE_DATATYPES[tensor.datatype], copy=False)
    _refuse_element(tensor, data)
    size = values.size if values is not None and values.dtype.kind in "fi" else None
    numpy_shape = f"({','.join(map(str, shape))}{',' if len(shape) == 1 else ''})"  # NumPy's own words
    reason = (f"cannot reshape array of size {size} into shape {numpy_shape}" if size is not None
              else "rows of different lengths")
    refuse("data", f"input {tensor.name!r}: data does not fit shape {shape} and datatype {tensor.datatype} ({reason})")


def _refuse_element(tensor: Tensor, data: list) -> None:
    """Refuse naming the first element that is not a number (flat index in row-major order), if any."""
    nested = len(tensor.shape) > 1 and bool(data) and isinstance(data[0], list)
    for index, value in enumerate(_leaves(data, len(tensor.shape) if nested else 1)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            refuse("element_type", f"input {tensor.name!r}: {tensor.datatype} data must be numbers; "
                                   f"found {json_kind(value)} at element {index}")


def _leaves(data: list, depth: int):
    """The elements of nested lists `depth` levels deep, in row-major order (a list deeper down is one)."""
    for item in data:
        if depth > 1 and isinstance(item, list):
            yield from _leaves(item, depth - 1)
        else:
            yield item


def _has_booleans(data: list, values: np.ndarray) -> bool:
    """Whether JSON `data` (converted to `values`) held booleans: NumPy turns true and false mixed with
    numbers into 1.0 and 0.0, so only rows holding a 0 or a 1 need a look at their Python types
    (≈ 1 µs a row; every row when all values are 0 or 1: 11 ms for 10,000 rows)."""
    suspects = (values == 0) | (values == 1)
    if values.ndim == 1:
        return bool(suspects.any()) and bool in set(map(type, data))
    rows = np.flatnonzero(suspects.any(axis=1))
    return any(bool in set(map(type, data[row])) for row in rows.tolist())


@dataclass(frozen=True)
class Answer:
    """An answer's rows: the version that answered ("" if it named none), float64 scores, 0/1 decisions."""

    model_version: str
    fraud_probability: np.ndarray
    is_fraud: np.ndarray


def decode_answer(body: object) -> Answer:
    """The scores and decisions of a v2 response body; ValueError naming what is wrong."""
    if not isinstance(body, Mapping):
        raise ValueError("the response body is not a v2 response object")
    outputs = body.get("outputs")
    if not isinstance(outputs, list) or not all(isinstance(tensor, dict) for tensor in outputs):
        raise ValueError("the response has no 'outputs' list of tensors")
    by_name = {tensor.get("name"): tensor for tensor in outputs}
    missing = [name for name in (FRAUD_PROBABILITY, IS_FRAUD) if name not in by_name]
    if missing:
        raise ValueError(f"the response has no output {', '.join(missing)}")
    probability = output_values(by_name[FRAUD_PROBABILITY].get("data"), FRAUD_PROBABILITY)
    decisions = output_values(by_name[IS_FRAUD].get("data"), IS_FRAUD)
    if len(probability) != len(decisions) or not len(probability):
        raise ValueError(f"outputs {FRAUD_PROBABILITY} ({len(probability)} values) and {IS_FRAUD} "
                         f"({len(decisions)} values) must have the same number of rows, at least 1")
    check_scores(probability, decisions, f"output {FRAUD_PROBABILITY}", f"output {IS_FRAUD}")
    version = body.get("model_version")
    return Answer(version if isinstance(version, str) else "", probability, decisions.astype(np.int64))


def output_values(data: object, name: str) -> np.ndarray:
    """An output's JSON data as finite float64 `[N]`, refusing strings, nulls, booleans and ragged rows."""
    try:
        values = np.asarray(data)
    except ValueError:  # ragged
        values = np.asarray([], dtype=object)
    if not isinstance(data, list) or values.dtype.kind not in "fiu" or (
            ((values == 0) | (values == 1)).any() and _holds_booleans(data)):
        raise ValueError(f"{name!r}: data must be a list of numbers")
    values = values.astype(np.float64, copy=False).reshape(-1)
    if not np.isfinite(values).all():
        raise ValueError(f"{name!r}: data holds NaN or infinite values")
    return values


def check_scores(probability: np.ndarray, decisions: np.ndarray, probability_name: str, decisions_name: str) -> None:
    if not ((decisions == 0) | (decisions == 1)).all():  # np.isin costs 8 µs a call on the answer path
        raise ValueError(f"{decisions_name} must hold 0 or 1")
    if not ((probability >= 0) & (probability <= 1)).all():
        raise ValueError(f"{probability_name} must lie in [0, 1]")


def _holds_booleans(data: list) -> bool:
    return any(type(item) is bool or (type(item) is list and _holds_booleans(item)) for item in data)


def json_request_tensors(body: Mapping) -> list[Tensor]:
    """The inputs of a decoded JSON request body, their fields checked."""
    inputs = body.get("inputs")
    if not isinstance(inputs, list):
        refuse("body", "a v2 request needs 'inputs': a list of tensors")
    return [json_tensor(tensor, position) for position, tensor in enumerate(inputs)]

