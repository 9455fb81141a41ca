"""Pipeline steps over files: each reads its inputs from paths, calls the pure core, writes its
outputs and returns what the KFP wrapper logs. The wrappers in `fraud_kfp` only move paths."""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from fraud import evaluate, export, gate, registry, simulate
from fraud.contract import FeatureContract, fit_contract
from fraud.files import read_json, write_json
from fraud.pipeline_config import DEFAULTS
from fraud.profile import PROFILE_FILE, FeatureProfile, fit_feature_profile
from fraud.protocol import FRAUD_PROBABILITY, IS_FRAUD
from fraud.schema import LABEL, DataError, check_transactions
from fraud.score_profile import fit_score_profile
from fraud.settings import Settings
from fraud.train import TrainConfig, config_params, train

log = logging.getLogger(__name__)
WINDOW_NAMES = ("reference", "pre_drift", "recent", "holdout")


def simulate_step(window_paths: dict[str, str], contract_path: str, profile_path: str, summary_path: str, *,
                  n_transactions: int, seed: int, drift_start_month: int = DEFAULTS.drift_start_month,
                  fraud_rate: float = DEFAULTS.fraud_rate, source_csv: str = "") -> dict:
    """Generate (or enrich `source_csv`), cut the windows, fit the feature contract and its feature
    profile on reference."""
    started = time.perf_counter()
    drift = simulate.DriftSpec(drift_start_month=drift_start_month, fraud_rate=fraud_rate)
    windows = simulate.WindowSpec()
    simulate.check_specs(drift, windows)
    if source_csv:
        log.info("enriching %s to %d transactions (seed %d)", source_csv, n_transactions, seed)
        frame = simulate.enrich(_read_csv(source_csv), n_transactions, seed, drift)
    else:
        log.info("generating %d transactions (seed %d)", n_transactions, seed)
        frame = simulate.generate(n_transactions, seed, drift)
    parts = simulate.split_windows(frame, windows, drift.months)
    for name in WINDOW_NAMES:
        Path(window_paths[name]).parent.mkdir(parents=True, exist_ok=True)
        parts[name].to_parquet(window_paths[name], index=False)
        log.info("window %-9s %s", name, simulate.summarize_window(parts[name]))
    contract = fit_contract(parts["reference"])
    contract.save(contract_path)
    fit_feature_profile(parts["reference"], contract).save(profile_path)
    summary = {
        "n_transactions": int(len(frame)), "seed": seed, "source": source_csv or "generated",
        "drift": {"start_month": drift.drift_start_month, "months": drift.months, "fraud_rate": drift.fraud_rate,
                  "new_pattern_share": drift.new_pattern_share, "new_pattern_shift": drift.new_pattern_shift,
                  "new_pattern_amount_factor": drift.new_pattern_amount_factor,
                  "legit_shift_std": drift.legit_shift_std, "legit_amount_factor": drift.legit_amount_factor},
        "windows": {name: {**simulate.summarize_window(parts[name]), "months": list(span)}
                    for name, span in windows.items()},
        "monthly_profile": simulate.monthly_profile(frame, drift.months),
        "contract_id": contract.id,
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_json(summary_path, summary)
    return summary


def _read_csv(path: str) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read source CSV {path}: {error}") from None
    check_transactions(frame, source=f"source CSV {path}")
    return frame


def train_step(dataset_path: str, contract_path: str, profile_path: str, model_dir: str, *, version: int,
               window: str, config: TrainConfig, settings: Settings, mlflow_tracking_uri: str = "") -> dict:
    """Train on one window, export the artifact (with the contract's feature profile, for
    monitoring) into `model_dir`, log and register it in MLflow."""
    frame = pd.read_parquet(dataset_path)
    contract = FeatureContract.load(contract_path)
    feature_profile = FeatureProfile.load(profile_path)
    if feature_profile.contract_id != contract.id:
        raise ValueError(f"feature profile {profile_path} is of contract {feature_profile.contract_id}, "
                         f"not of {contract_path} ({contract.id})")

    def progress(epoch: int, logs: dict[str, float]) -> None:
        log.info("v%d epoch %d/%d: %s", version, epoch + 1, config.epochs,
                 " ".join(f"{k}={v:.4f}" for k, v in logs.items()))

    log.info("training v%d on %s: %d rows, %d fraud", version, window, len(frame), int(frame[LABEL].sum()))
    trained = train(frame, contract, config, on_epoch=progress)
    metadata = {"window": window, "train_rows": trained.rows["train"],
                "validation_rows": trained.rows["validation"], "epochs_run": len(trained.history.get("loss", [])),
                "threshold_policy": trained.threshold.policy, "threshold_policy_met": trained.threshold.policy_met,
                "validation_precision": trained.threshold.precision, "validation_recall": trained.threshold.recall,
                "train_seconds": round(trained.seconds, 2)}
    monitoring = fit_score_profile(trained.validation_labels, trained.validation_scores, trained.threshold.value)
    export.export_model(trained.model, trained.threshold.value, contract, model_dir, version, metadata,
                        monitoring=monitoring, feature_profile=feature_profile)
    tracking_uri = registry.resolve_tracking_uri(mlflow_tracking_uri or settings.MLFLOW_TRACKING_URI, in_pod=settings.in_cluster)
    mlflow_info = registry.log_training(
        tracking_uri, run_name=f"train-{export.version_label(version)}", params=config_params(config),
        history=trained.history, artifact_root=model_dir,
        metrics={"threshold": trained.threshold.value, "validation_precision": trained.threshold.precision,
                 "validation_recall": trained.threshold.recall},
        tags={"model_version": export.version_label(version), "window": window, "contract_id": contract.id})
    metadata = {**export.read_metadata(model_dir), "mlflow": {**mlflow_info, "tracking_uri": tracking_uri}}
    write_json(export.find_version_dir(model_dir) / export.METADATA_FILE, metadata)
    return metadata


def _score(model_dir: str, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    contract = export.read_contract(model_dir)  # each model is fed through its own contract
    return export.SignatureScorer(model_dir)(contract.transform_frame(frame))


def evaluate_step(baseline_dir: str, candidate_dir: str, holdout_path: str, pre_drift_path: str,
                  summary_path: str, evaluation_path: str) -> dict:
    """Score both models on the holdout and the pre-drift slice; McNemar on the holdout."""
    started = time.perf_counter()
    data = {"holdout": pd.read_parquet(holdout_path), "pre_drift": pd.read_parquet(pre_drift_path)}
    models: dict[str, dict] = {}
    decisions = {}
    for name, model_dir in (("v1", baseline_dir), ("v2", candidate_dir)):
        meta = export.read_metadata(model_dir)
        registered = meta.get("mlflow", {}).get("registered_version")
        models[name] = {"version": meta["model_version"], "registered_version": registered,
                        "source": meta.get("source", "trained"), "registry_version": registered,
                        "threshold": meta["threshold"], "contract_id": meta["contract_id"], "window": meta.get("window"),
                        "train_seconds": meta.get("train_seconds"), "epochs_run": meta.get("epochs_run")}
        for slice_name, frame in data.items():
            scored = _score(model_dir, frame)
            labels = frame[LABEL].to_numpy()
            models[name][slice_name] = evaluate.classification_metrics(labels, scored[FRAUD_PROBABILITY], scored[IS_FRAUD])
            if slice_name == "holdout":
                decisions[name] = scored[IS_FRAUD]
                models[name]["curves"] = evaluate.curve_points(labels, scored[FRAUD_PROBABILITY])
        models[name]["recall_change_pre_drift_to_holdout"] = evaluate.relative_change(
            models[name]["holdout"]["recall"], models[name]["pre_drift"]["recall"])
    mcnemar = evaluate.mcnemar_exact(data["holdout"][LABEL].to_numpy(), decisions["v1"], decisions["v2"])
    summary = read_json(summary_path)
    evaluation = {"data": {"n_transactions": summary["n_transactions"], "seed": summary["seed"],
                           "source": summary["source"], "drift": summary["drift"], "windows": summary["windows"],
                           "contract_id": summary["contract_id"], "simulate_seconds": summary["seconds"]},
                  "models": models, "mcnemar": mcnemar, "mcnemar_p": mcnemar["p_value"],
                  "seconds": round(time.perf_counter() - started, 2)}
    write_json(evaluation_path, evaluation)
    return evaluation


def gate_step(evaluation_path: str, gate_path: str, markdown_path: str, policy: gate.GatePolicy) -> gate.GateResult:
    """Apply the gate to an evaluation; write the decision and every reason."""
    evaluation = read_json(evaluation_path)
    v1, v2 = evaluation["models"]["v1"], evaluation["models"]["v2"]
    result = gate.decide(v1["holdout"], v2["holdout"], evaluation["mcnemar_p"], v1["contract_id"], v2["contract_id"], policy)
    write_json(gate_path, {**result.to_dict(), "policy": policy.__dict__})
    Path(markdown_path).write_text(result.to_markdown(policy))
    log.info("gate decision: %s", result.decision)
    for reason in result.reasons:
        log.info("  %s %s: %s", "pass" if reason.passed else "FAIL", reason.rule, reason.detail)
    return result


def baseline_step(dataset_path: str, contract_path: str, profile_path: str, model_dir: str, contract_out: str,
                  profile_out: str, *, champion_version: int | None, config: TrainConfig, settings: Settings,
                  mlflow_tracking_uri: str = "", found_by: str = "") -> dict:
    """The baseline a candidate is gated against: registered version `champion_version` copied from
    the registry, else v1 trained on the reference window (the first run bootstraps). Writes the
    baseline's feature contract to `contract_out` and its feature profile to `profile_out` (the
    candidate must use the deployed transformer's contract) and returns its metadata with `source`,
    `registry_version` and `candidate_version`."""
    tracking_uri = registry.resolve_tracking_uri(mlflow_tracking_uri or settings.MLFLOW_TRACKING_URI, in_pod=settings.in_cluster)
    if champion_version is None:
        metadata = {**train_step(dataset_path, contract_path, profile_path, model_dir, version=1,
                                 window="reference", config=config, settings=settings,
                                 mlflow_tracking_uri=tracking_uri),
                    "source": "trained"}
    else:
        mlflow_info = registry.download_version(tracking_uri, champion_version, model_dir)
        metadata = {**export.read_metadata(model_dir), "source": "champion", "found_by": found_by,
                    "mlflow": {**mlflow_info, "tracking_uri": tracking_uri}}
        log.info("baseline: champion %s (registered version %s, %s)", metadata["model_version"],
                 champion_version, found_by)
        _champion_feature_profile(model_dir, profile_path, champion_version)
    write_json(export.find_version_dir(model_dir) / export.METADATA_FILE, metadata)
    export.read_contract(model_dir).save(contract_out)
    export.read_feature_profile(model_dir).save(profile_out)
    number = int(export.find_version_dir(model_dir).name)
    return {**metadata, "registry_version": metadata["mlflow"]["registered_version"], "candidate_version": number + 1}


def _champion_feature_profile(model_dir: str, profile_path: str, champion_version: int) -> None:
    """A champion exported before models carried their feature profile gets this run's when both
    have the same contract (the same reference window); with another contract there is none to give."""
    root = Path(model_dir)
    if (root / PROFILE_FILE).exists():
        return
    contract, profile = export.read_contract(root), FeatureProfile.load(profile_path)
    if profile.contract_id != contract.id:
        raise FileNotFoundError(
            f"champion (registered version {champion_version}) has no {PROFILE_FILE} (exported before models "
            f"carried one) and its contract {contract.id} is not this run's ({profile.contract_id}): "
            "train a new baseline with baseline_from=train")
    profile.save(root / PROFILE_FILE)
    log.info("baseline: champion has no %s; its contract's is this run's", PROFILE_FILE)


def register_step(baseline_dir: str, candidate_dir: str, settings: Settings,
                  mlflow_tracking_uri: str = "") -> dict[str, int]:
    """Candidate → alias `challenger`; the baseline becomes `champion` if none is set yet."""
    tracking_uri = registry.resolve_tracking_uri(mlflow_tracking_uri or settings.MLFLOW_TRACKING_URI, in_pod=settings.in_cluster)
    baseline = export.read_metadata(baseline_dir)["mlflow"]["registered_version"]
    candidate = export.read_metadata(candidate_dir)["mlflow"]["registered_version"]
    if registry.CHAMPION not in registry.aliases(tracking_uri):
        registry.set_alias(tracking_uri, registry.CHAMPION, baseline)
    registry.set_alias(tracking_uri, registry.CHALLENGER, candidate)
    return registry.aliases(tracking_uri)


def train_config(*, epochs: int, batch_size: int, seed: int, min_precision: float) -> TrainConfig:
    return replace(TrainConfig(), epochs=epochs, batch_size=batch_size, seed=seed, min_precision=min_precision)
