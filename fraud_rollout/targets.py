"""`--target local|kserve` and its options, shared by `canary` and `replay`: which
InferenceService store a command works on."""
from __future__ import annotations

import argparse

from fraud.settings import Settings
from fraud_control.inferenceservice.store import InferenceServiceStore

from fraud_rollout.args import UsageError, state_dir_option


def add_target_options(parser: argparse.ArgumentParser, *, with_name: bool = True) -> None:
    """`with_name=False` for a command that always works on the fraud-detector (deploy)."""
    parser.add_argument("--target", choices=["local", "kserve"], default="local",
                        help="local state dir, or the InferenceService in a cluster")
    state_dir_option(parser)
    kserve = parser.add_argument_group("--target kserve")
    kserve.add_argument("--namespace", help="namespace of the InferenceService (required with --target kserve)")
    if with_name:
        kserve.add_argument("--name", default="fraud-detector", help="InferenceService name")
    kserve.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster account, else $KUBECONFIG)")
    kserve.add_argument("--context", help="kubeconfig context")


def open_store(args: argparse.Namespace, settings: Settings) -> InferenceServiceStore:
    """The store `args` names; UsageError (exit 2) for a missing --namespace, TargetUnavailable
    (a ValueError, exit 2) for no usable kubeconfig."""
    name = getattr(args, "name", None) or "fraud-detector"
    if getattr(args, "target", "local") == "kserve":
        from fraud_control.inferenceservice.kube_store import KubeStore, custom_objects_api

        if not getattr(args, "namespace", None):
            raise UsageError("--namespace is required with --target kserve")
        api = custom_objects_api(getattr(args, "kubeconfig", None) or settings.KUBECONFIG or None,
                                 getattr(args, "context", None), in_cluster=settings.in_cluster)
        return KubeStore(api, args.namespace, name)
    from fraud_control.inferenceservice.local_store import LocalStore

    return LocalStore(args.state_dir, name)


def current_subject(args: argparse.Namespace) -> dict | None:
    """What the store `args` names has deployed now (`fraud_control.inferenceservice.subject`), None if nothing."""
    from fraud_control.inferenceservice.subject import read_subject

    subject = read_subject(open_store(args, args.settings))
    return None if subject is None else subject.to_dict()
