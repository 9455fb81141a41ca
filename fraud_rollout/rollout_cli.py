"""`fraud-rollout rollout start|status|abort`: the progressive rollout controller
(`fraud_control.rollout.controller`) on the local state dir or a cluster."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fraud.canary_percent import splits_traffic
from fraud.waiting import poll

from fraud_rollout.args import (
    DefaultsHelpRawEpilog,
    UsageError,
    detectable_difference,
    listen_port,
    non_negative_float,
    non_negative_int,
)
from fraud_rollout.targets import add_target_options, open_store

DEFAULT_PLAN = "5,20,50,100"  # fraud_canary.progressive.RolloutPolicy().plan, without importing it at parse time
DEFAULT_TIMEOUT_S = 600.0  # fraud_control.canary.operations.DEFAULT_TIMEOUT_S

#: `rollout start`'s exit codes: how the rollout ended, so a script or a pipeline step can branch on it
#: without parsing the output. 1 (failed or refused) and 2 (bad input) are every command's.
EXIT_PROMOTED = 0
EXIT_ROLLED_BACK = 3
EXIT_INCONCLUSIVE = 4
EXIT_ABORTED = 5
START_EPILOG = f"""exit codes of `rollout start`:
  {EXIT_PROMOTED}  promoted
  {EXIT_ROLLED_BACK}  rolled back
  {EXIT_INCONCLUSIVE}  inconclusive: paused at its step, the canary left where it was
  {EXIT_ABORTED}  aborted (`rollout abort`)
  1  the rollout failed or was refused (the message says why)
  2  bad input (one line naming the value)"""


def register(commands) -> None:
    rollout = commands.add_parser("rollout", help="progressive rollout: canaryTrafficPercent through a plan",
                                  epilog=START_EPILOG, formatter_class=DefaultsHelpRawEpilog)
    actions = rollout.add_subparsers(dest="action", required=True, metavar="ACTION")
    # one parser per action, each with only its own options (`rollout status --plan …` is an error)
    start = actions.add_parser("start", help="run the rollout controller until it promotes, rolls back or pauses",
                               epilog=START_EPILOG, formatter_class=DefaultsHelpRawEpilog)
    status = actions.add_parser("status", help="the rollout's state: its step, verdicts and evidence")
    abort = actions.add_parser("abort", help="stop the rollout and roll the canary back")
    for parser in (start, status, abort):
        add_target_options(parser)
        parser.set_defaults(func=rollout_command)
    start.add_argument("--json", action="store_true", help="print the final report as JSON")
    status.add_argument("--json", action="store_true", help="print the state as JSON")
    for parser, waits_for in ((start, "after each patch"), (abort, "for the controller to roll back")):
        parser.add_argument("--timeout", type=non_negative_float, default=DEFAULT_TIMEOUT_S,
                            help=f"seconds to wait for Ready {waits_for} (default %(default)s)")
        parser.add_argument("--tracking-uri", default="",
                            help="MLflow server: aliases follow, decisions tag the candidate (default $MLFLOW_TRACKING_URI)")
    add_start_options(start)
    abort.add_argument("--reason", default="operator abort", help="recorded with the abort (default: %(default)s)")


def add_start_options(start: argparse.ArgumentParser) -> None:
    start.add_argument("--plan", default=DEFAULT_PLAN, help=f"canaryTrafficPercent steps, ending at 100 (default {DEFAULT_PLAN})")
    start.add_argument("--max-holds", type=non_negative_int, default=3,
                       help="windows a step may hold before it stops inconclusive (default 3)")
    start.add_argument("--window", type=non_negative_float, default=60.0, metavar="SECONDS",
                       help="each window lasts at least this long (default 60)")
    start.add_argument("--min-requests", type=non_negative_int, default=0, metavar="N",
                       help="and counts at least N requests (default 0)")
    start.add_argument("--poll", type=positive_float, default=2.0, metavar="SECONDS",
                       help="how often the window's counters (and an abort) are checked (default 2)")
    start.add_argument("--metrics-url", help="the transformer's /metrics (default, local: the runtime's transformer)")
    start.add_argument("--prometheus", metavar="URL", help="instead: a Prometheus server scraping the transformer")
    start.add_argument("--selector", default='job="fraud-detector"',
                       help="label matchers of the transformer's series (default %(default)s)")
    start.add_argument("--labels-from", metavar="STORE",
                       help="also: the prediction store (SQLite file or postgresql://…) whose late labels add to the "
                            "evidence as they mature")
    start.add_argument("--label-maturity-days", type=non_negative_float, default=0.0, metavar="DAYS",
                       help="--labels-from: count a label once its prediction is this many days old (default 0)")
    start.add_argument("--report", type=Path, dest="pipeline_report",
                       help="pipeline report.json with the offline metrics (default .fraud-rollout/run/report.json, "
                            "else the demo's, if present)")
    start.add_argument("--detectable-recall-difference", type=detectable_difference,
                       help="recall margin: labelled recall within it of the holdout's promotes, below it rolls back "
                            "(default 0.10)")
    start.add_argument("--fail-closed", action="store_true",
                       help="roll back a step that stays inconclusive after --max-holds (default: pause there)")
    start.add_argument("--log", type=Path, help="JSON lines, one per step (default: rollout.jsonl in the state dir; "
                                                "stdout for --target kserve)")
    start.add_argument("--out", type=Path, help="write the final report ({'rollout': {..., 'steps': [...]}}) here")
    start.add_argument("--analysis-port", type=listen_port,
                       help="serve GET /analysis on this port (0: a free one, printed at start; 200 with the verdict in JSON; 503 when the analysis failed)")
    start.add_argument("--analysis-host", default="127.0.0.1", help="address of the analysis endpoint (0.0.0.0 in a pod)")


def positive_float(text: str) -> float:
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return value


def _states(args: argparse.Namespace, store):
    from fraud_control.rollout.run import rollout_states

    return rollout_states(args.target, store, args.state_dir)


def _offline(args: argparse.Namespace) -> dict:
    from fraud_canary.analysis import offline_metrics
    from fraud_ops.local_defaults import pipeline_report
    from fraud_ops.replay_source import read_pipeline_report

    path = args.pipeline_report or pipeline_report()
    if args.pipeline_report is None and not path.is_file():
        return {}
    return offline_metrics(read_pipeline_report(path, option="--report"),
                           with_flag_rate=False)


def rollout_command(args: argparse.Namespace) -> int:
    return {"start": start_command, "status": status_command, "abort": abort_command}[args.action](args)


def rollout_options(args: argparse.Namespace):
    """`rollout start`'s options as the control layer's `RolloutOptions`."""
    from fraud_control.rollout.run import RolloutOptions, parse_plan

    return RolloutOptions(target=args.target, state_dir=args.state_dir, plan=parse_plan(args.plan),
                          max_holds=args.max_holds, window_s=args.window, min_requests=args.min_requests,
                          poll_s=args.poll, metrics_url=args.metrics_url or "", prometheus_url=args.prometheus or "",
                          selector=args.selector, labels_from=args.labels_from or "",
                          label_maturity_days=args.label_maturity_days, offline=_offline(args),
                          detectable=args.detectable_recall_difference, fail_closed=args.fail_closed,
                          tracking_uri=args.tracking_uri,
                          timeout_s=args.timeout, log=args.log)


def start_command(args: argparse.Namespace, source=None) -> int:
    """`rollout start`; `source` replaces the live evidence (the demo's labelled replay). Exits with
    how the rollout ended (EXIT_*, in `rollout --help`)."""
    from fraud_control.inferenceservice.store import NotDeployed, RolloutError
    from fraud_control.rollout.controller import ABORTED, PAUSED, PROMOTED, ROLLED_BACK, RolloutRunning
    from fraud_control.rollout.run import rollout_controller

    options = rollout_options(args)
    store = open_store(args, args.settings)
    endpoint = None
    try:
        controller = rollout_controller(options, store, source, settings=args.settings)
    except NotDeployed as error:
        raise UsageError(str(error)) from None
    if args.analysis_port is not None:
        from fraud_control.rollout.analysis_endpoint import AnalysisEndpoint

        try:
            endpoint = AnalysisEndpoint(args.analysis_port, args.analysis_host)
        except OSError as error:
            raise UsageError(f"--analysis-port {args.analysis_port}: cannot listen on {args.analysis_host} "
                             f"({error.strerror})") from None
        print(f"analysis endpoint: {endpoint.url}", file=sys.stderr, flush=True)
        controller.on_step = endpoint.update
    try:
        state = controller.run()
    except RolloutRunning as error:
        raise UsageError(str(error)) from None
    except RolloutError as error:
        print(f"fraud-rollout rollout start: {error}", file=sys.stderr)
        return 1
    finally:
        if endpoint is not None:
            endpoint.close()
    report = {"rollout": state}
    if args.out:
        from fraud.files import write_json

        write_json(args.out, report)
    if args.json:
        from fraud.files import json_safe

        print(json.dumps(json_safe(report), indent=2, allow_nan=False))
    else:
        print(format_state(state))
    exit_codes = {PROMOTED: EXIT_PROMOTED, ROLLED_BACK: EXIT_ROLLED_BACK, PAUSED: EXIT_INCONCLUSIVE,
                  ABORTED: EXIT_ABORTED}
    return exit_codes[state["status"]]  # any other end (failed) raised above


def format_state(state: dict, running: bool | None = None) -> str:
    last = state.get("last_decision") or {}
    shown = state.get("status") if running is not False or state.get("status") != "running" else "stopped (controller gone)"
    lines = [f"rollout of {state.get('canary_version')} (over {state.get('baseline_version')}) on {state.get('where')}: "
             f"{shown}", f"plan {state.get('plan')}, step {state.get('percent')} %, holds {state.get('holds', 0)} "
             f"of {state.get('max_holds')}, started {state.get('started')} (pid {state.get('pid')} on {state.get('host')})"]
    if last:
        lines.append(f"last decision: {last.get('decision')} at {last.get('percent')} %: "
                     f"{(last.get('reasons') or [''])[0]}")
    result = state.get("result") or {}
    if result:
        lines.append(f"result: {result.get('action') or result.get('status')}"
                     + (f" ({result['note']})" if result.get("note") else ""))
    return "\n".join(lines)


def status_command(args: argparse.Namespace) -> int:
    store = open_store(args, args.settings)
    states = _states(args, store)
    state = states.read()
    if state is None:
        raise UsageError(f"rollout status: no rollout has run on {store.where} (nothing in {states.where}); "
                         "start one with `fraud-rollout rollout start`")
    running = state.get("status") == "running" and states.is_running(state)
    if args.json:
        from fraud.files import json_safe

        print(json.dumps(json_safe({**state, "controller_running": running}), indent=2, allow_nan=False))
    else:
        print(format_state(state, running))
    return 0


def abort_command(args: argparse.Namespace) -> int:
    """Ask the running controller to roll back and wait for it; with none running, roll back directly."""
    from fraud_control.canary import operations as canary
    from fraud_control.inferenceservice.store import NotDeployed, RolloutError, require
    from fraud_control.rollout.controller import ABORTED, RUNNING, running_rollout

    settings = args.settings
    store = open_store(args, settings)
    states = _states(args, store)
    running = running_rollout(states)
    if running is not None:
        states.request_abort(args.reason)
        print(f"asked the rollout controller (pid {running.get('pid')} on {running.get('host')}) to abort", flush=True)
        def stopped() -> tuple[dict] | None:
            state = states.read() or {}
            return (state,) if state.get("status") != RUNNING or not states.is_running(state) else None

        found = poll(stopped, timeout_s=args.timeout, poll_s=0.2)
        if found is None:
            print(f"fraud-rollout rollout abort: the controller did not stop within {args.timeout:g} s "
                  f"({states.where} still says running)", file=sys.stderr)
            return 1
        state = found[0]
        print(format_state(state, False))
        return 0 if state.get("status") == ABORTED else 1
    try:
        current = require(store)
    except NotDeployed as error:
        raise UsageError(str(error)) from None
    percent = canary.canary_percent_of(current)
    if not splits_traffic(percent):
        raise UsageError(f"rollout abort: nothing to abort on {store.where}: no rollout controller runs and no "
                         f"canary is in progress (canaryTrafficPercent {'absent' if percent is None else percent})")
    tracking_uri = args.tracking_uri or settings.MLFLOW_TRACKING_URI
    try:
        outcome = canary.rollback(store, tracking_uri=tracking_uri, timeout_s=args.timeout)
    except RolloutError as error:
        print(f"fraud-rollout rollout abort: {error}", file=sys.stderr)
        return 1
    state = states.read()
    if state is not None and state.get("status") == RUNNING:  # its controller died: say how it ended
        state.update(status=ABORTED, result={"status": ABORTED, "action": outcome.action,
                                              "note": f"no controller running; rolled back directly: {args.reason}"})
        states.write(state)
    print(f"no rollout controller runs on {store.where}: rolled back directly: {outcome.action}"
          + (f"\n{outcome.registry}" if outcome.registry else ""))
    return 0
