"""The compiled pipeline and a real kfp.local run of it on small data."""
import io
import json
from pathlib import Path

import pytest
import yaml
from fraud import export
from fraud.evaluate import METRICS
from fraud_pipelines import pipeline, progressive
from fraud_pipelines.pipeline import COMPILED

pytestmark = pytest.mark.integration
#: Both committed pipelines: the main one and the one-step progressive rollout.
PIPELINES = pytest.mark.parametrize("module", [pipeline, progressive], ids=["main", "progressive"])


@PIPELINES
def test_committed_yaml_is_what_the_code_compiles(tmp_path, module):
    fresh = module.compile_pipeline(tmp_path / "pipeline.yaml")
    assert fresh.read_text() == module.COMPILED.read_text(), \
        f"run `make compile` and commit pipelines/{module.COMPILED.name}"


@PIPELINES
def test_the_committed_yaml_says_its_image_is_unpublished_and_one_for_a_pushed_image_does_not(tmp_path, module):
    from fraud_control.inferenceservice.isvc import DEFAULT_IMAGE as SERVING_IMAGE
    from fraud_kfp import DEFAULT_IMAGE

    committed = module.COMPILED.read_text()
    unpublished = f"{DEFAULT_IMAGE} and {SERVING_IMAGE} are the names of images" if module is pipeline else \
        f"{DEFAULT_IMAGE} is the name of an image"
    assert committed.startswith(f"# Image: {unpublished} that {'are' if module is pipeline else 'is'} NOT published.")
    pushed_serving = {"serving_image": "registry.example.com/team/serving:0.1.0-def"} if module is pipeline else {}
    pushed = module.compile_pipeline(tmp_path / "pipeline.yaml", image="registry.example.com/team/components:0.1.0-abc",
                                     **pushed_serving)
    text = pushed.read_text()
    assert text.startswith("# PIPELINE DEFINITION") and "ghcr.io" not in text
    assert text.count("image: registry.example.com/team/components:0.1.0-abc") == committed.count(f"image: {DEFAULT_IMAGE}")


