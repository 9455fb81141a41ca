"""One way to start a progressive rollout: the store, state, evidence source and recorders a
target needs, wired around `Controller`. `fraud-rollout rollout start` and the pipeline step
`progressive_rollout` both call `start_rollout`, so the two cannot wire a target differently."""
from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fraud.score_profile import ScoreProfile
from fraud.settings import Settings
from fraud_canary.analysis import OfflineMetrics
from fraud_canary.progressive import RolloutPolicy

from fraud_control.inferenceservice.local_state import DEFAULT_STATE_DIR
from fraud_control.inferenceservice.store import InferenceServiceStore, require
from fraud_control.inferenceservice.subject import Subject, subject_of
from fraud_control.rollout.controller import Controller, EvidenceSource, RolloutConfig
from fraud_control.rollout.prometheus import DEFAULT_SELECTOR

log = logging.getLogger(__name__)
#: The step log in a local state dir (target kserve: stdout, the pod's log).
LOG_FILE = "rollout.jsonl"
#: Called with each step's decision and analysis (the CLI's analysis endpoint).
OnStep = Callable[[Mapping[str, Any], Mapping[str, Any] | None], None]


class RolloutStartError(ValueError):
    """A rollout cannot start as asked (nothing to roll out, no evidence named); the message says
    what to do. A ValueError: the CLI prints it on one line and exits 2."""


def parse_plan(text: str, option: str = "--plan") -> tuple[int, ...]:
    """`5,20,50,100`: whole percentages in 1..100, strictly increasing, ending at 100."""
    example = ",".join(map(str, RolloutPolicy().plan))
    steps = []
    for part in text.split(","):
        try:
            steps.append(int(part.strip()))
        except ValueError:
            raise RolloutStartError(f"{option} {text!r}: {part.strip()!r} is not a whole number "
                                    f"(e.g. {option} {example})") from None
    bad = [p for p in steps if not 0 < p <= 100]
    if bad:
        raise RolloutStartError(f"{option} {text!r}: {bad[0]} is not a percentage within 1..100 "
                                "(0 is a rollback, not a step)")
    if any(a >= b for a, b in zip(steps, steps[1:])):
        raise RolloutStartError(f"{option} {text!r}: the steps must increase (e.g. {option} {example})")
    if steps[-1] != 100:
        raise RolloutStartError(f"{option} {text!r}: the last step must be 100 (the promotion)")
    if len(steps) < 2:
        raise RolloutStartError(f"{option} {text!r}: needs at least one step below 100 to analyse")
    return tuple(steps)


@dataclass(frozen=True)
class RolloutOptions:
    """Where the rollout runs, how it reads evidence, and the policy it follows."""

    target: str = "local"
    state_dir: Path = DEFAULT_STATE_DIR
    plan: tuple[int, ...] = RolloutPolicy().plan
    max_holds: int = RolloutPolicy().max_holds
    window_s: float = 60.0
    min_requests: int = 0
    poll_s: float = 2.0
    #: The transformer's /metrics (local default: the runtime's transformer) ...
    metrics_url: str = ""
    #: ... or a Prometheus server scraping it, with the transformer's label matchers.
    prometheus_url: str = ""
    selector: str = DEFAULT_SELECTOR
    #: The prediction store whose late labels add to the live evidence (empty: label-free only) ...
    labels_from: str = ""
    #: ... counting a label once its prediction is this many days old (its label window closed).
    label_maturity_days: float = 0.0
    #: Holdout metrics per model version (`fraud_canary.analysis.offline_metrics`), if a report is at hand.
    offline: Mapping[str, OfflineMetrics] = field(default_factory=dict)
    detectable: float | str | None = None
    #: Roll back a step that stays inconclusive (default: pause there for a person).
    fail_closed: bool = False
    #: MLflow server (empty: $MLFLOW_TRACKING_URI).
    tracking_uri: str = ""
    timeout_s: float = RolloutConfig.timeout_s
    #: JSON lines, one per step (default: `LOG_FILE` in the state dir; stdout for target kserve).
    log: Path | None = None


