"""`fraud-rollout canary status|promote|rollback|analyze`, on the local state dir or a cluster."""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from fraud.canary_percent import DEFAULT_CANARY_PERCENT, splits_traffic
from fraud.settings import Settings
from fraud_canary.analysis import analyze, format_analysis, metrics_from_replay, offline_metrics, paired_from_replay
from fraud_control.rollout.prometheus import DEFAULT_SELECTOR, metrics_from_prometheus
from fraud_ops.local_canary import local_status

from fraud_rollout.args import UsageError, canary_percent, detectable_difference, non_negative_float, since_time
from fraud_rollout.targets import add_target_options, current_subject, open_store

DEFAULT_TIMEOUT_S = 600.0  # fraud_control.canary.operations.DEFAULT_TIMEOUT_S, without importing it at parse time


def register(commands) -> None:
    canary = commands.add_parser("canary", help="canary status, promote or rollback (same patches as kubectl)")
    actions = canary.add_subparsers(dest="action", required=True, metavar="ACTION")
    # one parser per action, each with only its own options: `canary status --apply` is an error, not ignored
    status = actions.add_parser("status", help="the InferenceService's traffic split and revisions")
    promote = actions.add_parser("promote", help="the canary takes 100 %% (MLflow's champion alias follows)")
    rollback = actions.add_parser("rollback", help="back to the rolled-out revision (the challenger alias is dropped)")
    analyze_ = actions.add_parser("analyze", help="recommend promote, hold or rollback from online evidence")
    for parser in (status, promote, rollback, analyze_):
        add_target_options(parser)
        parser.set_defaults(func=canary_command)
    for parser in (status, promote, rollback):
        parser.add_argument("--json", action="store_true", help="print the status as JSON")
    for parser in (promote, rollback, analyze_):
        parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                            help="seconds to wait for Ready after a patch (default %(default)s; --target kserve)")
        parser.add_argument("--tracking-uri", default="",
                            help="MLflow server whose aliases follow (default $MLFLOW_TRACKING_URI)")
    add_analyze_options(analyze_)


def add_analyze_options(group) -> None:
    group.add_argument("--replay-report", type=Path, help="online evidence: a `fraud-rollout replay` report")
    group.add_argument("--prometheus", metavar="URL", help="online evidence: Prometheus scraping the transformer")
    group.add_argument("--store", metavar="URL",
                       help="online evidence: the prediction log (a SQLite file, sqlite:///PATH or postgresql://…)")
    group.add_argument("--since", type=since_time, metavar="T",
                       help="--store: predictions from T on (ISO 8601 time, or a duration back from now: 30m, 2h, 7d)")
    group.add_argument("--until", type=since_time, metavar="T",
                       help="--store: predictions before T (ISO 8601 time, or a duration back from now)")
    group.add_argument("--holdout-traffic", action="store_true",
                       help="--store, --prometheus: the traffic was the pipeline's holdout (a replay of it, as the "
                            "demo's), so each version's flag rate is checked against its holdout flag rate (always "
                            "so with --replay-report)")
    group.add_argument("--label-maturity", type=non_negative_float, default=0.0, metavar="DAYS",
                       help="--store: recall and precision count a prediction only once it is this many days "
                            "old and its label has arrived (default 0: any arrived label)")
    group.add_argument("--selector", default=DEFAULT_SELECTOR,
                       help=f"label matchers of the transformer's series (default {DEFAULT_SELECTOR})")
    group.add_argument("--window", default="",
                       help="Prometheus range, e.g. 15m (default: the counters' whole lifetime)")
    group.add_argument("--report", type=Path, dest="pipeline_report",
                       help="pipeline report.json with the offline metrics (default: the replay report's, "
                            "else .fraud-rollout/run/report.json)")
    group.add_argument("--expected-canary-percent", type=canary_percent,
                       help="canaryTrafficPercent the share is checked against (default: the local manifest's, else 20)")
    group.add_argument("--detectable-recall-difference", type=detectable_difference,
                       help="recall drop the evidence must be able to detect (default 0.10; 'auto': the smallest "
                            "the evidence supports, at least 0.10)")
    group.add_argument("--apply", action="store_true", help="promote or roll back as recommended (hold: no change)")
    group.add_argument("--analysis-out", type=Path, help="write the analysis as JSON here")


def canary_command(args: argparse.Namespace) -> int:
    if args.action == "analyze":
        return analyze_command(args)
    return run_operation(args.action, args, args.settings)