def test_compiled_dag_and_gate_condition():
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    documents = list(yaml.safe_load_all(COMPILED.read_text()))  # pipeline spec, then platform spec
    spec = json_format.ParseDict(documents[0], pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=True)
    tasks = spec.root.dag.tasks
    assert set(tasks) == {"simulate-drift", "baseline-model", "train-model", "evaluate-models", "gate-candidate",
                          "condition-1"}
    assert set(tasks["evaluate-models"].dependent_tasks) == {"simulate-drift", "baseline-model", "train-model"}
    assert list(tasks["baseline-model"].dependent_tasks) == ["simulate-drift"]
    # the candidate is trained with the baseline's contract and gets the version after the baseline's
    assert set(tasks["train-model"].dependent_tasks) == {"simulate-drift", "baseline-model"}
    candidate_inputs = tasks["train-model"].inputs
    assert candidate_inputs.parameters["version"].task_output_parameter.producer_task == "baseline-model"
    assert candidate_inputs.artifacts["feature_contract"].task_output_artifact.output_artifact_key == "baseline_contract"
    # ... and its feature profile, which the model artifact carries for drift monitoring (a KFP
    # artifact of its own: on a cluster each output artifact is uploaded on its own)
    profile_input = candidate_inputs.artifacts["feature_profile"].task_output_artifact
    assert (profile_input.producer_task, profile_input.output_artifact_key) == ("baseline-model", "baseline_profile")
    bootstrap_profile = tasks["baseline-model"].inputs.artifacts["feature_profile"].task_output_artifact
    assert (bootstrap_profile.producer_task, bootstrap_profile.output_artifact_key) == ("simulate-drift", "feature_profile")
    condition = tasks["condition-1"].trigger_policy.condition
    assert condition == "inputs.parameter_values['pipelinechannel--gate-candidate-Output'] == 'promote'"
    branch = spec.components[tasks["condition-1"].component_ref.name].dag.tasks
    assert set(branch) == {"deploy-canary", "register-models"}
    assert list(branch["register-models"].dependent_tasks) == ["deploy-canary"]
    # The deploy step reads the S3 credentials from a Secret, never from the YAML.
    secrets = documents[1]["platforms"]["kubernetes"]
    secret_env = secrets["deploymentSpec"]["executors"]["exec-deploy-canary"]["secretAsEnv"][0]
    assert secret_env["secretName"] == "fraud-detector-s3"
    assert {k["envVar"] for k in secret_env["keyToEnv"]} >= {"S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    # Every component runs our image without installing kfp at run time.
    executors = spec.deployment_spec["executors"]
    images = {e["container"]["image"] for e in executors.values()}
    assert images == {"ghcr.io/fraud-rollout/components:0.1.0"}
    assert not any("pip install" in " ".join(e["container"]["command"]) for e in executors.values())
    # Docstrings become input descriptions in the Kubeflow UI.
    simulate = spec.components["comp-simulate-drift"].input_definitions.parameters
    assert "Random seed" in simulate["seed"].description


def test_caching_is_off_for_exactly_baseline_training_deploy_and_registration():
    # KFP caches by default; a cached deploy or registration would skip the rollout (DESIGN decision 11).
    documents = list(yaml.safe_load_all(COMPILED.read_text()))
    root = documents[0]["root"]["dag"]["tasks"]
    branch = documents[0]["components"][root["condition-1"]["componentRef"]["name"]]["dag"]["tasks"]
    caching = {name: task.get("cachingOptions", {}).get("enableCache", False)
               for name, task in {**root, **branch}.items() if name != "condition-1"}
    assert caching == {"simulate-drift": True, "baseline-model": False, "train-model": False,
                       "evaluate-models": True, "gate-candidate": True, "deploy-canary": False,
                       "register-models": False}


#: Small data cannot reach the production floors; lower them so the promote branch runs too.
LOW_FLOORS = {"gate_min_f1": 0.5, "gate_min_precision": 0.5, "gate_min_recall": 0.5, "gate_min_pr_auc": 0.5}


def small_run_options(out: Path):
    from fraud.pipeline_config import PipelineConfig
    from fraud_pipelines.local import LocalRunOptions

    return LocalRunOptions(out_dir=out, config=PipelineConfig(n_transactions=60_000, fraud_rate=0.02, epochs=3),
                           mlflow_tracking_uri=f"sqlite:///{out / 'mlflow.db'}", serving_state_dir=out / "serving")


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    from fraud_pipelines.local import run_local

    out = tmp_path_factory.mktemp("run")
    console = io.StringIO()
    report = run_local(small_run_options(out), console=console, **LOW_FLOORS)
    (out / "console.txt").write_text(console.getvalue())
    return out, report


def test_console_shows_one_line_per_task_start_and_finish_and_the_log_the_rest(local_run):
    out, report = local_run
    lines = (out / "console.txt").read_text().splitlines()
    tasks = ["simulate-drift", "baseline-model", "train-model", "evaluate-models", "gate-candidate", "deploy-canary",
             "register-models"]
    assert lines[0] == f"pipeline run {report['run']['id']} (kfp.local, in-process); its log: {out / 'logs' / 'pipeline.log'}"
    # kfp.local runs one task at a time, in an order of its choosing
    pairs = [(a.split()[:2], b.split()[:2]) for a, b in zip(lines[1::2], lines[2::2])]
    assert sorted(started[0] for started, _ in pairs) == sorted(tasks) and len(lines) == 1 + 2 * len(tasks)
    assert all(started[1] == "started" and finished == [started[0], "success"] for started, finished in pairs)
    for task in tasks:
        finished = next(line for line in lines if line.split()[:2] == [task, "success"])
        assert finished.split()[-2:] == [f"{report['timings']['tasks_wall'][task]:.1f}", "s"]
    log_text = (out / "logs" / "pipeline.log").read_text()
    assert "\x1b" not in log_text
    assert log_text.count("Executing task '") == len(tasks) and 'Got executor_input:' in log_text
    assert "v2 epoch 3/3" in log_text


def test_a_local_run_executes_the_compiled_yaml_which_is_the_committed_one(local_run):
    _, report = local_run
    executed = Path(report["run"]["pipeline_yaml"])
    assert executed.parent == Path(report["run"]["dir"]) and executed.read_text() == COMPILED.read_text()
    assert report["models"]["v1"]["source"] == "trained" and report["models"]["v2"]["source"] == "trained"
    assert report["models"]["v1"]["registry_version"] == report["mlflow"]["versions"]["v1"]


def test_each_run_writes_into_its_own_directory(local_run):
    out, report = local_run
    run_dir = out / "runs" / report["run"]["id"]
    assert json.loads((run_dir / "report.json").read_text()) == json.loads((out / "report.json").read_text())
    for path in report["artifacts"].values():
        assert Path(path).is_relative_to(run_dir / "kfp") and Path(path).exists()


def test_local_run_writes_the_report(local_run):
    out, report = local_run
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(report))
    windows = report["data"]["windows"]
    for name in ("reference", "recent", "holdout"):
        assert {"start", "end", "rows", "fraud"} <= set(windows[name])
    assert windows["holdout"]["start"] > windows["recent"]["end"] > windows["reference"]["end"]
    assert sum(w["rows"] for w in windows.values()) == 60_000
    for name in ("v1", "v2"):
        model = report["models"][name]
        assert model["version"] == name and 0 < model["threshold"] < 1
        assert model["contract_id"] == report["data"]["contract_id"]
        for slice_name in ("holdout", "pre_drift"):
            metrics = model[slice_name]
            assert set(METRICS) <= set(metrics)
        holdout = model["holdout"]
        assert holdout["tp"] + holdout["fp"] + holdout["tn"] + holdout["fn"] == windows["holdout"]["rows"]
        assert holdout["tp"] + holdout["fn"] == windows["holdout"]["fraud"]
    assert 0 <= report["mcnemar_p"] <= 1
    assert set(report["timings"]["tasks_wall"]) >= {"simulate-drift", "train-model", "evaluate-models"}


