"""`fraud-rollout cluster up|down`: a real Kubernetes control plane with KServe's controller and
MinIO on loopback (fraud_devcluster), to try `--target kserve` without a cluster."""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def _up(args: argparse.Namespace) -> int:
    from fraud_devcluster import cluster
    from fraud_devcluster.gobuild import BuildFailed
    from fraud_devcluster.servers import ClusterFailed

    print(f"starting kube-apiserver, etcd, KServe's controller, MinIO and the Knative stand-in in {args.dir} "
          "(the first time builds them from their Go modules: about 15 minutes on 2 cores)", flush=True)
    try:
        running = cluster.up(args.dir, progress=lambda line: print(line, flush=True))
    except (BuildFailed, ClusterFailed) as error:
        print(f"fraud-rollout cluster up: error: {error}", file=sys.stderr)
        return 1
    print(f"cluster ready: API server {running.url}, MinIO {running.s3_endpoint}\n"
          f"use it from this shell:  set -a; . {running.env_file}; set +a\n"
          f"then:  kubectl get crd inferenceservices.serving.kserve.io\n"
          f"       fraud-rollout deploy --target kserve --namespace default --baseline MODEL_DIR --candidate MODEL_DIR\n"
          f"stop it:  make cluster-down   (or: fraud-rollout cluster down --dir {args.dir})")
    return 0


def _down(args: argparse.Namespace) -> int:
    from fraud_devcluster import cluster

    stopped = cluster.down(args.dir)
    print(f"stopped {', '.join(stopped)}" if stopped else f"no cluster running in {args.dir}")
    if args.purge and args.dir.exists():  # etcd's data, MinIO's bucket, the logs and certificates
        shutil.rmtree(args.dir)
        print(f"removed {args.dir}")
    return 0


def register(commands) -> None:
    from fraud_devcluster.cluster import DEFAULT_DIR

    cluster = commands.add_parser("cluster", help="a real control plane on loopback: kube-apiserver, KServe, MinIO")
    actions = cluster.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, handler, text in (("up", _up, "build (once) and start it; prints how to use it"),
                                ("down", _down, "stop it")):
        action = actions.add_parser(name, help=text)
        action.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"its state directory (default {DEFAULT_DIR})")
        action.set_defaults(func=handler)
        if name == "down":
            action.add_argument("--purge", action="store_true",
                                help="also remove its state directory (etcd's data, MinIO's objects, logs)")
