"""`fraud-rollout canary status|promote|rollback|analyze`, on the local state dir or a cluster."""
from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path

from fraud.schema import DataError
from fraud_canary.analysis import analyze, format_analysis, metrics_from_replay, offline_metrics
from fraud_control.prometheus import DEFAULT_SELECTOR, metrics_from_prometheus

from fraud_rollout.args import UsageError, detectable_difference, state_dir_option

#: `canary --target` → function(action, args) -> exit code.
CANARY_TARGETS: dict[str, Callable[[str, argparse.Namespace], int]] = {}


def register(commands) -> None:
    canary = commands.add_parser("canary", help="canary status, promote or rollback (same patches as kubectl)")
    canary.add_argument("action", choices=["status", "promote", "rollback", "analyze"])
    canary.add_argument("--target", choices=["local", "kserve"], default="local",
                        help="local state dir, or the InferenceService in a cluster")
    state_dir_option(canary)
    canary.add_argument("--json", action="store_true", help="print the status as JSON")
    kserve = canary.add_argument_group("--target kserve (fraud_control.kserve_canary)")
    kserve.add_argument("--namespace", help="namespace of the InferenceService (required with --target kserve)")
    kserve.add_argument("--name", default="fraud-detector", help="InferenceService name")
    kserve.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster account, else $KUBECONFIG)")
    kserve.add_argument("--context", help="kubeconfig context")
    kserve.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for Ready after a patch")
    kserve.add_argument("--tracking-uri", default="", help="MLflow server whose aliases follow (default $MLFLOW_TRACKING_URI)")
    add_analyze_options(canary.add_argument_group("analyze"))
    canary.set_defaults(func=canary_command)


def add_analyze_options(group) -> None:
    group.add_argument("--replay-report", type=Path, help="online evidence: a `fraud-rollout replay` report")
    group.add_argument("--prometheus", metavar="URL", help="online evidence: Prometheus scraping the transformer")
    group.add_argument("--selector", default=DEFAULT_SELECTOR,
                       help=f"label matchers of the transformer's series (default {DEFAULT_SELECTOR})")
    group.add_argument("--window", default="",
                       help="Prometheus range, e.g. 15m (default: the counters' whole lifetime)")
    group.add_argument("--report", type=Path, dest="pipeline_report",
                       help="pipeline report.json with the offline metrics (default: the replay report's, "
                            "else .fraud-rollout/run/report.json)")
    group.add_argument("--expected-canary-percent", type=float,
                       help="canaryTrafficPercent the share is checked against (default: the local manifest's, else 20)")
    group.add_argument("--detectable-recall-difference", type=detectable_difference,
                       help="recall drop the evidence must be able to detect (default 0.10; 'auto': the smallest "
                            "the evidence supports, at least 0.10)")
    group.add_argument("--apply", action="store_true", help="promote or roll back as recommended (hold: no change)")
    group.add_argument("--analysis-out", type=Path, help="write the analysis as JSON here")


def canary_command(args: argparse.Namespace) -> int:
    if args.action == "analyze":
        return analyze_command(args)
    target = CANARY_TARGETS.get(args.target)
    if target is None:
        raise UsageError(f"--target {args.target}: not available in this installation")
    return target(args.action, args)


def local_status(state_dir: Path) -> dict:
    from fraud_control.local_state import LocalInferenceService, revision_status
    from fraud_control.runtime import read_runtime

    status = revision_status(LocalInferenceService(state_dir))
    status["runtime"] = read_runtime(state_dir)
    return status


def local_canary(action: str, args: argparse.Namespace) -> int:
    """status / promote / rollback on the InferenceService in the local state dir."""
    from fraud_control import isvc
    from fraud_control.local_state import LocalInferenceService, StateError

    service = LocalInferenceService(args.state_dir)
    if action == "promote":
        manifest = service.get()
        if "canaryTrafficPercent" not in manifest["spec"]["predictor"]:
            raise ValueError("nothing to promote: spec.predictor has no canaryTrafficPercent")
        predictor = manifest["status"]["components"]["predictor"]
        if predictor.get("latestReadyRevision") != predictor.get("latestCreatedRevision"):
            raise ValueError(f"the canary {predictor.get('latestCreatedRevision')} is not ready; promoting would "
                             f"send all traffic to {predictor.get('latestReadyRevision')} (roll back instead)")
        service.patch_json(isvc.promote_patch())
    elif action == "rollback":
        service.patch_merge(isvc.rollback_patch())
    elif action != "status":
        raise StateError(f"unknown action {action!r}")
    status = local_status(args.state_dir)
    print(json.dumps(status, indent=2) if getattr(args, "json", False) else format_status(status))
    return 0


CANARY_TARGETS["local"] = local_canary


def kserve_canary_target(action: str, args: argparse.Namespace) -> int:
    """status / promote / rollback on the InferenceService in a cluster (imports the kubernetes
    client only when used: it takes seconds)."""
    from fraud_control.kserve_canary import cli_action

    return cli_action(action, args)


CANARY_TARGETS["kserve"] = kserve_canary_target


