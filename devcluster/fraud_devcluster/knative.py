"""Knative Serving's revision and route controllers, played in `status` (no pods run here), the
way KServe's own controller tests play them (pkg/controller/v1beta1/inferenceservice/
controller_test.go): each change of a Service's template is a new Revision object
`<service>-0000N`; a revision turns Ready once its storage URI resolves in MinIO (the storage
initializer would fail otherwise); the Service's traffic targets resolve `latestRevision` to the
latest *ready* revision, as Knative's route does, and each tag gets its own URL.

Everything else is KServe's real controller reading this status."""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from typing import Any

from fraud.artifact_store import S3Settings, missing_under
from fraud.settings import Settings
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("knative-standin")
GROUP, VERSION = "serving.knative.dev", "v1"
STORAGE_URI_ANNOTATION = "internal.serving.kserve.io/storage-initializer-sourceuri"
TEMPLATE_HASH = "fraud-rollout.devcluster/template-hash"
SERVICE_LABEL = "serving.knative.dev/service"
DOMAIN = "example.com"


def template_hash(template: dict) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]


def storage_uri(template: dict) -> str:
    """What the storage initializer would pull: KServe's annotation, else a STORAGE_URI env var."""
    uri = template.get("metadata", {}).get("annotations", {}).get(STORAGE_URI_ANNOTATION, "")
    for container in template.get("spec", {}).get("containers", []):
        for env in container.get("env", []):
            if env.get("name") == "STORAGE_URI" and not uri:
                uri = env.get("value", "")
    return uri


