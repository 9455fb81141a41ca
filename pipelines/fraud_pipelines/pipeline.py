"""The fraud-rollout pipeline: simulate drift → baseline (the deployed champion, or a bootstrap v1)
and train the candidate → evaluate → gate → (promote) canary next to the champion → register.

`build_pipeline(image)` wires the components for one components image; `compile_pipeline` writes
the YAML the Kubeflow UI uploads. The committed YAML (`fraud_rollout_pipeline.yaml`) is compiled
with the default image, and a test recompiles and compares it.
"""
from pathlib import Path
from typing import NamedTuple

from fraud.artifact_store import REQUIRED_ENV_VARS
from fraud.canary_percent import DEFAULT_CANARY_PERCENT
from fraud.gate import GatePolicy
from fraud.pipeline_config import DEFAULTS
from fraud_control.inferenceservice.isvc import DEFAULT_IMAGE as SERVING_IMAGE
from fraud_kfp import DEFAULT_IMAGE, build
from kfp import compiler, dsl, kubernetes
from kfp.dsl import Artifact, Dataset, Model

#: Secret with the S3 (MinIO) endpoint and credentials the deploy step uploads models with.
S3_SECRET = "fraud-detector-s3"

PIPELINE_NAME = "fraud-rollout"
GATE = GatePolicy()
COMPILED = Path(__file__).resolve().parent.parent / "fraud_rollout_pipeline.yaml"


