"""Thin KFP wrappers around `fraud.steps`: they move artifact paths and parameters into the core
and log metrics back. Lightweight components on our components image (`install_kfp_package=False`),
so `kfp.local`'s SubprocessRunner runs the same code a cluster runs (DESIGN decision 10).

The functions are decorated only in `build(image)`, so the image is chosen at compile time and
importing this module has no side effects. Their docstrings become descriptions in the Kubeflow UI.
Each step first logs the container it runs in (`fraud.container`), before its heavy imports, so
its log proves where it ran even when it fails.
"""
from dataclasses import dataclass

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

DEFAULT_IMAGE = "ghcr.io/fraud-rollout/components:0.1.0"


def simulate_drift(n_transactions: int, seed: int, drift_start_month: int, fraud_rate: float, source_csv: str,
                   reference: Output[Dataset], pre_drift: Output[Dataset], recent: Output[Dataset],
                   holdout: Output[Dataset], feature_contract: Output[Artifact], feature_profile: Output[Artifact],
                   summary: Output[Artifact]):
    """Simulate drifting card transactions, cut the reference, pre-drift, recent and holdout windows,
    and fit the feature contract and its feature profile (the drift baseline) on the reference window.

    Args:
        n_transactions: Transactions to generate (or to resample from source_csv).
        seed: Random seed; the same seed gives identical data.
        drift_start_month: First month (1 = January 2025) with the new fraud pattern.
        fraud_rate: Share of fraudulent transactions.
        source_csv: Optional path of a real creditcard.csv to enrich instead of generating.
    """
    from fraud.container import announce_step

    announce_step()  # the step's log names the container it runs in
    import pandas as pd
    from fraud.files import read_json, write_json
    from fraud.profile import FeatureProfile
    from fraud.steps import simulate_step
    from fraud_canary.feature_drift import drift_by_month, monthly_drift

    outputs = {"reference": reference, "pre_drift": pre_drift, "recent": recent, "holdout": holdout}
    result = simulate_step({name: a.path for name, a in outputs.items()}, feature_contract.path,
                           feature_profile.path, summary.path, n_transactions=n_transactions, seed=seed,
                           drift_start_month=drift_start_month, fraud_rate=fraud_rate, source_csv=source_csv)
    # Per month, which inputs drifted from the reference window (FraudFeatureDrift's test): the
    # statistics layer sits above the core's simulate_step, so it is added to the summary here.
    frame = pd.concat([pd.read_parquet(artifact.path) for artifact in outputs.values()], ignore_index=True)
    body = read_json(summary.path)
    body["feature_drift_by_month"] = monthly_drift(drift_by_month(frame, FeatureProfile.load(feature_profile.path)))
    write_json(summary.path, body)
    for name, artifact in outputs.items():
        artifact.metadata.update(result["windows"][name])
    feature_contract.metadata["contract_id"] = result["contract_id"]
    feature_profile.metadata["contract_id"] = result["contract_id"]


def train_model(dataset: Input[Dataset], feature_contract: Input[Artifact], feature_profile: Input[Artifact],
                version: int, window: str, epochs: int, batch_size: int, seed: int, min_precision: float,
                mlflow_tracking_uri: str, model: Output[Model], metrics: Output[Metrics]):
    """Train the fraud MLP on one window, tune its threshold on the window's latest rows, export and register it.

    Args:
        dataset: Training window (parquet).
        feature_contract: Feature contract fitted on the reference window.
        feature_profile: That contract's feature profile, kept in the model artifact for drift monitoring.
        version: Model version number (1 = baseline v1, 2 = candidate v2).
        window: Name of the training window, recorded with the model.
        epochs: Maximum epochs (early stopping on validation PR-AUC).
        batch_size: Training batch size.
        seed: Random seed for weights, dropout and shuffling.
        min_precision: Threshold policy: highest recall with validation precision at least this.
        mlflow_tracking_uri: MLflow tracking URI; empty uses MLFLOW_TRACKING_URI, else a local SQLite file.
    """
    from fraud.container import announce_step

    announce_step()  # the step's log names the container it runs in
    from fraud.settings import Settings
    from fraud.steps import train_config, train_step

    config = train_config(epochs=epochs, batch_size=batch_size, seed=seed, min_precision=min_precision)
    result = train_step(dataset.path, feature_contract.path, feature_profile.path, model.path, version=version,
                        window=window, config=config, settings=Settings(), mlflow_tracking_uri=mlflow_tracking_uri)
    model.metadata.update({k: result[k] for k in ("model_version", "contract_id", "threshold", "window")})
    for key in ("threshold", "validation_precision", "validation_recall", "epochs_run", "train_seconds"):
        metrics.log_metric(key, float(result[key]))


