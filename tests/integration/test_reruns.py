"""Reruns on the same state (DESIGN decision 11): the first run bootstraps v1; after its canary is
promoted (`fraud-rollout canary promote --target local`), a second run takes that champion from the
registry as its baseline, trains only the candidate (with the champion's feature contract: its data
has another seed) and canaries it next to the champion; a rejected third run deploys nothing; and
`fraud-rollout demo` still succeeds after them (its own state dir)."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from fraud import export, registry
from fraud_control.inferenceservice import isvc
from fraud_control.inferenceservice.local_state import LocalInferenceService

from fraud_rollout.pipeline_cli import gate_rejection
from tests.integration.conftest import SMALL_DEMO
from tests.integration.test_pipeline import LOW_FLOORS, small_run_options

pytestmark = pytest.mark.integration

#: A candidate rarely beats a champion that already learned the drift on 60,000 transactions; these
#: let the second run's gate promote, so that its deploy step runs next to the champion.
ANY_GAIN = {**LOW_FLOORS, "gate_min_recall_gain": -1.0, "gate_max_p_value": 1.01, "gate_max_precision_loss": 1.0}
#: No candidate can gain 1000 % recall: the gate rejects.
IMPOSSIBLE_GAIN = {**LOW_FLOORS, "gate_min_recall_gain": 10.0}


def run(out: Path, seed: int, floors: dict, supersede: bool = False) -> dict:
    from dataclasses import replace

    from fraud_pipelines.local import run_local

    options = small_run_options(out)
    console = io.StringIO()
    report = run_local(replace(options, config=replace(options.config, seed=seed), supersede_canary=supersede),
                       console=console, **floors)
    report["console"] = console.getvalue()
    return report


def fraud_rollout(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fraud_rollout", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=1200)


@pytest.fixture(scope="module")
def reruns(tmp_path_factory):
    out = tmp_path_factory.mktemp("reruns")
    first = run(out, seed=0, floors=LOW_FLOORS)
    promoted = fraud_rollout("canary", "promote", "--target", "local", "--state-dir", str(out / "serving"),
                             "--tracking-uri", f"sqlite:///{out / 'mlflow.db'}", cwd=out)
    assert promoted.returncode == 0, promoted.stderr
    second = run(out, seed=1, floors=ANY_GAIN)
    return out, first, promoted, second


def test_the_first_run_bootstraps_v1(reruns):
    _, first, promoted, _ = reruns
    assert first["models"]["v1"]["source"] == "trained" and first["models"]["v1"]["version"] == "v1"
    assert first["gate"]["decision"] == "promote", first["gate"]["reasons"]
    assert f"MLflow: champion = version {first['mlflow']['versions']['v2']}, challenger cleared" in promoted.stdout


def test_the_second_run_gates_against_the_first_runs_champion(reruns):
    _, first, _, second = reruns
    baseline, candidate = second["models"]["v1"], second["models"]["v2"]
    assert baseline["source"] == "champion"
    assert baseline["registry_version"] == first["mlflow"]["versions"]["v2"]
    assert (baseline["version"], candidate["version"]) == ("v2", "v3")  # the candidate gets a new label
    assert candidate["source"] == "trained" and candidate["registry_version"] not in first["mlflow"]["versions"].values()
    # another seed fits another contract; the candidate is trained with the deployed one
    assert second["data"]["contract_id"] != first["data"]["contract_id"]
    assert baseline["contract_id"] == candidate["contract_id"] == first["data"]["contract_id"]
    # and with the deployed contract's feature profile (the drift baseline monitoring reads from the model)
    for model in (baseline, candidate):
        assert export.read_feature_profile(model["artifact"]).contract_id == first["data"]["contract_id"]
    assert baseline["threshold"] == first["models"]["v2"]["threshold"]
    assert baseline["holdout"]["tp"] + baseline["holdout"]["fn"] == second["data"]["windows"]["holdout"]["fraud"]
    assert [line.split()[0] for line in second["console"].splitlines()[1::2]].count("train-model") == 1


def test_the_second_run_canaries_its_candidate_next_to_the_deployed_champion(reruns):
    out, first, _, second = reruns
    service = LocalInferenceService(out / "serving")
    manifest = service.get()
    predictor = manifest["status"]["components"]["predictor"]
    assert manifest["spec"]["predictor"]["canaryTrafficPercent"] == 20
    assert isvc.predictor_storage_uri(manifest) == str(Path(second["models"]["v2"]["artifact"]).resolve())
    assert isvc.predictor_model_version(manifest) == "v3"
    rolled_out = service.revisions()[predictor["latestRolledoutRevision"]]
    assert rolled_out["storageUri"] == str(Path(first["models"]["v2"]["artifact"]).resolve())
    assert [t["percent"] for t in predictor["traffic"]] == [20, 80]
    assert second["mlflow"]["aliases"] == {"champion": first["mlflow"]["versions"]["v2"],
                                           "challenger": second["mlflow"]["versions"]["v2"]}
    assert Path(first["models"]["v2"]["artifact"]).exists()  # the champion's run is kept while it serves


def test_a_rejected_rerun_deploys_nothing_and_names_the_failed_rule(reruns):
    out, first, _, second = reruns
    before = LocalInferenceService(out / "serving").get()
    # run 2's canary still runs: without --supersede the run is refused before any step (test_newcomer);
    # with it, the run goes ahead, and a gate that rejects leaves that canary as it was
    third = run(out, seed=2, floors=IMPOSSIBLE_GAIN, supersede=True)
    assert third["gate"]["decision"] == "reject"
    failed = [r for r in third["gate"]["reasons"] if not r["passed"]]
    # against the champion the candidate may also lose precision; the impossible gain always fails
    assert "recall gain ≥ 1000% relative" in [r["rule"] for r in failed], third["gate"]["reasons"]
    lines = gate_rejection(third).splitlines()
    assert lines[1] == (f"The gate rejected v3: nothing was deployed ({len(failed)} of "
                        f"{len(third['gate']['reasons'])} rules failed)")
    assert any(line.startswith("  FAIL recall gain ≥ 1000% relative: ") for line in lines)
    # its baseline is the champion again (the canary of run 2 is not rolled out)
    assert third["models"]["v1"]["registry_version"] == first["mlflow"]["versions"]["v2"]
    tasks = [line.split()[0] for line in third["console"].splitlines()[1:]]
    assert "deploy-canary" not in tasks and "register-models" not in tasks
    assert LocalInferenceService(out / "serving").get() == before
    assert registry.aliases(third["mlflow"]["tracking_uri"]) == second["mlflow"]["aliases"]


def test_the_demo_succeeds_after_the_pipeline_runs(reruns):
    out, *_ = reruns
    demo = fraud_rollout("demo", *SMALL_DEMO, "--out", str(out / "demo"), "--no-progress",
                         "--mlflow-tracking-uri", f"sqlite:///{out / 'mlflow.db'}", cwd=out)
    assert demo.returncode == 0, demo.stderr[-3000:]
    report = json.loads((out / "demo" / "report.json").read_text())
    assert report["pipeline"]["models"]["v1"]["source"] == "trained"  # the demo tells the first run's story
    assert report["paths"]["state_dir"] == str(out / "demo" / "serving")  # under its --out, its own
    assert LocalInferenceService(out / "serving").get()["spec"]["predictor"]["canaryTrafficPercent"] == 20