def test_promote_branch_deploys_the_canary_and_registers_the_challenger(local_run):
    _, report = local_run
    assert report["gate"]["decision"] == "promote", report["gate"]["reasons"]
    assert len(report["gate"]["reasons"]) == 9 and all(r["passed"] for r in report["gate"]["reasons"])
    versions = report["mlflow"]["versions"]
    assert report["mlflow"]["aliases"] == {"champion": versions["v1"], "challenger": versions["v2"]}


def test_exported_artifacts_have_the_triton_layout(local_run):
    _, report = local_run
    for name, number in (("v1", 1), ("v2", 2)):
        root = Path(report["models"][name]["artifact"])
        version_dir = root / export.MODEL_NAME / str(number)
        assert (version_dir / "model.savedmodel" / "saved_model.pb").exists()
        config = (root / export.MODEL_NAME / "config.pbtxt").read_text()
        assert 'platform: "tensorflow_savedmodel"' in config and f"versions: [ {number} ]" in config
        assert export.read_metadata(root)["model_version"] == name
        assert export.read_contract(root).id == report["data"]["contract_id"]
        assert export.read_feature_profile(root).contract_id == report["data"]["contract_id"]
        assert export.read_score_profile(root).threshold == report["models"][name]["threshold"]


def test_mlflow_holds_runs_with_epoch_metrics(local_run):
    import mlflow

    _, report = local_run
    client = mlflow.MlflowClient(report["mlflow"]["tracking_uri"])
    for name in ("v1", "v2"):
        version = client.get_model_version("fraud-detector", str(report["mlflow"]["versions"][name]))
        history = client.get_metric_history(version.run_id, "epoch_val_pr_auc")
        assert len(history) == report["models"][name]["epochs_run"] >= 1
        assert version.tags["model_version"] == name
        params = client.get_run(version.run_id).data.params
        assert params["epochs"] == "3" and params["hidden_units"] == "128,64,32"


