"""The feature contract: ordered columns plus the scaler fitted once on the reference window.

Training and the KServe transformer both call `FeatureContract.transform`, so a model is always
fed exactly what it was trained on. The id changes with any column or parameter, and the deploy
gate refuses a canary whose contract differs from the one being served.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from fraud.schema import FEATURES

SECONDS_PER_DAY = 86_400.0
#: Per-column pre-transforms applied before standardising. `Time` grows without bound, so only
#: its time of day is a stable feature; `Amount` is heavy-tailed.
PRE_TRANSFORMS: dict[str, str] = {"Time": "seconds_of_day", "Amount": "log1p"}


class FeatureContract:
    """Ordered features, pre-transforms and standardisation parameters, with a content id."""

    def __init__(self, features: tuple[str, ...], pre_transforms: dict[str, str],
                 mean: tuple[float, ...], scale: tuple[float, ...]) -> None:
        if not (len(features) == len(mean) == len(scale)):
            raise ValueError("features, mean and scale must have the same length")
        unknown = set(pre_transforms.values()) - {"seconds_of_day", "log1p"}
        if unknown:
            raise ValueError(f"unknown pre-transforms {sorted(unknown)}")
        self.features = tuple(features)
        self.pre_transforms = dict(pre_transforms)
        self.mean = tuple(float(m) for m in mean)
        self.scale = tuple(float(s) for s in scale)
        self._mean = np.asarray(self.mean, dtype=np.float64)
        self._inv_scale = 1.0 / np.asarray(self.scale, dtype=np.float64)
        self._day_cols = [features.index(c) for c, t in pre_transforms.items() if t == "seconds_of_day"]
        self._log_cols = [features.index(c) for c, t in pre_transforms.items() if t == "log1p"]

    @property
    def id(self) -> str:
        body = json.dumps(
            {"features": self.features, "pre_transforms": self.pre_transforms,
             "mean": self.mean, "scale": self.scale}, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()[:16]

    def pre_transform(self, raw: np.ndarray) -> np.ndarray:
        """Raw `[N, F]` values in contract order → float64 values before standardising."""
        values = np.array(raw, dtype=np.float64, copy=True)
        if self._day_cols:
            values[:, self._day_cols] = np.mod(values[:, self._day_cols], SECONDS_PER_DAY)
        if self._log_cols:
            values[:, self._log_cols] = np.log1p(values[:, self._log_cols])
        return values

    def transform(self, raw: np.ndarray) -> np.ndarray:
        """Raw `[N, F]` values in contract order → scaled float32 model inputs."""
        values = self.pre_transform(raw)
        values -= self._mean
        values *= self._inv_scale
        return values.astype(np.float32)

    def transform_frame(self, frame: pd.DataFrame) -> np.ndarray:
        """Scaled model inputs from a frame holding (at least) the contract's columns."""
        return self.transform(frame.loc[:, list(self.features)].to_numpy(dtype=np.float64))

    def to_dict(self) -> dict:
        return {"id": self.id, "features": list(self.features), "pre_transforms": self.pre_transforms,
                "mean": list(self.mean), "scale": list(self.scale)}

    @classmethod
    def from_dict(cls, body: dict) -> FeatureContract:
        contract = cls(tuple(body["features"]), body["pre_transforms"], tuple(body["mean"]),
                       tuple(body["scale"]))
        if "id" in body and body["id"] != contract.id:
            raise ValueError(f"feature contract id {body['id']} does not match its content ({contract.id})")
        return contract

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> FeatureContract:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FeatureContract) and other.id == self.id

    def __repr__(self) -> str:
        return f"FeatureContract(id={self.id}, features={len(self.features)})"


def fit_contract(frame: pd.DataFrame, features: tuple[str, ...] = FEATURES,
                 pre_transforms: dict[str, str] | None = None) -> FeatureContract:
    """Fit standardisation on `frame` (the reference window) after the pre-transforms."""
    pre_transforms = dict(PRE_TRANSFORMS if pre_transforms is None else pre_transforms)
    unfitted = FeatureContract(features, pre_transforms, (0.0,) * len(features), (1.0,) * len(features))
    values = unfitted.pre_transform(frame.loc[:, list(features)].to_numpy(dtype=np.float64))
    mean = values.mean(axis=0)
    scale = values.std(axis=0)
    scale[scale < 1e-12] = 1.0  # a constant column scales to 0, not NaN
    return FeatureContract(features, pre_transforms, tuple(mean), tuple(scale))
