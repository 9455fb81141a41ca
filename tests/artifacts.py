"""Small real artifacts for tests: two models trained on a tiny drifting data set and exported
exactly as the pipeline exports them."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from fraud import simulate
from fraud.contract import FeatureContract, fit_contract
from fraud.export import export_model
from fraud.profile import fit_feature_profile
from fraud.score_profile import fit_score_profile
from fraud.train import TrainConfig, train

#: A high fraud rate lets 40,000 rows train a useful model in seconds.
TINY_DRIFT = simulate.DriftSpec(fraud_rate=0.02)


@dataclass(frozen=True)
class TinyRun:
    windows: dict[str, pd.DataFrame]
    contract: FeatureContract
    v1: Path  # artifact roots, as the pipeline's train step writes them
    v2: Path


def build_tiny_run(root: Path, n_transactions: int = 40_000, seed: int = 7, epochs: int = 3) -> TinyRun:
    frame = simulate.generate(n_transactions, seed, TINY_DRIFT)
    windows = simulate.split_windows(frame, simulate.WindowSpec(), TINY_DRIFT.months)
    contract = fit_contract(windows["reference"])
    feature_profile = fit_feature_profile(windows["reference"], contract)
    roots = {}
    for version, window in ((1, "reference"), (2, "recent")):
        trained = train(windows[window], contract, TrainConfig(epochs=epochs, seed=seed))
        roots[version] = root / f"v{version}"
        profile = fit_score_profile(trained.validation_labels, trained.validation_scores, trained.threshold.value)
        export_model(trained.model, trained.threshold.value, contract, roots[version], version,
                     {"window": window}, monitoring=profile, feature_profile=feature_profile)
    return TinyRun(windows, contract, roots[1], roots[2])
