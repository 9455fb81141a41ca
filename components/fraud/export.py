"""Export a trained model as a SavedModel in Triton's model-repository layout, and load it back.

    <root>/<model_name>/config.pbtxt
    <root>/<model_name>/<version>/model.savedmodel/     serving_default: scaled_features → fraud_probability, is_fraud
    <root>/<model_name>/<version>/metadata.json         version, contract id, threshold, window, metrics
    <root>/<model_name>/<version>/monitoring.json       offline score profile and calibration (fraud.score_profile)
    <root>/feature_contract.json                         the contract the model was trained with
    <root>/feature_profile.json                          that contract's reference-window bins (fraud.profile)

The decision threshold lives inside the signature (and as the variable collection `threshold`),
so every runtime that serves the artifact decides the same way. A root carries everything the
label-free monitoring needs (`read_score_profile`, `read_feature_profile`); no runtime serves those.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fraud.contract import FeatureContract
from fraud.files import read_json, write_json
from fraud.profile import PROFILE_FILE, FeatureProfile
from fraud.protocol import FRAUD_PROBABILITY, IS_FRAUD
from fraud.score_profile import MONITORING_FILE, ScoreProfile

MODEL_NAME = "fraud-detector"  # also the InferenceService's name: the transformer forwards to its own name
MODEL_DIR = "/mnt/models"  # where KServe's storage initializer puts STORAGE_URI
INPUT_NAME = "scaled_features"
OUTPUTS = (FRAUD_PROBABILITY, IS_FRAUD)
CONTRACT_FILE = "feature_contract.json"
METADATA_FILE = "metadata.json"
SAVEDMODEL_DIR = "model.savedmodel"


def version_label(version: int) -> str:
    """The model_version clients see ("v2") for the numeric Triton version directory (2)."""
    return f"v{version}"


def registered_version(answered: str) -> str:
    """The registered model version ("v2") for the `model_version` a predictor answered: ours
    answers it already; KServe's Triton runtime answers the numeric version directory of the
    export ("2", `version_label`), so metrics, the prediction log and the analysis see one name."""
    return version_label(int(answered)) if answered.isdecimal() else answered


def triton_config(model_name: str, n_features: int, version: int) -> str:
    return f"""name: "{model_name}"
platform: "tensorflow_savedmodel"
max_batch_size: 0
input [
  {{ name: "{INPUT_NAME}" data_type: TYPE_FP32 dims: [ -1, {n_features} ] }}
]
output [
  {{ name: "{FRAUD_PROBABILITY}" data_type: TYPE_FP32 dims: [ -1 ] }},
  {{ name: "{IS_FRAUD}" data_type: TYPE_INT32 dims: [ -1 ] }}
]
version_policy: {{ specific: {{ versions: [ {version} ] }} }}
"""


def export_model(model, threshold: float, contract: FeatureContract, root: str | Path, version: int,
                 metadata: dict, model_name: str = MODEL_NAME, monitoring: ScoreProfile | None = None,
                 feature_profile: FeatureProfile | None = None) -> Path:
    """Write the artifact under `root`; returns the version directory. `monitoring` (the model's
    offline score profile) goes beside metadata.json and `feature_profile` (its contract's) beside
    feature_contract.json, outside what any runtime serves."""
    import keras
    import tensorflow as tf

    if version < 1:
        raise ValueError(f"version must be a positive integer, got {version}")
    if feature_profile is not None and feature_profile.contract_id != contract.id:
        raise ValueError(f"the feature profile is of contract {feature_profile.contract_id}, the model's is {contract.id}")
    root = Path(root)
    version_dir = root / model_name / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    n_features = len(contract.features)
    threshold_var = tf.Variable(float(threshold), dtype=tf.float32, trainable=False, name="threshold")

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_variable_collection("threshold", [threshold_var])

    def serve(scaled_features):
        probability = tf.reshape(model(scaled_features, training=False), [-1])
        return {FRAUD_PROBABILITY: probability,
                IS_FRAUD: tf.cast(probability >= threshold_var, tf.int32)}

    archive.add_endpoint("serving_default", serve,
                         input_signature=[tf.TensorSpec([None, n_features], tf.float32, name=INPUT_NAME)])
    archive.write_out(str(version_dir / SAVEDMODEL_DIR), verbose=False)

    (root / model_name / "config.pbtxt").write_text(triton_config(model_name, n_features, version))
    contract.save(root / CONTRACT_FILE)
    if feature_profile is not None:
        feature_profile.save(root / PROFILE_FILE)
    body = {"model_name": model_name, "version": version, "model_version": version_label(version),
            "contract_id": contract.id, "threshold": float(threshold), **metadata}
    (version_dir / METADATA_FILE).write_text(json.dumps(body, indent=2, default=str))
    if monitoring is not None:
        write_json(version_dir / MONITORING_FILE, monitoring.to_dict())
    return version_dir


def find_version_dir(root: str | Path, model_name: str = MODEL_NAME) -> Path:
    """The single version directory of an artifact root (or the root itself if it is one)."""
    root = Path(root)
    if (root / METADATA_FILE).exists():
        return root
    versions = sorted(p for p in (root / model_name).glob("*") if p.is_dir() and p.name.isdigit())
    if len(versions) != 1:
        raise FileNotFoundError(f"{root}: expected one version directory under {model_name}/, found "
                                f"{[p.name for p in versions] or 'none'}")
    return versions[0]


def read_metadata(root: str | Path) -> dict:
    return json.loads((find_version_dir(root) / METADATA_FILE).read_text())


def read_score_profile(root: str | Path) -> ScoreProfile:
    """The offline score profile and calibration of the model artifact at `root`."""
    path = find_version_dir(root) / MONITORING_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path.parent}: no {MONITORING_FILE}")
    return ScoreProfile.from_dict(read_json(path))


def read_feature_profile(root: str | Path) -> FeatureProfile:
    """The feature profile of the contract the model artifact at `root` was trained with."""
    return FeatureProfile.load(_beside_contract(root, PROFILE_FILE))


def read_contract(root: str | Path) -> FeatureContract:
    return FeatureContract.load(_beside_contract(root, CONTRACT_FILE))


def _beside_contract(root: str | Path, name: str) -> Path:
    """`name` in the artifact root (`root` itself, or the root above the version directory `root`)."""
    root = Path(root)
    for candidate in (root / name, find_version_dir(root).parent.parent / name):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{root}: no {name}")


class SignatureScorer:
    """Scores with the artifact's own serving signature (the reference every other path must match)."""

    def __init__(self, root: str | Path) -> None:
        import tensorflow as tf

        self.version_dir = find_version_dir(root)
        self.loaded = tf.saved_model.load(str(self.version_dir / SAVEDMODEL_DIR))
        self.signature = self.loaded.signatures["serving_default"]

    def __call__(self, scaled: np.ndarray, batch_size: int = 65_536) -> dict[str, np.ndarray]:
        import tensorflow as tf

        parts: dict[str, list[np.ndarray]] = {name: [] for name in OUTPUTS}
        for start in range(0, len(scaled), batch_size):
            batch = tf.constant(np.asarray(scaled[start:start + batch_size], dtype=np.float32))
            result = self.signature(**{INPUT_NAME: batch})
            for name in OUTPUTS:
                parts[name].append(result[name].numpy())
        return {name: np.concatenate(chunks) if chunks else np.empty(0) for name, chunks in parts.items()}
