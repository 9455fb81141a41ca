"""JSON files written atomically: a reader never sees half a file, and a failed write leaves the
previous one (or none) in place. Every state, routes and report file of the project goes through
`write_json`."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def json_safe(value: Any) -> Any:
    """Plain JSON: NumPy scalars become Python numbers, undefined (NaN/Inf) metrics become null."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` to a temporary file beside `path`, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, body: Any) -> Path:
    """`body` as indented JSON (NaN → null), atomically."""
    return atomic_write_text(path, json.dumps(json_safe(body), indent=2, allow_nan=False))


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())
