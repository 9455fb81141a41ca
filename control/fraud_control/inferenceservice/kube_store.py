"""The InferenceService store on a Kubernetes API server, through `CustomObjectsApi` with plain
dicts (DESIGN decision 9). A 403 names the missing RBAC permission; other API errors name the
request. Importing the kubernetes client takes seconds, so it happens only where a call needs it.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fraud_control.inferenceservice.isvc import GROUP, NAME, PLURAL, VERSION
from fraud_control.inferenceservice.store import RolloutError, TargetUnavailable

if TYPE_CHECKING:
    from kubernetes import client

REQUEST_TIMEOUT_S = 30.0
#: Every write is validated strictly: a field the CRD's schema does not know fails the request
#: instead of being pruned silently (a typo would otherwise deploy without it).
FIELD_VALIDATION = "Strict"
RESOURCE = f"{PLURAL}.{GROUP}"
JSON_PATCH = "application/json-patch+json"


class MissingPermission(RolloutError):
    """The API server answered 403: the caller's service account lacks an RBAC verb."""

    def __init__(self, verb: str, namespace: str, server_message: str, resource: str = PLURAL,
                 group: str = GROUP) -> None:
        self.verb, self.namespace = verb, namespace
        super().__init__(
            f"missing RBAC permission: verb {verb!r} on resource {resource!r} (apiGroup {group!r}) in namespace "
            f"{namespace!r}. Grant it with a Role and RoleBinding in that namespace for the service account "
            f"the step runs as (manifests/base/pipeline-rbac.yaml). API server said: {server_message}")


