"""The label-free feedback signals of what the prediction store holds (`fraud_canary.feedback`):
`store_signals` reads a window of served rows and scores each version against its own offline
score profile, every row's inputs against the contract's feature profile and, on the shadow pairs,
every version's decisions against the newest model's calibration (paired CBPE). The prediction
sink's /metrics exports them (`fraud_control.prediction_log.feedback_metrics`); the demo's report reads them.

`monitored_models` reads those profiles from the models' artifact roots (`fraud.export`: a root
carries `monitoring.json` in its version directory and `feature_profile.json` beside its contract).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from fraud import export
from fraud.profile import PROFILE_FILE, FeatureProfile
from fraud.schema import FEATURES
from fraud.score_profile import MONITORING_FILE, ScoreProfile
from fraud_canary.feedback import FeedbackSignals, feedback_signals
from fraud_canary.served import judged_by

from fraud_control.prediction_log.store import PredictionStore, feature_matrix, open_store


def store_signals(url: str, profiles: dict[str, ScoreProfile], feature_profile: FeatureProfile, *,
                  since: datetime | None = None, until: datetime | None = None) -> FeedbackSignals | None:
    """The signals of the rows served from `since` on (all when None), before `until`, in the store
    at `url`; None when none of them was answered.

    Only answered rows count (a row whose response is not logged has no version or score): per
    version, `(scores, decisions)` against `profiles[version]` (a version without a profile is
    left out of the per-version signals), and the features of those of them whose request was
    logged, all versions together, against `feature_profile`. Raises StoreError when the database
    fails, ValueError for a URL that names no store."""
    with open_store(url) as store:
        return signals_of(store, profiles, feature_profile, since=since, until=until)


def signals_of(store: PredictionStore, profiles: dict[str, ScoreProfile], feature_profile: FeatureProfile, *,
               since: datetime | None = None, until: datetime | None = None) -> FeedbackSignals | None:
    """`store_signals` on an open store."""
    served = store.served(since, until)
    pairs = store.pairs(since, until)
    answered = served[served["model_version"].notna() & served["score"].notna()]
    if answered.empty:
        return None
    rows = {str(version): (group["score"].to_numpy(dtype=np.float64), group["decision"].to_numpy(dtype=np.int64))
            for version, group in answered.groupby("model_version", sort=True) if str(version) in profiles}
    logged = answered[answered["features"].notna()]
    # the store keeps schema order; the profile's bins are in contract order
    columns = [FEATURES.index(name) for name in feature_profile.features]
    features = feature_matrix(logged)[:, columns]
    # paired CBPE: every version judged by the newest model's calibration (each candidate is trained
    # on data after its baseline's, so its calibration is the one that has seen what changed)
    reference = newest_version(profiles)
    judged = {version: judged_by(pairs, version, reference)[:2] for version in profiles}
    judged = {version: arrays for version, arrays in judged.items() if len(arrays[0])}
    return feedback_signals(rows, profiles, features, feature_profile, judged=judged, reference=reference)


def newest_version(versions) -> str:
    """The highest registered version ("v10" > "v9"); labels that are not "v<N>" sort first."""
    def number(version: str) -> int:
        return int(version[1:]) if version.startswith("v") and version[1:].isdecimal() else -1

    return max(versions, key=number)


@dataclass(frozen=True)
class MonitoredModels:
    """What the feedback signals compare served rows to, read from model artifact roots."""

    roots: tuple[Path, ...]
    profiles: dict[str, ScoreProfile]  # by model_version ("v2")
    feature_profile: FeatureProfile  # the first root's

    @property
    def versions(self) -> tuple[str, ...]:
        return tuple(self.profiles)


def monitored_models(roots: Sequence[str | Path]) -> MonitoredModels:
    """Each root's score profile under its `model_version`, and the first root's feature profile.

    ValueError naming the root and what is missing: no exported model, no score profile, no
    feature profile (first root), a version given twice, or a model of another feature contract
    than the profile's (its inputs would be compared with another reference window)."""
    if not roots:
        raise ValueError("no model roots given")
    paths = tuple(Path(root) for root in roots)
    profiles: dict[str, ScoreProfile] = {}
    contracts: dict[str, str] = {}
    for root in paths:
        version, contract_id, profile = _read_model(root)
        if version in profiles:
            raise ValueError(f"{root}: model_version {version} is given twice")
        profiles[version], contracts[version] = profile, contract_id
    first = paths[0]
    try:
        feature_profile = export.read_feature_profile(first)
    except FileNotFoundError:
        raise ValueError(f"{first}: no {PROFILE_FILE} beside its feature_contract.json (the model was exported "
                         "without its feature profile)") from None
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"{first}: {PROFILE_FILE} is unreadable ({_one_line(error)})") from None
    for (version, contract_id), root in zip(contracts.items(), paths):
        if contract_id != feature_profile.contract_id:
            raise ValueError(f"{root}: model {version} has feature contract {contract_id}, the feature profile "
                             f"(from {first}) is of {feature_profile.contract_id}")
    return MonitoredModels(paths, profiles, feature_profile)


def _read_model(root: Path) -> tuple[str, str, ScoreProfile]:
    if not root.is_dir():
        raise ValueError(f"{root}: {'not a directory' if root.exists() else 'no such directory'}")
    try:
        version_dir = export.find_version_dir(root)
    except FileNotFoundError as error:
        raise ValueError(f"{error} (not an exported model)") from None
    for name in (export.METADATA_FILE, MONITORING_FILE):
        if not (version_dir / name).is_file():
            raise ValueError(f"{root}: no {name} in {version_dir}")
    try:
        metadata = export.read_metadata(root)
        return str(metadata["model_version"]), str(metadata["contract_id"]), export.read_score_profile(root)
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"{root}: unreadable model metadata or score profile ({_one_line(error)})") from None


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