def build_pipeline(image: str = DEFAULT_IMAGE, serving_image_default: str = SERVING_IMAGE):
    c = build(image)

    @dsl.pipeline(name=PIPELINE_NAME,
                  description="Simulate card-fraud drift, take the deployed champion as the baseline (a first run "
                              "trains v1), train the candidate, evaluate both on a strictly later holdout, gate "
                              "the candidate, and roll it out as a KServe canary next to the champion.")
    def fraud_rollout(
        n_transactions: int = DEFAULTS.n_transactions,
        seed: int = DEFAULTS.seed,
        drift_start_month: int = DEFAULTS.drift_start_month,
        fraud_rate: float = DEFAULTS.fraud_rate,
        source_csv: str = "",
        epochs: int = DEFAULTS.epochs,
        batch_size: int = DEFAULTS.batch_size,
        min_precision: float = DEFAULTS.min_precision,
        gate_min_f1: float = GATE.min_f1,
        gate_min_precision: float = GATE.min_precision,
        gate_min_recall: float = GATE.min_recall,
        gate_min_pr_auc: float = GATE.min_pr_auc,
        gate_min_recall_gain: float = GATE.min_recall_gain,
        gate_max_precision_loss: float = GATE.max_precision_loss,
        gate_max_p_value: float = GATE.max_p_value,
        gate_min_holdout_frauds: int = GATE.min_holdout_frauds,
        mlflow_tracking_uri: str = "",
        baseline_from: str = "champion",
        deploy_target: str = "kserve",
        namespace: str = "kubeflow-user-example-com",
        canary_percent: int = DEFAULT_CANARY_PERCENT,
        supersede_canary: bool = False,
        local_state_dir: str = ".fraud-rollout/serving",
        model_bucket: str = "fraud-models",
        serving_image: str = serving_image_default,
        deploy_timeout_seconds: float = 600.0,
        prediction_log_url: str = "",
    ) -> NamedTuple("Outputs", [("evaluation", Artifact), ("gate_result", Artifact), ("baseline_model", Model),
                                ("candidate_model", Model), ("holdout", Dataset), ("summary", Artifact)]):
        data = c.simulate_drift(n_transactions=n_transactions, seed=seed, drift_start_month=drift_start_month,
                                fraud_rate=fraud_rate, source_csv=source_csv).set_display_name("simulate drift")
        # Never cached (DESIGN decision 11): the champion, the registry and the cluster change between runs.
        baseline = c.baseline_model(
            dataset=data.outputs["reference"], feature_contract=data.outputs["feature_contract"],
            feature_profile=data.outputs["feature_profile"],
            baseline_from=baseline_from, target=deploy_target, namespace=namespace, local_state_dir=local_state_dir,
            epochs=epochs, batch_size=batch_size, seed=seed, min_precision=min_precision,
            mlflow_tracking_uri=mlflow_tracking_uri).set_display_name("baseline: champion or v1").set_caching_options(False)
        candidate = c.train_model(
            dataset=data.outputs["recent"], feature_contract=baseline.outputs["baseline_contract"],
            feature_profile=baseline.outputs["baseline_profile"],
            version=baseline.outputs["Output"], window="recent", epochs=epochs, batch_size=batch_size, seed=seed,
            min_precision=min_precision, mlflow_tracking_uri=mlflow_tracking_uri,
        ).set_display_name("train candidate on recent").set_caching_options(False)
        evaluated = c.evaluate_models(
            baseline=baseline.outputs["model"], candidate=candidate.outputs["model"],
            holdout=data.outputs["holdout"], pre_drift=data.outputs["pre_drift"],
            summary=data.outputs["summary"]).set_display_name("evaluate baseline vs candidate")
        gated = c.gate_candidate(
            evaluation=evaluated.outputs["evaluation"], min_f1=gate_min_f1, min_precision=gate_min_precision,
            min_recall=gate_min_recall, min_pr_auc=gate_min_pr_auc, min_recall_gain=gate_min_recall_gain,
            max_precision_loss=gate_max_precision_loss, max_p_value=gate_max_p_value,
            min_holdout_frauds=gate_min_holdout_frauds).set_display_name("gate")
        with dsl.If(gated.outputs["Output"] == "promote", name="candidate-promoted"):
            deployed = c.deploy_canary(
                baseline=baseline.outputs["model"], candidate=candidate.outputs["model"], target=deploy_target,
                namespace=namespace, canary_percent=canary_percent, supersede=supersede_canary,
                local_state_dir=local_state_dir, bucket=model_bucket, serving_image=serving_image,
                timeout_seconds=deploy_timeout_seconds, prediction_log_url=prediction_log_url,
            ).set_display_name("deploy canary").set_caching_options(False)
            # Ignored by kfp.local; in a cluster the Secret must exist (manifests/base/s3-secret.template.yaml).
            kubernetes.use_secret_as_env(deployed, secret_name=S3_SECRET,
                                         secret_key_to_env={name: name for name in (*REQUIRED_ENV_VARS, "S3_USE_HTTPS")})
            c.register_models(baseline=baseline.outputs["model"], candidate=candidate.outputs["model"],
                              mlflow_tracking_uri=mlflow_tracking_uri).after(deployed).set_display_name(
                "register challenger").set_caching_options(False)
        Outputs = NamedTuple("Outputs", [("evaluation", Artifact), ("gate_result", Artifact),  # noqa: UP014
                                         ("baseline_model", Model), ("candidate_model", Model),
                                         ("holdout", Dataset), ("summary", Artifact)])
        return Outputs(evaluation=evaluated.outputs["evaluation"], gate_result=gated.outputs["gate_result"],
                       baseline_model=baseline.outputs["model"], candidate_model=candidate.outputs["model"],
                       holdout=data.outputs["holdout"], summary=data.outputs["summary"])

    return fraud_rollout


def unpublished_note(images: list[str]) -> str:
    """What a YAML says at its top when it names images that are not published (the defaults)."""
    if not images:
        return ""
    verb = "is the name of an image that is" if len(images) == 1 else "are the names of images that are"
    return (f"# Image: {' and '.join(images)} {verb} NOT published.\n"
            "# Build with `make images REGISTRY=<your registry>`, push, and compile for the pushed tags with\n"
            "# `fraud-rollout pipeline compile --image <components tag> --serving-image <serving tag>`"
            " (README \"On a cluster\").\n")


def compile_pipeline(out: str | Path = COMPILED, image: str = DEFAULT_IMAGE, serving_image: str = SERVING_IMAGE) -> Path:
    note = unpublished_note([name for name, default in ((image, DEFAULT_IMAGE), (serving_image, SERVING_IMAGE))
                             if name == default])
    return write_compiled(build_pipeline(image, serving_image), out, note)


def write_compiled(pipeline, out: str | Path, note: str = "") -> Path:
    """Compile a @dsl.pipeline to `out` (its directory created); the path. `note` (comment lines, e.g.
    that its images are not published) goes at the top."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(pipeline, str(out))
    if note:
        out.write_text(note + out.read_text())
    return out