def baseline_model(dataset: Input[Dataset], feature_contract: Input[Artifact], feature_profile: Input[Artifact],
                   baseline_from: str, target: str, namespace: str, local_state_dir: str, epochs: int,
                   batch_size: int, seed: int, min_precision: float, mlflow_tracking_uri: str,
                   model: Output[Model], baseline_contract: Output[Artifact], baseline_profile: Output[Artifact],
                   metrics: Output[Metrics]) -> int:
    """The baseline the candidate is gated against: the deployed champion, or v1 trained on the reference window.

    With baseline_from "champion", the InferenceService's rolled-out model (else MLflow's `champion`
    alias) is copied from the registry; with none (a first run), or baseline_from "train", v1 is
    trained as the bootstrap. Outputs the baseline's feature contract and feature profile, which the
    candidate is trained with. Returns the candidate's version number as the single output `Output`.

    Args:
        dataset: Reference window (parquet), for a bootstrap v1.
        feature_contract: Feature contract fitted on the reference window, for a bootstrap v1.
        feature_profile: That contract's feature profile, for a bootstrap v1.
        baseline_from: "champion" (the deployed champion when there is one) or "train" (always train v1).
        target: "kserve" or "local": where the deploy step keeps the InferenceService.
        namespace: Namespace of the InferenceService (target kserve).
        local_state_dir: State dir of the local runtime (target local).
        epochs: Maximum epochs for a bootstrap v1.
        batch_size: Training batch size for a bootstrap v1.
        seed: Random seed for a bootstrap v1.
        min_precision: Threshold policy for a bootstrap v1.
        mlflow_tracking_uri: MLflow tracking URI; empty uses MLFLOW_TRACKING_URI, else a local SQLite file.
    """
    from fraud.container import announce_step

    announce_step()  # the step's log names the container it runs in
    from fraud.settings import Settings
    from fraud.steps import baseline_step, train_config
    from fraud_control.canary.registry_aliases import champion_for

    settings = Settings()
    tracking_uri = mlflow_tracking_uri or settings.MLFLOW_TRACKING_URI
    champion = champion_for(baseline_from, target, namespace, local_state_dir, tracking_uri, settings.in_cluster)
    result = baseline_step(dataset.path, feature_contract.path, feature_profile.path, model.path,
                           baseline_contract.path, baseline_profile.path,
                           champion_version=champion.registry_version if champion else None,
                           found_by=champion.found_by if champion else "",
                           config=train_config(epochs=epochs, batch_size=batch_size, seed=seed,
                                               min_precision=min_precision), settings=settings,
                           mlflow_tracking_uri=tracking_uri)
    model.metadata.update({k: result[k] for k in ("model_version", "contract_id", "threshold", "window", "source",
                                                  "registry_version")})
    baseline_contract.metadata["contract_id"] = result["contract_id"]
    baseline_profile.metadata["contract_id"] = result["contract_id"]
    metrics.log_metric("registry_version", float(result["registry_version"]))
    return result["candidate_version"]