def run_operation(action: str, args: argparse.Namespace, settings: Settings) -> int:
    """status / promote / rollback through `fraud_control.canary.operations`, the same for both targets.
    Exit 1 on a refused or failed operation (the message says why), 2 when nothing is deployed."""
    from fraud_control.canary import operations as canary
    from fraud_control.inferenceservice.store import NotDeployed, RolloutError

    store = open_store(args, settings)
    tracking_uri = getattr(args, "tracking_uri", "") or settings.MLFLOW_TRACKING_URI
    timeout_s = float(getattr(args, "timeout", None) or DEFAULT_TIMEOUT_S)
    operations: dict[str, Callable[[], canary.Rollout]] = {
        "status": lambda: canary.Rollout("status", canary.status(store)),
        "promote": lambda: canary.promote(store, tracking_uri=tracking_uri, timeout_s=timeout_s),
        "rollback": lambda: canary.rollback(store, tracking_uri=tracking_uri, timeout_s=timeout_s)}
    try:
        result = operations[action]()
    except NotDeployed as error:
        raise UsageError(str(error)) from None
    except RolloutError as error:
        print(f"fraud-rollout canary {action}: {error}", file=sys.stderr)
        return 1
    note = result.registry
    if action != "status" and not result.unchanged and not tracking_uri:
        note = "MLflow aliases not moved: no --tracking-uri and no MLFLOW_TRACKING_URI"
    print_result(result, note, args)
    return 0


def print_result(result, note: str, args: argparse.Namespace) -> None:
    """One text format for both targets (`--json` for scripts); the local runtime adds its revisions'
    model versions and whether `serve` runs it."""
    local = getattr(args, "target", "local") == "local"
    if getattr(args, "json", False):
        extra = {"local": local_status(args.state_dir)} if local else {}
        print(json.dumps({"action": result.action, "status": result.status, "registry": note, **extra}, indent=2))
        return
    lines = [] if result.action == "status" else [result.action]
    print("\n".join([*lines, format_status(result.status, local_status(args.state_dir) if local else None),
                     *([note] if note else [])]))


def format_status(traffic: dict, local: dict | None = None) -> str:
    """`traffic_status(...)` as text; `local` (`local_status`) names each revision's model version and
    says whether the local runtime serves it. On a cluster only the latest revision's version is known."""
    revisions = (local or {}).get("revisions", {})

    def named(revision: str | None) -> str:
        if not revision:
            return "-"
        version = revisions.get(revision, {}).get("modelVersion") or (
            traffic["modelVersion"] if revision == traffic["latestCreatedRevision"] else None)
        return f"{revision} ({version})" if version else revision

    where = f" in {traffic['namespace']}" if traffic.get("namespace") else ""
    conditions = ", ".join(f"{c['type']} {c['status']}" for c in traffic["conditions"]) or "no conditions yet"
    percent = traffic["canaryTrafficPercent"]
    lines = [f"InferenceService {traffic['name']}{where}: generation {traffic['generation']}, observedGeneration "
             f"{traffic['observedGeneration']}, {conditions}",
             f"canaryTrafficPercent: {percent if percent is not None else '(absent)'}",
             "traffic:"]
    for entry in traffic["traffic"]:
        lines.append(f"  {entry['percent']:>3}%  {named(entry.get('revisionName'))}  tag={entry.get('tag', '-')}  "
                     f"latestRevision={str(entry.get('latestRevision', False)).lower()}")
    for key in ("latestCreatedRevision", "latestReadyRevision", "latestRolledoutRevision",
                "previousRolledoutRevision"):
        lines.append(f"{key + ':':<27}{named(traffic.get(key))}")
    if local is not None:
        runtime = local.get("runtime") or {}
        if runtime.get("transformer"):
            lines.append(f"serving: {runtime['transformer']} (generation {runtime.get('appliedGeneration')} applied)")
        else:
            lines.append("serving: not running (fraud-rollout serve)")
    return "\n".join(lines)


def expected_canary_percent(args) -> float:
    if args.expected_canary_percent is not None:
        return float(args.expected_canary_percent)
    if args.target == "local":
        from fraud_control.inferenceservice.local_state import LocalInferenceService

        service = LocalInferenceService(args.state_dir)
        if service.exists():
            percent = service.get()["spec"]["predictor"].get("canaryTrafficPercent")
            if splits_traffic(percent):
                return float(percent)
    return float(DEFAULT_CANARY_PERCENT)


