"""`fraud-rollout deploy`: the pipeline's deploy step (`fraud_control.canary.deploy.deploy`) from the
command line. The InferenceService is created with the baseline if absent, then the candidate
goes out as a canary next to it; on `--target kserve` both models are uploaded to S3 first
(settings from the environment: `fraud.settings.Settings`)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fraud.canary_percent import DEFAULT_CANARY_PERCENT
from fraud_control.canary.operations import DEFAULT_TIMEOUT_S
from fraud_control.inferenceservice.isvc import DEFAULT_IMAGE

from fraud_rollout.args import UsageError, canary_percent, non_negative_float
from fraud_rollout.targets import add_target_options


def register(commands) -> None:
    deploy = commands.add_parser(
        "deploy", help="the pipeline's deploy step: baseline rolled out, candidate as a canary",
        description="The pipeline's deploy step from the command line: create the InferenceService with the "
                    "baseline if absent, then canary the candidate. --target kserve uploads both models to S3 "
                    "first (S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY from the environment).")
    deploy.add_argument("--baseline", type=Path, required=True, metavar="ARTIFACT",
                        help="exported model the InferenceService is created with if absent (a train step's model dir)")
    deploy.add_argument("--candidate", type=Path, required=True, metavar="ARTIFACT",
                        help="exported model to roll out as the canary")
    deploy.add_argument("--canary-percent", type=canary_percent, default=DEFAULT_CANARY_PERCENT, metavar="PERCENT",
                        help=f"the candidate's share of traffic (default {DEFAULT_CANARY_PERCENT})")
    deploy.add_argument("--supersede", action="store_true",
                        help="replace another candidate's canary that is still running instead of refusing")
    deploy.add_argument("--timeout", type=non_negative_float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                        help=f"seconds to wait for Ready after each change (default {DEFAULT_TIMEOUT_S:g})")
    add_target_options(deploy, with_name=False)
    kserve = deploy.add_argument_group("--target kserve: where the models go")
    kserve.add_argument("--bucket", help="S3 bucket the models are uploaded to (default: the deploy step's, fraud-models)")
    kserve.add_argument("--serving-image", default=DEFAULT_IMAGE, metavar="IMAGE",
                        help=f"image of the predictor and transformer containers (default {DEFAULT_IMAGE})")
    deploy.add_argument("--prediction-log-url", type=prediction_log_url, default=None, metavar="URL",
                        help="the prediction-log sink: the InferenceService's transformer gets KServe's payload "
                             "logger (mode all) posting to it, e.g. http://fraud-prediction-log.<namespace>.svc."
                             "cluster.local (default: no logger)")
    deploy.add_argument("--json", action="store_true", help="print what was done and the status as JSON")
    deploy.set_defaults(func=deploy_command)


def prediction_log_url(value: str) -> str:
    """An http(s) URL with a host (KServe's webhook accepts any string; the agent would fail at every post)."""
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"{value!r} is not an http(s) URL; give the sink's address, e.g. "
                                         "http://fraud-prediction-log.<namespace>.svc.cluster.local")
    return value


def exported_model(option: str, root: Path) -> Path:
    """`root` if it holds one exported model, else UsageError naming the option and the path."""
    from fraud.export import METADATA_FILE, MODEL_NAME, read_metadata

    if not root.is_dir():
        raise UsageError(f"{option} {root}: no such directory (pass an exported model: a train step's model dir)")
    expected = f"expected {MODEL_NAME}/<version>/{METADATA_FILE} with model_version and contract_id"
    try:
        metadata = read_metadata(root)
    except (FileNotFoundError, ValueError) as error:
        raise UsageError(f"{option} {root}: not an exported model ({expected}; {error})") from None
    missing = [key for key in ("model_version", "contract_id") if key not in metadata]
    if missing:
        raise UsageError(f"{option} {root}: not an exported model ({expected}; {', '.join(missing)} missing)")
    return root


def deploy_command(args: argparse.Namespace) -> int:
    """Exit 0 with what was done, 1 when the rollout was refused or failed, 2 on bad input."""
    from fraud_control.canary.deploy import deploy
    from fraud_control.inferenceservice.store import RolloutError
    from minio.error import S3Error
    from urllib3.exceptions import HTTPError

    baseline = exported_model("--baseline", args.baseline)
    candidate = exported_model("--candidate", args.candidate)
    if args.target == "kserve" and not args.namespace:
        raise UsageError("--namespace is required with --target kserve")
    optional = {"bucket": args.bucket} if args.bucket else {}
    try:
        rollout = deploy(args.target, baseline, candidate, namespace=args.namespace or "default",
                         canary_percent=args.canary_percent, supersede=args.supersede, state_dir=args.state_dir,
                         image=args.serving_image, timeout_s=args.timeout, settings=args.settings,
                         kubeconfig=args.kubeconfig, context=args.context,
                         prediction_log_url=args.prediction_log_url or "", **optional)
    except RolloutError as error:
        print(f"fraud-rollout deploy: {error}", file=sys.stderr)
        return 1
    except (S3Error, HTTPError) as error:
        raise UsageError(f"uploading to S3 failed (S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY): "
                         f"{type(error).__name__}: {error}") from None
    if args.json:
        print(json.dumps({"action": rollout.action, "status": rollout.status}, default=str))
    else:
        print(describe(rollout, args))
    return 0


def describe(rollout, args: argparse.Namespace) -> str:
    """Two lines: where and what was done; the traffic split and the generation."""
    status = rollout.status
    where = (f"{status['namespace']}/{status['name']}" if args.target == "kserve"
             else f"{status['name']} in {args.state_dir}")
    split = ", ".join(f"{entry.get('percent', 0)} % {entry.get('revisionName') or '-'}"
                      f"{' (' + entry['tag'] + ')' if entry.get('tag') else ''}" for entry in status["traffic"])
    ready = "Ready" if status["ready"] else "not Ready"
    return (f"{where}: {rollout.action}\n"
            f"traffic: {split or '(none reported)'}; generation {status['generation']}, observedGeneration "
            f"{status['observedGeneration']}, {ready}")