def open_store(target: str, *, namespace: str = "", name: str = "fraud-detector",
               state_dir: str | Path = DEFAULT_STATE_DIR, kubeconfig: str | None = None, context: str | None = None,
               settings: Settings) -> InferenceServiceStore:
    """The InferenceService store of a target: the cluster's API (kserve) or a local state dir."""
    if target == "kserve":
        from fraud_control.inferenceservice.kube_store import KubeStore, custom_objects_api

        if not namespace:
            raise RolloutStartError("a namespace is required with target kserve")
        api = custom_objects_api(kubeconfig or settings.KUBECONFIG or None, context, in_cluster=settings.in_cluster)
        return KubeStore(api, namespace, name)
    if target == "local":
        from fraud_control.inferenceservice.local_store import LocalStore

        return LocalStore(state_dir, name)
    raise RolloutStartError(f"target must be 'local' or 'kserve', got {target!r}")


def rollout_states(target: str, store: Any, state_dir: str | Path):
    """Where the controller keeps its state: a ConfigMap next to the InferenceService, or the state dir."""
    from fraud_control.rollout.state import ConfigMapRolloutState, LocalRolloutState

    if target == "kserve":
        return ConfigMapRolloutState(store.api.api_client, store.namespace, store.name)
    return LocalRolloutState(state_dir)


def model_versions(options: RolloutOptions, subject: Subject) -> tuple[str, str]:
    """(rolled out, canary) model versions: what the InferenceService records, else (local target)
    the state dir's revision records (`serve --baseline` records no rolled-out annotation)."""
    versions = [subject.rolled_out_model.get("modelVersion") or "",
                (subject.canary_model or {}).get("modelVersion") or ""]
    if options.target == "local":
        from fraud_control.inferenceservice.local_state import LocalInferenceService

        revisions = LocalInferenceService(options.state_dir).revisions()
        for i, revision in enumerate((subject.latest_rolled_out_revision, subject.latest_ready_revision)):
            versions[i] = versions[i] or revisions.get(revision, {}).get("modelVersion", "")
    if not all(versions):
        raise RolloutStartError(f"rollout start: {subject.where} does not record the model versions of its revisions "
                                f"({subject.describe()}); redeploy the canary with `fraud-rollout deploy`")
    return versions[0], versions[1]


def storage_uris(options: RolloutOptions, subject: Subject) -> tuple[str, str]:
    """(rolled out, canary) storage URIs, as `model_versions` finds the versions."""
    uris = [subject.rolled_out_model.get("storageUri") or "", (subject.canary_model or {}).get("storageUri") or ""]
    if options.target == "local":
        from fraud_control.inferenceservice.local_state import LocalInferenceService

        revisions = LocalInferenceService(options.state_dir).revisions()
        for i, revision in enumerate((subject.latest_rolled_out_revision, subject.latest_ready_revision)):
            uris[i] = uris[i] or revisions.get(revision, {}).get("storageUri", "")
    return uris[0], uris[1]


def score_profiles(uris: dict[str, str], settings: Settings) -> tuple[dict[str, ScoreProfile], list[str]]:
    """Each version's score profile (calibration) read from its artifact: a local directory, or an
    s3:// prefix (MinIO, credentials from `settings`); and why any could not be read. Without
    both, the rollout cannot promote on label-free evidence (it says so at the last step)."""
    from fraud.export import read_score_profile
    from fraud.score_profile import MONITORING_FILE

    from fraud_control.inferenceservice.local_state import local_artifact_path

    profiles: dict[str, ScoreProfile] = {}
    problems: list[str] = []
    for version, uri in uris.items():
        try:
            path = local_artifact_path(uri)
            if path is not None:
                profiles[version] = read_score_profile(path)
            elif uri.startswith("s3://"):
                profiles[version] = _s3_profile(uri, MONITORING_FILE, settings)
            else:
                problems.append(f"{version}: storage URI {uri!r} is neither a local path nor s3://")
        except (OSError, ValueError, KeyError) as error:
            problems.append(f"{version}: {error}")
    return profiles, problems