def evaluate_models(baseline: Input[Model], candidate: Input[Model], holdout: Input[Dataset],
                    pre_drift: Input[Dataset], summary: Input[Artifact], evaluation: Output[Artifact],
                    metrics: Output[Metrics], baseline_curves: Output[ClassificationMetrics],
                    candidate_curves: Output[ClassificationMetrics], report: Output[HTML]):
    """Score baseline and candidate on the holdout and the pre-drift slice; McNemar test v2 vs v1.

    Args:
        baseline: The baseline model (v1).
        candidate: The candidate model (v2).
        holdout: Transactions after every training row.
        pre_drift: Transactions before the drift that neither model trained on.
        summary: The simulation summary (windows, drift).
    """
    from fraud.container import announce_step

    announce_step()  # the step's log names the container it runs in
    from fraud.report import evaluation_html
    from fraud.steps import evaluate_step

    result = evaluate_step(baseline.path, candidate.path, holdout.path, pre_drift.path, summary.path, evaluation.path)
    for name, curves in (("v1", baseline_curves), ("v2", candidate_curves)):
        model = result["models"][name]
        holdout_metrics = model["holdout"]
        for key in ("precision", "recall", "f1", "roc_auc", "pr_auc"):
            if holdout_metrics[key] == holdout_metrics[key]:  # NaN is not a metric
                metrics.log_metric(f"{name}_holdout_{key}", holdout_metrics[key])
        curves.log_confusion_matrix(["legit", "fraud"], [[holdout_metrics["tn"], holdout_metrics["fp"]],
                                                         [holdout_metrics["fn"], holdout_metrics["tp"]]])
        roc = model["curves"]["roc"]
        curves.log_roc_curve(roc["fpr"], roc["tpr"], roc["threshold"])
    metrics.log_metric("mcnemar_p", result["mcnemar_p"])
    with open(report.path, "w") as out:
        out.write(evaluation_html(result))


def gate_candidate(evaluation: Input[Artifact], min_f1: float, min_precision: float, min_recall: float,
                   min_pr_auc: float, min_recall_gain: float, max_precision_loss: float, max_p_value: float,
                   min_holdout_frauds: int, gate_result: Output[Artifact], reasons: Output[Markdown]) -> str:
    """Decide whether the candidate may go out as a canary; every rule must pass (fails closed).

    Returns "promote" or "reject" as the single output `Output` (kfp.local resolves a dsl.If
    condition only on an output named `Output`).

    Args:
        evaluation: Output of evaluate_models.
        min_f1: Candidate holdout F1 floor.
        min_precision: Candidate holdout precision floor.
        min_recall: Candidate holdout recall floor.
        min_pr_auc: Candidate holdout PR-AUC floor.
        min_recall_gain: Relative recall gain over the baseline required (0.05 = 5 %).
        max_precision_loss: Largest absolute precision loss against the baseline allowed.
        max_p_value: McNemar p-value must be below this.
        min_holdout_frauds: Frauds the holdout must hold for the other rules to be judged at all.
    """
    from fraud.container import announce_step

    announce_step()  # the step's log names the container it runs in
    from fraud.gate import GatePolicy
    from fraud.steps import gate_step

    policy = GatePolicy(min_f1=min_f1, min_precision=min_precision, min_recall=min_recall, min_pr_auc=min_pr_auc,
                        min_recall_gain=min_recall_gain, max_precision_loss=max_precision_loss,
                        max_p_value=max_p_value, min_holdout_frauds=min_holdout_frauds)
    result = gate_step(evaluation.path, gate_result.path, reasons.path, policy)
    gate_result.metadata["decision"] = result.decision
    return result.decision


def deploy_canary(baseline: Input[Model], candidate: Input[Model], target: str, namespace: str,
                  canary_percent: int, supersede: bool, local_state_dir: str, bucket: str, serving_image: str,
                  timeout_seconds: float, prediction_log_url: str, traffic: Output[Markdown]):
    """Roll the candidate out as a KServe canary next to the baseline (the rolled-out champion).

    Args:
        baseline: The rolled-out model (v1); the InferenceService is created with it if absent.
        candidate: The model to canary (v2).
        target: "kserve" (the InferenceService in this cluster) or "local" (the state dir `fraud-rollout serve` reads).
        namespace: Namespace of the InferenceService (target kserve).
        canary_percent: Share of traffic for the candidate.
        supersede: Replace a canary of another candidate that is still running instead of refusing.
        local_state_dir: State dir of the local runtime (target local).
        bucket: S3/MinIO bucket the models are uploaded to (target kserve; credentials from the Secret fraud-detector-s3).
        serving_image: Image of the predictor and transformer containers.
        timeout_seconds: How long to wait for the InferenceService to become Ready after each change.
        prediction_log_url: Sink of KServe's payload logger on the transformer ("" for no logger).
    """
    from fraud.container import announce_step

    announce_step()  # the step's log names the container it runs in
    from fraud.settings import Settings
    from fraud_control.canary.deploy import deploy

    rollout = deploy(target, baseline.path, candidate.path, namespace=namespace, canary_percent=canary_percent,
                     supersede=supersede, state_dir=local_state_dir, bucket=bucket, image=serving_image,
                     timeout_s=timeout_seconds, prediction_log_url=prediction_log_url, settings=Settings())
    with open(traffic.path, "w") as out:
        out.write(rollout.markdown)
    traffic.metadata.update({"action": rollout.action, "traffic": rollout.status["traffic"],
                             "canaryTrafficPercent": rollout.status["canaryTrafficPercent"],
                             "latestRolledoutRevision": rollout.status["latestRolledoutRevision"]})
    print(rollout.markdown)


