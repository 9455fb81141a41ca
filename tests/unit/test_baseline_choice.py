"""A rerun's baseline (DESIGN decision 11): the deployed champion, found through the store interface
(the same `deployed_champion` runs on the Kubernetes API and on the local state dir), with MLflow's
`champion` alias only when nothing is deployed; none on a first run (bootstrap v1)."""
from __future__ import annotations

import json

import pytest
from fraud import registry
from fraud.settings import Settings
from fraud_control.canary import operations as canary
from fraud_control.canary.registry_aliases import Champion, champion_for, choose_champion, deployed_champion
from fraud_control.inferenceservice.local_store import LocalStore
from fraud_control.inferenceservice.store import RolloutRefused

from tests.unit.test_serving_local_state import artifact_root, spec


def test_the_rolled_out_model_wins_over_a_stale_alias(caplog):
    chosen = choose_champion(rolled_out=3, alias=5, where="ns/fraud-detector")
    assert chosen == Champion(3, "rolled-out model of ns/fraud-detector", 5)
    assert "fraud-detector@champion is version 5, but ns/fraud-detector rolls out version 3" in caplog.text


def test_the_alias_counts_when_nothing_is_deployed_and_a_first_run_bootstraps():
    assert choose_champion(rolled_out=None, alias=4, where="x") == Champion(4, "alias champion", 4)
    assert choose_champion(rolled_out=None, alias=None, where="x") is None


def test_train_means_no_champion_and_a_bad_choice_is_named(tmp_path):
    assert champion_for("train", "local", "ns", tmp_path, "sqlite:///unused.db", False) is None
    with pytest.raises(ValueError, match="baseline_from must be 'champion' or 'train', got 'latest'"):
        champion_for("latest", "local", "ns", tmp_path, "sqlite:///unused.db", False)


def register(tracking_uri: str, root, label: str) -> int:
    """Log `root` as a new registered version and record its run id in its metadata (as train_step does)."""
    info = registry.log_training(tracking_uri, run_name=f"train-{label}", params={}, history={}, metrics={},
                                 artifact_root=root, tags={"model_version": label})
    metadata = root / "fraud-detector" / label.removeprefix("v") / "metadata.json"
    metadata.write_text(json.dumps({"model_version": label, "mlflow": info}))
    return info["registered_version"]


def test_the_deployed_champion_through_a_store_before_and_after_promote(tmp_path):
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store = LocalStore(tmp_path / "serving")
    assert deployed_champion(store, tracking_uri) is None  # nothing registered, nothing deployed
    v1, v2 = artifact_root(tmp_path / "a", 1), artifact_root(tmp_path / "b", 2)
    first, second = register(tracking_uri, v1, "v1"), register(tracking_uri, v2, "v2")
    registry.set_alias(tracking_uri, registry.CHAMPION, first)
    assert deployed_champion(store, tracking_uri) == Champion(first, "alias champion", first)

    canary.deploy_canary(store, spec(v2, 2), spec(v1, 1))
    registry.set_alias(tracking_uri, registry.CHAMPION, second)  # moved by hand, not by a promote
    during = deployed_champion(store, tracking_uri)
    assert during == Champion(first, f"rolled-out model of {store.where}", second)

    canary.promote(store, tracking_uri=tracking_uri)
    assert deployed_champion(store, tracking_uri) == Champion(second, f"rolled-out model of {store.where}", second)


def test_a_rolled_out_model_the_registry_does_not_know_is_refused(tmp_path):
    store = LocalStore(tmp_path / "serving")
    v1, v2 = artifact_root(tmp_path / "a", 1), artifact_root(tmp_path / "b", 2)
    canary.deploy_canary(store, spec(v2, 2), spec(v1, 1))
    other_registry = f"sqlite:///{tmp_path / 'other.db'}"
    with pytest.raises(RolloutRefused) as refused:
        deployed_champion(store, other_registry)
    assert str(refused.value) == (
        f"{store.where} rolls out v1 ({v1}), which the MLflow registry at {other_registry} does not know, so a "
        "rerun cannot gate against it; use the registry it was registered in (--mlflow-tracking-uri) or another "
        "serving state dir")


def test_a_champion_exported_without_a_feature_profile_gets_this_runs_only_for_the_same_contract(tmp_path):
    import pandas as pd
    from fraud.contract import fit_contract
    from fraud.export import read_contract, read_feature_profile
    from fraud.profile import PROFILE_FILE, FeatureProfile, fit_feature_profile
    from fraud.schema import FEATURES
    from fraud.steps import baseline_step
    from fraud.train import TrainConfig

    from tests.prediction_log import features

    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    champion = artifact_root(tmp_path / "a", 1)  # no feature_profile.json, as exported before there was one
    version = register(tracking_uri, champion, "v1")
    reference = pd.DataFrame(features(2000), columns=list(FEATURES))
    same = fit_feature_profile(reference, read_contract(champion)).save(tmp_path / "same" / PROFILE_FILE)
    other = fit_feature_profile(reference, fit_contract(reference))  # another contract: this run's own
    other_path = other.save(tmp_path / "other" / PROFILE_FILE)

    def baseline(profile_path, out):
        return baseline_step("", str(champion / "feature_contract.json"), str(profile_path), str(out / "model"),
                             str(out / "contract.json"), str(out / "profile.json"), champion_version=version,
                             config=TrainConfig(), settings=Settings(), mlflow_tracking_uri=tracking_uri,
                             found_by="alias champion")

    result = baseline(same, tmp_path / "run1")
    assert result["source"] == "champion" and result["candidate_version"] == 2
    assert read_feature_profile(tmp_path / "run1" / "model") == FeatureProfile.load(same)
    assert FeatureProfile.load(tmp_path / "run1" / "profile.json") == FeatureProfile.load(same)
    with pytest.raises(FileNotFoundError) as missing:
        baseline(other_path, tmp_path / "run2")
    assert str(missing.value) == (
        f"champion (registered version {version}) has no feature_profile.json (exported before models carried one) "
        f"and its contract {read_contract(champion).id} is not this run's ({other.contract_id}): train a new "
        "baseline with baseline_from=train")