def _s3_profile(uri: str, filename: str, settings: Settings) -> ScoreProfile:
    import json

    from fraud.artifact_store import S3Settings, s3_client
    from minio.error import S3Error

    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    s3 = s3_client(S3Settings.from_env(settings.model_dump()))
    try:
        key = next((o.object_name for o in s3.list_objects(bucket, prefix=prefix.rstrip("/") + "/", recursive=True)
                    if o.object_name and o.object_name.endswith("/" + filename)), None)
        if key is None:
            raise FileNotFoundError(f"{uri}: no {filename}")
        response = s3.get_object(bucket, key)
        try:
            return ScoreProfile.from_dict(json.loads(response.read()))
        finally:
            response.close()
            response.release_conn()
    except S3Error as error:
        raise OSError(f"{uri}: {error.code} ({error.message})") from None


def evidence_source(options: RolloutOptions, baseline: str, candidate: str) -> tuple[EvidenceSource, Callable[[], None]]:
    """The live source the options name (the transformer's /metrics, or Prometheus), and its check
    that it answers, which the controller runs once it has claimed the rollout, before any patch."""
    from fraud_control.local_runtime.runtime import read_runtime
    from fraud_control.rollout.evidence import AfterLocalApply, MetricsWindow, PrometheusWindow, WindowSpec

    if options.metrics_url and options.prometheus_url:
        raise RolloutStartError("rollout start: give at most one of --metrics-url URL and --prometheus URL")
    spec = WindowSpec(seconds=options.window_s, min_requests=options.min_requests, poll_s=options.poll_s)
    source: EvidenceSource
    if options.prometheus_url:
        source = PrometheusWindow(options.prometheus_url, spec, baseline, candidate, options.selector)
    else:
        url = options.metrics_url
        if not url and options.target == "local":
            transformer = read_runtime(options.state_dir).get("transformer")
            if not transformer:
                raise RolloutStartError(f"rollout start: no local runtime serves {options.state_dir} (start "
                                        "`fraud-rollout serve` first, or pass --metrics-url URL)")
            url = f"{transformer}/metrics"
        if not url:
            raise RolloutStartError("rollout start --target kserve: pass --metrics-url URL (the transformer's "
                                    "/metrics) or --prometheus URL")
        source = MetricsWindow(url, spec, baseline, candidate)
    metrics_url = "" if options.prometheus_url else url
    if options.labels_from:
        from fraud_control.prediction_log.store import StoreError
        from fraud_control.prediction_log.store import open_store as open_prediction_store
        from fraud_control.rollout.store_evidence import WithStoreLabels

        try:
            with open_prediction_store(options.labels_from, create=False) as labels:  # fails here, before any step
                labels.counts()
        except (StoreError, ValueError) as error:
            raise RolloutStartError(f"rollout start --labels-from {options.labels_from}: {error} (name the store the "
                                    "prediction-log sink writes, e.g. `serve --prediction-log default`'s "
                                    "<state-dir>/prediction-log.sqlite)") from None
        source = WithStoreLabels(source, options.labels_from, (baseline, candidate),
                                 label_maturity_days=options.label_maturity_days)
    return (AfterLocalApply(source, Path(options.state_dir)) if options.target == "local" else source,
            lambda: check_reachable(options, metrics_url))


def check_reachable(options: RolloutOptions, metrics_url: str) -> None:
    """Read the live source once before the first patch: a dead URL is refused at start, rather than
    patching the canary to its first step and then waiting on it."""
    from fraud.schema import DataError

    from fraud_control.rollout.evidence import scrape
    from fraud_control.rollout.prometheus import prometheus_query

    try:
        if options.prometheus_url:
            prometheus_query(options.prometheus_url, "vector(1)")
        else:
            scrape(metrics_url)
    except DataError as error:
        raise RolloutStartError(f"rollout start: {error}; nothing was patched (start the transformer, or "
                                "name one that answers)") from None