def apply_recommendation(action: str, args, tracking_uri: str, subject: dict | None) -> tuple[int, str]:
    """Promote or roll back through `canary promote|rollback`'s own operation (which moves the
    MLflow aliases), only on the deployment the evidence is about: `subject`, recorded by its
    replay (`local_subject`, `targets.current_subject`); refused (exit 1, one line on stderr) when
    what is deployed now differs. Returns (exit code, one-line account)."""
    stale = evidence_mismatch(args, subject)
    if stale:
        print(f"fraud-rollout canary analyze --apply: refused: {stale}", file=sys.stderr)
        return 1, f"{action} refused: {stale}"
    if action not in ("promote", "rollback"):
        return 0, "hold: nothing changed"
    args.tracking_uri = getattr(args, "tracking_uri", "") or tracking_uri
    code = run_operation(action, args, args.settings)
    where = args.state_dir if getattr(args, "target", "local") == "local" else "the InferenceService"
    return code, f"{action} applied to {where}" if code == 0 else f"{action} refused"


def evidence_mismatch(args, evidence_subject: dict | None) -> str | None:
    """Why the evidence must not be applied to what is deployed now, or None."""
    from fraud_control.inferenceservice.subject import mismatch, read_subject

    return mismatch(evidence_subject, read_subject(open_store(args, args.settings)))


def analyze_command(args) -> int:
    from fraud.files import json_safe
    from fraud_ops.local_defaults import pipeline_report
    from fraud_ops.replay_report import read_replay
    from fraud_ops.replay_source import read_pipeline_report

    if sum(x is not None for x in (args.replay_report, args.prometheus, args.store)) != 1:
        raise UsageError("canary analyze: give exactly one of --replay-report FILE, --prometheus URL and --store URL")
    replay_report = None
    if args.replay_report is not None:
        replay_report, _ = read_replay(args.replay_report)
    pipeline_path = args.pipeline_report
    if pipeline_path is None and replay_report and replay_report["source"].get("pipeline_report"):
        pipeline_path = Path(replay_report["source"]["pipeline_report"])
    pipeline = read_pipeline_report(pipeline_path or pipeline_report(), option="--report")
    baseline_version, canary_version = (str(pipeline["models"][name].get("version", name)) for name in ("v1", "v2"))

    if replay_report is not None:
        online = metrics_from_replay(replay_report)
        paired = paired_from_replay(replay_report, baseline_version, canary_version)
        evidence = {"source": "replay", "replay_report": str(args.replay_report)}
        subject = replay_report.get("subject")
    elif args.store is not None:  # the prediction log: what was served, and the labels that have matured
        from fraud_control.rollout.store_evidence import store_evidence

        logged = store_evidence(args.store, (baseline_version, canary_version), since=args.since,
                                until=args.until, label_maturity_days=args.label_maturity)
        online, paired = logged.online, logged.paired
        evidence = {"source": "store", "store": logged.store, "since": args.since.isoformat() if args.since else None,
                    "until": args.until.isoformat() if args.until else None, "feedback": logged.feedback}
        subject = current_subject(args)
    else:  # live evidence: about what is deployed now
        online, queries = metrics_from_prometheus(args.prometheus, args.selector, args.window)
        paired = None
        evidence = {"source": "prometheus", "url": args.prometheus, "queries": queries}
        subject = current_subject(args)
    offline = offline_metrics(pipeline, with_flag_rate=replay_report is not None or args.holdout_traffic)
    analysis = analyze(online, offline, baseline_version=baseline_version, canary_version=canary_version,
                       canary_percent=expected_canary_percent(args), detectable=args.detectable_recall_difference,
                       paired=paired)
    analysis["evidence_source"] = evidence
    analysis["subject"] = subject
    print(format_analysis(analysis))

    code = 0
    if args.apply:
        tracking_uri = (getattr(args, "tracking_uri", "") or args.settings.MLFLOW_TRACKING_URI
                        or pipeline.get("mlflow", {}).get("tracking_uri", ""))
        code, applied = apply_recommendation(analysis["action"], args, tracking_uri, subject)
        analysis["applied"] = {"action": analysis["action"], "target": args.target, "exit_code": code,
                               "detail": applied}
        print(f"applied: {applied}")
    if args.analysis_out:
        args.analysis_out.parent.mkdir(parents=True, exist_ok=True)
        args.analysis_out.write_text(json.dumps(json_safe(analysis), indent=2, allow_nan=False))
    return code