def test_deploy_step_leaves_a_canary_that_serve_splits_80_20_and_a_rerun_keeps_its_models(local_run, tmp_path):
    import subprocess

    import httpx
    import numpy as np
    from fraud.processes import free_port
    from fraud.protocol import request_body
    from fraud.schema import FEATURES
    from fraud_control.inferenceservice.local_state import LocalInferenceService
    from fraud_pipelines.local import RunRefused, run_local

    from tests.integration.serving_fixtures import FRAUD_ROLLOUT, LocalRuntimeHandle

    out, report = local_run
    state = out / "serving"
    manifest = LocalInferenceService(state).get()
    predictor = manifest["status"]["components"]["predictor"]
    assert manifest["spec"]["predictor"]["canaryTrafficPercent"] == 20
    assert [t["percent"] for t in predictor["traffic"]] == [20, 80]
    assert predictor["latestRolledoutRevision"] == "fraud-detector-predictor-00001"
    assert predictor["latestReadyRevision"] == "fraud-detector-predictor-00002"

    port = free_port()
    with open(tmp_path / "serve.log", "wb") as log:
        process = subprocess.Popen([*FRAUD_ROLLOUT, "serve", "--state-dir", str(state), "--http-port", str(port)],
                                   stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        LocalRuntimeHandle(process, state, port, tmp_path / "serve.log").wait_applied()
        rows = np.abs(np.random.default_rng(0).normal(size=(2_000, len(FEATURES))))
        served = []
        with httpx.Client(timeout=30) as client:
            for row in rows:
                response = client.post(f"http://127.0.0.1:{port}/v2/models/fraud-detector/infer", json=request_body(row[None, :]))
                assert response.status_code == 200, response.text
                served.append(response.json()["model_version"])
        # A rerun into the same --out while serve runs: refused before any step (it once trained for
        # the deploy step to refuse, and deleted the report of the run whose canary runs), naming the
        # running canary and the ways on; the report and the served models stay.
        before = (out / "report.json").read_bytes()
        runs = sorted((out / "runs").iterdir())
        with pytest.raises(RunRefused) as refused:
            run_local(small_run_options(out), console=io.StringIO(), **LOW_FLOORS)
        assert str(refused.value) == (
            f"a canary of v2 ({report['models']['v2']['artifact']}) is already running at 20 % in {state}; promote "
            f"it or roll it back first (fraud-rollout canary promote|rollback --state-dir {state}), or replace it "
            "with this run's candidate: --supersede")
        assert (out / "report.json").read_bytes() == before and sorted((out / "runs").iterdir()) == runs
        for path in report["artifacts"].values():
            assert Path(path).exists()
        with httpx.Client(timeout=30) as client:
            response = client.post(f"http://127.0.0.1:{port}/v2/models/fraud-detector/infer", json=request_body(rows[:1]))
        assert response.status_code == 200, response.text
    finally:
        process.terminate()
        process.wait(60)
    share = served.count("v2") / len(served)
    assert set(served) == {"v1", "v2"} and 0.17 <= share <= 0.23, share  # 20 % ± 3 (3.4 standard deviations)


@PIPELINES
def test_committed_yaml_parses_strictly_into_kfps_protos(module):
    """KFP's backend unmarshals the YAML into these protos before its Go compiler turns it into an
    Argo Workflow; an unknown or misspelt field fails here as it would there. (The Go compiler itself,
    github.com/kubeflow/pipelines/backend/src/v2/compiler/argocompiler, cannot be built here: the Go
    module proxy serves no version of github.com/kubeflow/pipelines.)"""
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    pipeline_doc, *platform = list(yaml.safe_load_all(module.COMPILED.read_text()))
    spec = json_format.ParseDict(pipeline_doc, pipeline_spec_pb2.PipelineSpec())
    assert spec.pipeline_info.name == module.PIPELINE_NAME
    platforms = [json_format.ParseDict(p, pipeline_spec_pb2.PlatformSpec()) for p in platform]
    # only the main pipeline's deploy step reads a Secret (kfp-kubernetes); the rollout step needs none
    assert [set(p.platforms) for p in platforms] == ([{"kubernetes"}] if module is pipeline else [])