def recorders(options: RolloutOptions, store: Any, subject: Subject, tracking_uri: str) -> list:
    """Where each step is recorded: JSON lines, Kubernetes Events (kserve), MLflow tags on the candidate."""
    from fraud_control.rollout.record import JsonLinesLog, KubeEvents, MlflowStepTags

    out: list = []
    if options.target == "kserve":
        out.append(JsonLinesLog(options.log) if options.log else JsonLinesLog(stream=sys.stdout))
        out.append(KubeEvents(store.api.api_client, store.namespace, store.name, subject.uid))
    else:
        out.append(JsonLinesLog(options.log or Path(options.state_dir) / LOG_FILE))
    if tracking_uri and subject.canary_model:
        out.append(MlflowStepTags(tracking_uri, subject.canary_model))
    return out


def rollout_controller(options: RolloutOptions, store: InferenceServiceStore, source: EvidenceSource | None = None,
                       on_step: OnStep | None = None, *, settings: Settings) -> Controller:
    """The controller for the canary `store` holds; `source` replaces the live evidence (a replay).
    NotDeployed when there is no InferenceService, RolloutStartError when it has no canary."""
    subject = subject_of(require(store), store.where)
    if subject.canary_model is None:
        raise RolloutStartError(f"rollout start: {store.where} has no canary to roll out ({subject.describe()}); "
                                "deploy a candidate first (`fraud-rollout deploy` or the pipeline)")
    baseline, candidate = model_versions(options, subject)
    rolled_out_uri, canary_uri = storage_uris(options, subject)
    profiles, problems = score_profiles({baseline: rolled_out_uri, candidate: canary_uri}, settings)
    for problem in problems:
        log.debug("no label-free promotion evidence: %s", problem)  # the last step says what is missing
    tracking_uri = options.tracking_uri or settings.MLFLOW_TRACKING_URI
    config = RolloutConfig(baseline_version=baseline, canary_version=candidate, offline=options.offline,
                           policy=RolloutPolicy(plan=options.plan, max_holds=options.max_holds,
                                                fail_closed=options.fail_closed),
                           detectable=options.detectable, tracking_uri=tracking_uri, profiles=profiles,
                           timeout_s=options.timeout_s, poll_s=min(options.poll_s, 2.0))
    preflight = None
    if source is None:
        source, preflight = evidence_source(options, baseline, candidate)
    return Controller(store, source, rollout_states(options.target, store, options.state_dir), config,
                      recorders(options, store, subject, tracking_uri), on_step=on_step, preflight=preflight)


def start_rollout(options: RolloutOptions, store: InferenceServiceStore, source: EvidenceSource | None = None,
                  on_step: OnStep | None = None, *, settings: Settings) -> dict[str, Any]:
    """Run the rollout to its end; the final state (status, steps, result). RolloutError when a
    patch fails, RolloutRunning when another controller owns the InferenceService."""
    return rollout_controller(options, store, source, on_step, settings=settings).run()


def rollout_step(report_path: str | Path, *, target: str, namespace: str = "", name: str = "fraud-detector",
                 state_dir: str | Path = DEFAULT_STATE_DIR, plan: str = "5,20,50,100", window_s: float = 60.0,
                 min_requests: int = 0, metrics_url: str = "", prometheus_url: str = "", labels_from: str = "",
                 label_maturity_days: float = 0.0, max_holds: int = RolloutPolicy().max_holds, tracking_uri: str = "",
                 timeout_s: float = RolloutConfig.timeout_s, settings: Settings) -> dict[str, Any]:
    """The pipeline step: run the rollout on the canary the target holds and write its report
    (`{"rollout": state}`, as `rollout start --out` does) to `report_path`; the final state."""
    from fraud.files import write_json

    options = RolloutOptions(target=target, state_dir=Path(state_dir), plan=parse_plan(plan, option="plan"),
                             max_holds=max_holds, window_s=window_s, min_requests=min_requests,
                             metrics_url=metrics_url, prometheus_url=prometheus_url, labels_from=labels_from,
                             label_maturity_days=label_maturity_days, tracking_uri=tracking_uri,
                             timeout_s=timeout_s)
    store = open_store(target, namespace=namespace, name=name, state_dir=state_dir, settings=settings)
    state = start_rollout(options, store, settings=settings)
    write_json(report_path, {"rollout": state})
    return state
