"""Train the fraud MLP (same architecture for v1 and v2) and tune its decision threshold.

The validation split is the time-ordered tail of the model's own training window; early stopping
and the threshold use only it, never the holdout.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from fraud.contract import FeatureContract
from fraud.pipeline_config import DEFAULTS
from fraud.protocol import FRAUD_PROBABILITY
from fraud.schema import LABEL, DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters; the defaults train a 1,000,000-transaction run's windows in about a minute."""

    epochs: int = DEFAULTS.epochs
    batch_size: int = DEFAULTS.batch_size
    learning_rate: float = 1e-3
    hidden_units: tuple[int, ...] = (128, 64, 32)
    dropout: tuple[float, ...] = (0.3, 0.2, 0.0)
    #: Time-ordered tail of the training window used for early stopping and the threshold.
    validation_fraction: float = 0.2
    patience: int = 4
    seed: int = DEFAULTS.seed
    #: Threshold policy: the highest recall whose validation precision is at least this.
    min_precision: float = DEFAULTS.min_precision

    def check(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise DataError(f"epochs ({self.epochs}) and batch_size ({self.batch_size}) must be positive")
        if not 0 < self.validation_fraction < 1:
            raise DataError(f"validation_fraction {self.validation_fraction} must be in (0, 1)")
        if not 0 < self.min_precision <= 1:
            raise DataError(f"min_precision {self.min_precision} must be in (0, 1]")
        if len(self.dropout) != len(self.hidden_units):
            raise DataError("dropout needs one value per hidden layer")


@dataclass(frozen=True)
class Threshold:
    """A decision threshold and what it gave on the validation split."""

    value: float
    precision: float
    recall: float
    policy: str
    policy_met: bool


@dataclass
class TrainedModel:
    model: object  # keras.Model
    threshold: Threshold
    history: dict[str, list[float]]
    rows: dict[str, int]
    seconds: float
    #: The validation split's labels and scores (what `score_profile` calibrates on).
    validation_labels: np.ndarray
    validation_scores: np.ndarray


def split_time_ordered(frame: pd.DataFrame, validation_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, validation): validation is the latest `validation_fraction` of rows by Time."""
    ordered = frame.sort_values("Time", kind="stable")
    cut = int(round(len(ordered) * (1 - validation_fraction)))
    return ordered.iloc[:cut], ordered.iloc[cut:]


def tune_threshold(labels: np.ndarray, scores: np.ndarray, min_precision: float) -> Threshold:
    """The threshold with the highest recall whose precision is ≥ `min_precision`; if none
    reaches it, the threshold with the best F1 (and `policy_met` False)."""
    policy = f"max recall s.t. precision >= {min_precision:.2f}"
    labels = np.asarray(labels).astype(bool)
    if labels.sum() == 0:
        return Threshold(0.5, 0.0, 0.0, policy, False)
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order]
    # Candidate cut points: the last index of each run of equal scores.
    last = np.r_[np.flatnonzero(np.diff(sorted_scores) != 0), len(sorted_scores) - 1]
    tp = np.cumsum(sorted_labels)[last]
    flagged = last + 1
    precision = tp / flagged
    recall = tp / labels.sum()
    ok = precision >= min_precision
    if ok.any():
        best = np.flatnonzero(ok)[np.argmax(recall[ok])]
        met = True
    else:
        f1 = np.where(tp > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)
        best, met = int(np.argmax(f1)), False
    return Threshold(float(sorted_scores[last[best]]), float(precision[best]), float(recall[best]), policy, met)


def build_model(n_features: int, config: TrainConfig):
    import keras

    inputs = keras.Input(shape=(n_features,), name="scaled_features")
    x = inputs
    for units, rate in zip(config.hidden_units, config.dropout):
        x = keras.layers.Dense(units, activation="relu")(x)
        if rate:
            x = keras.layers.Dropout(rate, seed=config.seed)(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name=FRAUD_PROBABILITY)(x)
    model = keras.Model(inputs, outputs, name="fraud_mlp")
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss="binary_crossentropy",
                  metrics=[keras.metrics.AUC(curve="PR", name="pr_auc")])
    return model


def train(frame: pd.DataFrame, contract: FeatureContract, config: TrainConfig = TrainConfig(),
          on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> TrainedModel:
    """Fit the MLP on `frame` (one training window) with balanced class weights and early stopping
    on the validation tail's PR-AUC, then tune the threshold on that tail."""
    config.check()
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()  # same seed, same weights, same metrics
    started = time.perf_counter()
    fit_part, validation = split_time_ordered(frame, config.validation_fraction)
    for name, part in (("training", fit_part), ("validation", validation)):
        if part[LABEL].sum() == 0:
            raise DataError(f"the {name} split of this window has no fraud; use more transactions")
    x_fit, y_fit = contract.transform_frame(fit_part), fit_part[LABEL].to_numpy(np.float32)
    x_val, y_val = contract.transform_frame(validation), validation[LABEL].to_numpy(np.float32)
    positives = y_fit.mean()
    class_weight = {0: 0.5 / (1 - positives), 1: 0.5 / positives}  # "balanced"

    model = build_model(x_fit.shape[1], config)
    callbacks = [keras.callbacks.EarlyStopping(monitor="val_pr_auc", mode="max", patience=config.patience,
                                               restore_best_weights=True)]
    if on_epoch is not None:
        callbacks.append(keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: on_epoch(epoch, {k: float(v) for k, v in (logs or {}).items()})))
    history = model.fit(x_fit, y_fit, validation_data=(x_val, y_val), epochs=config.epochs,
                        batch_size=config.batch_size, class_weight=class_weight, shuffle=True,
                        callbacks=callbacks, verbose=0)
    scores = model.predict(x_val, batch_size=65_536, verbose=0).ravel()
    threshold = tune_threshold(y_val, scores, config.min_precision)
    log.info("threshold %.4f: validation precision %.3f recall %.3f (%s%s)", threshold.value,
             threshold.precision, threshold.recall, threshold.policy, "" if threshold.policy_met else ", NOT met")
    return TrainedModel(model, threshold, {k: [float(v) for v in vs] for k, vs in history.history.items()},
                        {"train": len(fit_part), "validation": len(validation)}, time.perf_counter() - started,
                        y_val.astype(np.int64), scores.astype(np.float64))


def config_params(config: TrainConfig) -> dict[str, object]:
    """Flat parameters for MLflow."""
    return {k: (",".join(map(str, v)) if isinstance(v, tuple) else v) for k, v in asdict(config).items()}