def register_models(baseline: Input[Model], candidate: Input[Model], mlflow_tracking_uri: str):
    """Make the deployed candidate MLflow's `challenger` (and the baseline `champion` if none is set yet).

    Args:
        baseline: The rolled-out model.
        candidate: The canary just deployed.
        mlflow_tracking_uri: MLflow tracking URI; empty uses MLFLOW_TRACKING_URI, else a local SQLite file.
    """
    from fraud.container import announce_step

    announce_step()  # the step's log names the container it runs in
    from fraud.settings import Settings
    from fraud.steps import register_step

    print(register_step(baseline.path, candidate.path, Settings(), mlflow_tracking_uri))


def progressive_rollout(target: str, namespace: str, local_state_dir: str, plan: str, window_seconds: float,
                        min_requests: int, metrics_url: str, prometheus_url: str, max_holds: int,
                        tracking_uri: str, timeout_seconds: float, report: Output[Artifact]) -> str:
    """Step the deployed canary through the plan on live evidence: advance, hold, promote, roll back or pause.

    Returns the final status (promoted, rolled_back, aborted, inconclusive: paused for a person) as the
    single output `Output`.

    Args:
        target: "kserve" (the InferenceService in this cluster) or "local" (the state dir `fraud-rollout serve` reads).
        namespace: Namespace of the InferenceService (target kserve).
        local_state_dir: State dir of the local runtime (target local).
        plan: canaryTrafficPercent steps, increasing, ending at 100 (the promotion).
        window_seconds: Each step's evidence window lasts at least this long.
        min_requests: And counts at least this many requests.
        metrics_url: The transformer's /metrics (target local: empty reads the local runtime's).
        prometheus_url: Instead of metrics_url: a Prometheus server scraping the transformer.
        max_holds: Windows a step may hold before it stops inconclusive (the canary paused where it is).
        tracking_uri: MLflow tracking URI (aliases follow, decisions tag the candidate); empty uses MLFLOW_TRACKING_URI.
        timeout_seconds: How long to wait for the InferenceService to become Ready after each patch.
    """
    from fraud.container import announce_step

    announce_step()  # the step's log names the container it runs in
    from fraud.settings import Settings
    from fraud_control.rollout.run import rollout_step

    state = rollout_step(report.path, target=target, namespace=namespace, state_dir=local_state_dir, plan=plan,
                         window_s=window_seconds, min_requests=min_requests, metrics_url=metrics_url,
                         prometheus_url=prometheus_url, max_holds=max_holds, tracking_uri=tracking_uri,
                         timeout_s=timeout_seconds, settings=Settings())
    report.metadata.update({"status": state["status"], "percent": state["percent"], "steps": len(state["steps"])})
    return state["status"]


@dataclass(frozen=True)
class Components:
    simulate_drift: object
    baseline_model: object
    train_model: object
    evaluate_models: object
    gate_candidate: object
    deploy_canary: object
    register_models: object
    progressive_rollout: object


def build(image: str = DEFAULT_IMAGE) -> Components:
    """The pipeline's components, all on `image` (which must have this package installed)."""
    def component(func):
        return dsl.component(func, base_image=image, install_kfp_package=False)

    return Components(component(simulate_drift), component(baseline_model), component(train_model),
                      component(evaluate_models), component(gate_candidate), component(deploy_canary),
                      component(register_models), component(progressive_rollout))
