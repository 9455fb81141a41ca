"""The story at full size: 1,000,000 transactions, seed 7, the pipeline's own defaults."""
import pytest
from fraud import simulate

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    from fraud_pipelines.local import LocalRunOptions, run_local

    out = tmp_path_factory.mktemp("full")
    return run_local(LocalRunOptions(out_dir=out, serving_state_dir=out / "serving",  # defaults: 1,000,000, seed 7
                                     mlflow_tracking_uri=f"sqlite:///{out / 'mlflow.db'}"))


def test_holdout_is_strictly_later_than_every_training_row():
    frame = simulate.generate(1_000_000, 7)
    parts = simulate.split_windows(frame, simulate.WindowSpec(), simulate.DriftSpec().months)
    last_training_row = max(parts["reference"]["Time"].max(), parts["recent"]["Time"].max())
    assert parts["holdout"]["Time"].min() > last_training_row
    assert parts["pre_drift"]["Time"].max() < parts["recent"]["Time"].min()


def test_baseline_loses_recall_under_drift(full_run):
    v1 = full_run["models"]["v1"]
    assert v1["holdout"]["recall"] <= 0.8 * v1["pre_drift"]["recall"], v1


def test_candidate_meets_the_floors_and_is_promoted(full_run):
    v2 = full_run["models"]["v2"]["holdout"]
    assert v2["f1"] >= 0.75 and v2["precision"] >= 0.80 and v2["recall"] >= 0.70 and v2["pr_auc"] >= 0.70, v2
    assert full_run["mcnemar_p"] < 0.01
    assert full_run["gate"]["decision"] == "promote", full_run["gate"]["reasons"]
    assert full_run["mlflow"]["aliases"]["challenger"] == full_run["mlflow"]["versions"]["v2"]


def test_same_seed_gives_identical_metrics(full_run, tmp_path):
    from fraud_pipelines.local import LocalRunOptions, run_local

    again = run_local(LocalRunOptions(out_dir=tmp_path, serving_state_dir=tmp_path / "serving",
                                      mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"))
    for name in ("v1", "v2"):
        for key in ("threshold", "holdout", "pre_drift", "epochs_run"):
            assert again["models"][name][key] == full_run["models"][name][key], (name, key)
    assert again["mcnemar"] == full_run["mcnemar"] and again["data"]["windows"] == full_run["data"]["windows"]
