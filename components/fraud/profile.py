"""The feature profile: per feature, decile bins of the contract's reference window and the share
of reference rows in each, the baseline every live batch of inputs is tested against for drift.

Bins are cut on the contract's *pre-transformed* values (`Time` → seconds of day, `Amount` →
log1p): raw `Time` grows without bound, so every month would "drift". The profile is its own
JSON artifact naming the contract's id (the simulate step's `feature_profile` output; every model
root keeps a copy beside its `feature_contract.json`), so the contract (whose id gates canaries)
keeps its content. It also keeps the reference row count: the drift test compares two
samples (reference counts vs live counts), not live counts against exact proportions.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fraud.contract import FeatureContract
from fraud.files import read_json, write_json

PROFILE_FILE = "feature_profile.json"
#: Deciles: 9 interior edges, 10 bins per feature.
PROFILE_BINS = 10


@dataclass(frozen=True)
class FeatureProfile:
    """Interior bin edges `edges[f]` (bin b holds edges[b-1] ≤ x < edges[b]) and the reference
    rows in each bin `counts[f]`, per feature in contract order. A feature with ties may have
    fewer bins than another, so these are per-feature sequences, not one matrix."""

    contract_id: str
    features: tuple[str, ...]
    pre_transforms: dict[str, str]
    edges: tuple[tuple[float, ...], ...]
    counts: tuple[tuple[int, ...], ...]

    @property
    def reference_rows(self) -> int:
        return sum(self.counts[0])

    @property
    def proportions(self) -> list[np.ndarray]:
        """Reference share of each bin, per feature."""
        return [np.asarray(c, dtype=np.float64) / sum(c) for c in self.counts]

    def pre_transform(self, raw: np.ndarray) -> np.ndarray:
        """Raw `[N, F]` features in contract order → the values the bins are cut on."""
        return _unscaled(self.features, self.pre_transforms).pre_transform(raw)

    def bin_counts(self, raw: np.ndarray) -> list[np.ndarray]:
        """Rows per bin of raw features `[N, F]` (contract order), per feature."""
        values = self.pre_transform(np.asarray(raw, dtype=np.float64).reshape(-1, len(self.features)))
        return [_bin_counts(values[:, f], edges) for f, edges in enumerate(self.edges)]

    def to_dict(self) -> dict:
        return {"contract_id": self.contract_id, "features": list(self.features),
                "pre_transforms": self.pre_transforms, "reference_rows": self.reference_rows,
                "edges": [list(e) for e in self.edges], "counts": [list(c) for c in self.counts],
                "proportions": [[round(float(p), 6) for p in ps] for ps in self.proportions]}

    @classmethod
    def from_dict(cls, body: dict) -> FeatureProfile:
        return cls(body["contract_id"], tuple(body["features"]), dict(body["pre_transforms"]),
                   tuple(tuple(float(e) for e in edges) for edges in body["edges"]),
                   tuple(tuple(int(c) for c in counts) for counts in body["counts"]))

    def save(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> FeatureProfile:
        return cls.from_dict(read_json(path))


def fit_feature_profile(reference: pd.DataFrame, contract: FeatureContract,
                        n_bins: int = PROFILE_BINS) -> FeatureProfile:
    """Profile the reference window (the frame `fit_contract` was fitted on) under `contract`'s
    pre-transforms. Edges are the unique interior quantiles, so a feature with ties (rounded
    amounts) may have fewer, wider bins; proportions are what the reference actually puts in them."""
    raw = reference.loc[:, list(contract.features)].to_numpy(dtype=np.float64)
    values = _unscaled(contract.features, contract.pre_transforms).pre_transform(raw)
    levels = np.arange(1, n_bins) / n_bins
    edges, counts = [], []
    for f in range(values.shape[1]):
        cut = np.unique(np.quantile(values[:, f], levels))
        edges.append(tuple(float(e) for e in cut))
        counts.append(tuple(int(c) for c in _bin_counts(values[:, f], edges[-1])))
    return FeatureProfile(contract.id, contract.features, dict(contract.pre_transforms), tuple(edges), tuple(counts))


def _unscaled(features: tuple[str, ...], pre_transforms: dict[str, str]) -> FeatureContract:
    """A contract with the pre-transforms only (mean 0, scale 1): the same code as serving."""
    return FeatureContract(features, pre_transforms, (0.0,) * len(features), (1.0,) * len(features))


def _bin_counts(values: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
    return np.bincount(np.searchsorted(np.asarray(edges), values, side="right"), minlength=len(edges) + 1)
