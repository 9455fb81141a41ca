"""The pipeline's run parameters and their defaults, in one place.

The `@dsl.pipeline` signature, the local run, the CLI options, the simulation (`DriftSpec`) and
training (`TrainConfig`) all take their defaults from `PipelineConfig`'s fields, so a default is
changed here once. Gate floors live in `fraud.gate.GatePolicy` the same way.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PipelineConfig:
    #: Transactions to simulate (or to resample from a source CSV).
    n_transactions: int = 1_000_000
    #: One seed for the simulation, the weights, dropout and shuffling.
    seed: int = 7
    #: First month (1 = January 2025) with the new fraud pattern.
    drift_start_month: int = 10
    #: Share of fraudulent transactions in generated data.
    fraud_rate: float = 0.0017
    #: Maximum training epochs (early stopping on validation PR-AUC).
    epochs: int = 20
    batch_size: int = 2048
    #: Threshold policy: the highest recall with validation precision at least this.
    min_precision: float = 0.80


DEFAULTS = PipelineConfig()