def custom_objects_api(kubeconfig: str | None = None, context: str | None = None,
                       in_cluster: bool = False) -> client.CustomObjectsApi:
    """A client from the pod's service account when `in_cluster` (Settings.in_cluster) and no
    kubeconfig or context is given, else from a kubeconfig (`$KUBECONFIG` or ~/.kube/config).
    TargetUnavailable (a user error) when there is no usable kubeconfig."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    try:
        if kubeconfig is None and context is None and in_cluster:
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            return client.CustomObjectsApi(reporting_unreachable(client.ApiClient(configuration)))
        api_client = config.new_client_from_config(config_file=kubeconfig, context=context)
        return client.CustomObjectsApi(reporting_unreachable(api_client))
    except (ConfigException, FileNotFoundError) as error:
        shown = kubeconfig or "$KUBECONFIG or ~/.kube/config"
        # the client says "Invalid kube-config file" for a file that is not there at all
        files = [Path(f) for f in (kubeconfig or "").split(os.pathsep) if f]
        reason = "no such file" if files and not any(f.exists() for f in files) else str(error)
        raise TargetUnavailable(f"--target kserve: no usable kubeconfig ({shown}: {reason}); pass --kubeconfig "
                                "FILE (and --context) or run inside the cluster") from None


class ApiServerUnreachable(TargetUnavailable):
    """No answer from the API server (VPN down, an expired or wrong context, the cluster stopped)."""

    def __init__(self, server: str, reason: str) -> None:
        self.server = server
        super().__init__(f"--target kserve: cannot reach the Kubernetes API server at {server} ({reason}); check the "
                         "kubeconfig's context (--context), that the VPN is up, and that `kubectl cluster-info` answers")


def reporting_unreachable(api_client: client.ApiClient) -> client.ApiClient:
    """`api_client` with every request's connection failure raised as ApiServerUnreachable: one place
    for every API this client serves (the InferenceService, the rollout's ConfigMap, its Events).

    urllib3 raises MaxRetryError (NewConnectionError, a timeout, DNS) once its retries are spent, and
    the kubernetes client passes it through; a TLS failure it wraps as ApiException status 0."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    request = api_client.request
    server = api_client.configuration.host

    def request_or_unreachable(*args: Any, **kwargs: Any) -> Any:
        try:
            return request(*args, **kwargs)
        except HTTPError as error:
            raise ApiServerUnreachable(server, _connection_failure(getattr(error, "reason", None) or error)) from None
        except ApiException as error:
            if error.status != 0:
                raise
            raise ApiServerUnreachable(server, _connection_failure(error.reason)) from None

    api_client.request = request_or_unreachable
    return api_client


def _connection_failure(cause: Any) -> str:
    """The end of urllib3's message ("[Errno 111] Connection refused", "Read timed out. …"), not the
    object reprs and URL before it."""
    text = " ".join(str(cause).split())
    return text.rsplit("): ", 1)[-1].rsplit(": ", 1)[-1] if ": " in text else text


class NamespaceNotFound(TargetUnavailable):
    """The namespace named does not exist on the API server (a typo, or not created yet)."""

    def __init__(self, namespace: str, server: str) -> None:
        self.namespace = namespace
        super().__init__(f"--namespace {namespace}: no such namespace on {server}; create it (`kubectl create "
                         f"namespace {namespace}`) or pass the namespace the InferenceService belongs in")


def _missing_namespace(error: Any) -> str | None:
    """The namespace a 404 says is missing (its Status names kind `namespaces`), else None."""
    try:
        details = json.loads(error.body).get("details") or {}
    except (TypeError, ValueError, AttributeError):
        return None
    return details.get("name") if details.get("kind") == "namespaces" else None


def server_message(error: Any) -> str:
    try:
        return json.loads(error.body).get("message") or error.reason
    except (TypeError, ValueError, AttributeError):
        return str(error.reason)


class KubeStore:
    """The InferenceService `namespace/name` in the cluster `api` talks to."""

    reconciles_on_write = False

    def __init__(self, api: client.CustomObjectsApi, namespace: str, name: str = NAME) -> None:
        self.api, self.namespace, self.name = api, namespace, name
        self.where = f"{namespace}/{name}"

    def _call(self, verb: str, request: Callable[[], Any], missing_ok: bool = False) -> Any:
        """Run one API request; a 403 becomes MissingPermission, other failures a RolloutError that
        names the request; a 404 gives None when `missing_ok`."""
        from kubernetes.client.exceptions import ApiException

        try:
            return request()
        except ApiException as error:
            if error.status == 403:
                raise MissingPermission(verb, self.namespace, server_message(error)) from None
            if error.status == 404 and _missing_namespace(error) == self.namespace:
                raise NamespaceNotFound(self.namespace, self.api.api_client.configuration.host) from None
            if error.status == 404 and missing_ok:
                return None
            raise RolloutError(f"{verb} {RESOURCE} {self.where} failed: HTTP {error.status} "
                               f"{error.reason}: {server_message(error)}") from None

    def get(self) -> dict | None:
        return self._call("get", lambda: self.api.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, self.name, _request_timeout=REQUEST_TIMEOUT_S), missing_ok=True)

    def create(self, manifest: dict) -> dict:
        return self._call("create", lambda: self.api.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, manifest, field_validation=FIELD_VALIDATION,
            _request_timeout=REQUEST_TIMEOUT_S))

    def merge_patch(self, patch: dict) -> dict:
        """`application/merge-patch+json`: what `patch_namespaced_custom_object` sends for a dict."""
        if not isinstance(patch, dict):
            raise TypeError("a merge patch is a dict; use json_patch for a list of operations")
        return self._call("patch", lambda: self.api.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, self.name, patch, field_validation=FIELD_VALIDATION,
            _request_timeout=REQUEST_TIMEOUT_S))

    def json_patch(self, operations: list[dict]) -> dict:
        """`application/json-patch+json` on the custom object.

        kubernetes 30.1's `patch_namespaced_custom_object` always sends merge-patch+json, also for a
        list body, which the API server rejects with 400 ("error decoding patch: json: cannot unmarshal array",
        kubernetes-client/python #2039), so this sends the same request with the right Content-Type.
        """
        path = "/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}"
        params = {"group": GROUP, "version": VERSION, "namespace": self.namespace, "plural": PLURAL,
                  "name": self.name}
        return self._call("patch", lambda: self.api.api_client.call_api(
            path, "PATCH", path_params=params, query_params=[("fieldValidation", FIELD_VALIDATION)],
            header_params={"Accept": "application/json", "Content-Type": JSON_PATCH},
            body=operations, post_params=[], files={}, response_type="object", auth_settings=["BearerToken"],
            _return_http_data_only=True, collection_formats={}, _request_timeout=REQUEST_TIMEOUT_S))
