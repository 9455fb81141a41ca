"""The predictor's NumPy path is the exported SavedModel's own computation."""
from __future__ import annotations

import numpy as np
import pytest
from fraud.export import SignatureScorer
from fraud.schema import FEATURES
from fraud_serving.scoring import TOLERANCE, NumpyMLP, disagreement, load_artifact, probe_inputs


@pytest.fixture(scope="module")
def artifact(tiny_run):
    return load_artifact(tiny_run.v2)


def test_numpy_path_matches_the_signature_on_the_whole_holdout(tiny_run, artifact):
    assert artifact.path == "numpy"
    scaled = tiny_run.contract.transform(tiny_run.windows["holdout"].loc[:, list(FEATURES)].to_numpy())
    reference = SignatureScorer(tiny_run.v2)(scaled)
    scores = artifact.score(scaled)
    assert scores.fraud_probability.dtype == np.float32 and scores.is_fraud.dtype == np.int32
    assert np.max(np.abs(scores.fraud_probability - reference["fraud_probability"])) <= TOLERANCE
    np.testing.assert_array_equal(scores.is_fraud, reference["is_fraud"])
    assert 0 < reference["is_fraud"].sum() < len(scaled)  # both decisions are compared


def test_weights_that_differ_from_the_signature_are_caught(artifact):
    """What the load-time check sees if the NumPy reading went wrong (here: one bias nudged)."""
    layers = [(kernel.copy(), bias.copy()) for kernel, bias in artifact.score.layers]
    layers[1][1][0] += 0.5
    tampered = NumpyMLP(layers, float(artifact.score.threshold))
    probes = probe_inputs(len(FEATURES))
    gap, _ = disagreement(tampered(probes), artifact.signature(probes), float(artifact.score.threshold))
    assert gap > TOLERANCE
    gap, flips = disagreement(artifact.score(probes), artifact.signature(probes), float(artifact.score.threshold))
    assert gap <= TOLERANCE and flips == 0


def test_metadata_carries_the_version(artifact):
    assert artifact.model_version == "v2"
    assert artifact.n_features == len(FEATURES)