def format_status(status: dict) -> str:
    predictor = status["predictor"]
    revisions = status["revisions"]

    def named(revision: str | None) -> str:
        if not revision:
            return "-"
        return f"{revision} ({revisions.get(revision, {}).get('modelVersion', '?')})"

    lines = [f"InferenceService {status['name']}: generation {status['generation']}, observedGeneration "
             f"{status['observedGeneration']}, " + ", ".join(f"{k} {v}" for k, v in status["conditions"].items()),
             f"canaryTrafficPercent: {status['canaryTrafficPercent'] if status['canaryTrafficPercent'] is not None else '(absent)'}",
             "traffic:"]
    for entry in predictor.get("traffic", []):
        lines.append(f"  {entry['percent']:>3}%  {named(entry['revisionName'])}  tag={entry.get('tag', '-')}  "
                     f"latestRevision={str(entry.get('latestRevision', False)).lower()}")
    for key in ("latestCreatedRevision", "latestReadyRevision", "latestRolledoutRevision",
                "previousRolledoutRevision"):
        lines.append(f"{key + ':':<27}{named(predictor.get(key))}")
    runtime = status.get("runtime") or {}
    if runtime.get("transformer"):
        lines.append(f"serving: {runtime['transformer']} (generation {runtime.get('appliedGeneration')} applied)")
    else:
        lines.append("serving: not running (fraud-rollout serve)")
    return "\n".join(lines)


def expected_canary_percent(args) -> float:
    if args.expected_canary_percent is not None:
        if not 0 < args.expected_canary_percent < 100:
            raise DataError(f"--expected-canary-percent {args.expected_canary_percent:g}: must be between 0 and 100")
        return args.expected_canary_percent
    if args.target == "local":
        from fraud_control.local_state import LocalInferenceService

        service = LocalInferenceService(args.state_dir)
        if service.exists():
            percent = service.get()["spec"]["predictor"].get("canaryTrafficPercent")
            if percent is not None and 0 < percent < 100:
                return float(percent)
    return 20.0


def apply_recommendation(action: str, args, tracking_uri: str) -> tuple[int, str]:
    """Promote or roll back through `canary promote|rollback`'s own functions; move MLflow aliases.
    Returns (exit code, one-line account)."""
    if action not in ("promote", "rollback"):
        return 0, "hold: nothing changed"
    if args.target == "kserve":
        args.tracking_uri = getattr(args, "tracking_uri", "") or tracking_uri  # cli_action moves the aliases
        code = CANARY_TARGETS["kserve"](action, args)
        return code, f"{action} applied to the InferenceService" if code == 0 else f"{action} refused"
    code = CANARY_TARGETS["local"](action, args)
    note = ""
    if code == 0 and tracking_uri:
        from fraud_control.kserve_canary import move_registry_aliases

        note = move_registry_aliases(action, tracking_uri)
        print(note)
    return code, f"{action} applied to {args.state_dir}" + (f"; {note}" if note else "")


def analyze_command(args) -> int:
    from fraud.files import json_safe

    from fraud_rollout.replay import DEFAULT_PIPELINE_REPORT, read_pipeline_report, read_replay

    if (args.replay_report is None) == (args.prometheus is None):
        raise UsageError("canary analyze: give exactly one of --replay-report FILE and --prometheus URL")
    replay_report = None
    if args.replay_report is not None:
        replay_report, _ = read_replay(args.replay_report)
    pipeline_path = args.pipeline_report
    if pipeline_path is None and replay_report and replay_report["source"].get("pipeline_report"):
        pipeline_path = Path(replay_report["source"]["pipeline_report"])
    pipeline = read_pipeline_report(pipeline_path or DEFAULT_PIPELINE_REPORT, option="--report")
    baseline_version, canary_version = (str(pipeline["models"][name].get("version", name)) for name in ("v1", "v2"))

    if replay_report is not None:
        online = metrics_from_replay(replay_report)
        evidence = {"source": "replay", "replay_report": str(args.replay_report)}
    else:
        online, queries = metrics_from_prometheus(args.prometheus, args.selector, args.window)
        evidence = {"source": "prometheus", "url": args.prometheus, "queries": queries}
    offline = offline_metrics(pipeline, with_flag_rate=replay_report is not None)
    analysis = analyze(online, offline, baseline_version=baseline_version, canary_version=canary_version,
                       canary_percent=expected_canary_percent(args), detectable=args.detectable_recall_difference)
    analysis["evidence_source"] = evidence
    print(format_analysis(analysis))

    code = 0
    if args.apply:
        tracking_uri = (getattr(args, "tracking_uri", "") or os.environ.get("MLFLOW_TRACKING_URI", "")
                        or pipeline.get("mlflow", {}).get("tracking_uri", ""))
        code, applied = apply_recommendation(analysis["action"], args, tracking_uri)
        analysis["applied"] = {"action": analysis["action"], "target": args.target, "exit_code": code,
                               "detail": applied}
        print(f"applied: {applied}")
    if args.analysis_out:
        args.analysis_out.parent.mkdir(parents=True, exist_ok=True)
        args.analysis_out.write_text(json.dumps(json_safe(analysis), indent=2, allow_nan=False))
    return code