def condition(kind: str, status: str, reason: str = "", message: str = "") -> dict:
    found = {"type": kind, "status": status,
             "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return {**found, **({"reason": reason} if reason else {}), **({"message": message} if message else {})}


def resolve_traffic(spec_traffic: list[dict] | None, ready: str | None, service: str, namespace: str) -> list[dict]:
    """The route's status.traffic: `latestRevision` resolved to the latest ready revision; tags get URLs."""
    resolved = []
    for target in spec_traffic or [{"latestRevision": True, "percent": 100}]:
        entry = {k: target[k] for k in ("tag", "percent", "latestRevision") if k in target}
        entry["revisionName"] = ready if target.get("latestRevision") else target.get("revisionName")
        if entry["revisionName"] is None:
            continue
        entry.setdefault("latestRevision", False)
        if "tag" in target:
            entry["url"] = f"http://{target['tag']}-{service}-{namespace}.{DOMAIN}"
        resolved.append(entry)
    return resolved


class Standin:
    """One pass over every Knative Service: `reconcile_all()`; `run()` repeats it."""

    def __init__(self, api: client.CustomObjectsApi, storage) -> None:
        self.api, self.storage = api, storage  # storage(uri) -> "" when it resolves, else why not
        self.seen: dict[str, str] = {}  # uid -> resourceVersion last reconciled

    def revisions(self, namespace: str, service: str) -> list[dict]:
        items = self.api.list_namespaced_custom_object(GROUP, VERSION, namespace, "revisions",
                                                       label_selector=f"{SERVICE_LABEL}={service}")["items"]
        return sorted(items, key=lambda r: r["metadata"]["name"])

    def new_revision(self, ksvc: dict, number: int) -> dict:
        meta, template = ksvc["metadata"], ksvc["spec"]["template"]
        name = f"{meta['name']}-{number:05d}"
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Revision",
                "metadata": {"name": name, "namespace": meta["namespace"],
                             "labels": {**template.get("metadata", {}).get("labels", {}), SERVICE_LABEL: meta["name"],
                                        "serving.knative.dev/configurationGeneration": str(number)},
                             "annotations": {**template.get("metadata", {}).get("annotations", {}),
                                             TEMPLATE_HASH: template_hash(template)},
                             "ownerReferences": [{"apiVersion": f"{GROUP}/{VERSION}", "kind": "Service",
                                                  "name": meta["name"], "uid": meta["uid"], "controller": True}]},
                "spec": template.get("spec", {})}
        log.info("revision %s/%s created", meta["namespace"], name)
        return self.api.create_namespaced_custom_object(GROUP, VERSION, meta["namespace"], "revisions", body)

    def mark_revision(self, revision: dict) -> str:
        """Ready once its storage URI resolves; returns "" when ready, else why not."""
        ready = [c for c in revision.get("status", {}).get("conditions", []) if c["type"] == "Ready"]
        if ready:  # decided once, as a revision whose storage initializer failed stays failed
            return "" if ready[0]["status"] == "True" else ready[0].get("message", "failed")
        uri = storage_uri({"metadata": {"annotations": revision["metadata"].get("annotations", {})},
                           "spec": revision.get("spec", {})})
        problem = self.storage(uri) if uri else ""
        status = ("True", "", "") if not problem else ("False", "RevisionFailed", problem)
        meta = revision["metadata"]
        self.api.patch_namespaced_custom_object_status(GROUP, VERSION, meta["namespace"], "revisions", meta["name"], {
            "status": {"observedGeneration": meta.get("generation", 1), "conditions": [condition("Ready", *status)]}})
        return problem

    def reconcile(self, ksvc: dict) -> None:
        meta = ksvc["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        revisions = self.revisions(namespace, name)
        latest_hash = revisions[-1]["metadata"]["annotations"].get(TEMPLATE_HASH) if revisions else None
        if latest_hash != template_hash(ksvc["spec"]["template"]):
            revisions.append(self.new_revision(ksvc, len(revisions) + 1))
        problems = {r["metadata"]["name"]: self.mark_revision(r) for r in revisions}
        created = revisions[-1]["metadata"]["name"]
        ready = next((n for n in reversed(problems) if not problems[n]), None)
        traffic = resolve_traffic(ksvc["spec"].get("traffic"), ready, name, namespace)
        # Knative's words for a latest revision that failed (its route keeps the last ready one)
        configured = ("True", "", "") if not problems[created] else (
            "False", "RevisionFailed", f'Revision "{created}" failed with message: {problems[created]}.')
        routed = ("True", "", "") if traffic else ("Unknown", "RevisionMissing", "no ready revision to route to")
        status = {
            "observedGeneration": meta["generation"], "latestCreatedRevisionName": created,
            "url": f"http://{name}.{namespace}.{DOMAIN}",
            "address": {"url": f"http://{name}.{namespace}.svc.cluster.local"}, "traffic": traffic,
            "conditions": [condition("ConfigurationsReady", *configured), condition("RoutesReady", *routed),
                           condition("Ready", *(configured if configured[0] != "True" else routed))]}
        if ready:
            status["latestReadyRevisionName"] = ready
        if _differs(ksvc.get("status", {}), status):
            self.api.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "services", name,
                                                           {"status": status})
            log.info("service %s/%s: generation %s, created %s, ready %s, traffic %s", namespace, name,
                     meta["generation"], created, ready, [(t["revisionName"], t["percent"]) for t in traffic])

    def reconcile_all(self) -> None:
        for ksvc in self.api.list_cluster_custom_object(GROUP, VERSION, "services")["items"]:
            meta = ksvc["metadata"]
            if self.seen.get(meta["uid"]) == meta["resourceVersion"]:
                continue  # nothing changed since: revisions are decided once
            try:
                self.reconcile(ksvc)
                self.seen[meta["uid"]] = meta["resourceVersion"]
            except ApiException as error:
                if error.status not in (404, 409):  # deleted or changed meanwhile: the next pass sees it
                    raise

    def run(self, interval_s: float = 0.25) -> None:
        log.info("reconciling Knative Services")
        while True:
            self.reconcile_all()
            time.sleep(interval_s)


def _differs(old: dict, new: dict) -> bool:
    def strip(status: dict) -> Any:
        return json.dumps({**status, "conditions": [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                                                    for c in status.get("conditions", [])]}, sort_keys=True)
    return strip(old) != strip(new)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fraud_devcluster.knative")
    parser.add_argument("--kubeconfig", required=True)
    args = parser.parse_args(argv)
    settings = S3Settings.from_env(Settings().model_dump())  # the cluster's MinIO: the environment `cluster.up` sets
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    api = client.CustomObjectsApi(config.new_client_from_config(config_file=args.kubeconfig))
    Standin(api, lambda uri: missing_under(uri, settings)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
