"""FAKE Kubernetes API server for KServe InferenceServices, on a loopback port.

It serves the real REST paths and answers the way the API server does for a custom resource with
a status subresource, so the real `kubernetes` client can drive it unchanged:

    GET    /apis/serving.kserve.io/v1beta1/inferenceservices                          list (all namespaces)
    GET    /apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices          list
    POST   /apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices          create
    GET    /apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices/{name}   get
    PATCH  …/{name}   application/merge-patch+json | application/json-patch+json
    PUT    …/{name}   replace (metadata.resourceVersion required, 409 on a stale one)
    DELETE …/{name}

- `metadata.resourceVersion` changes on every write (including status writes by the controller);
  `metadata.generation` only when `spec` changes; `status` in a request body is ignored.
- Errors are `Status` objects: 404 NotFound, 409 AlreadyExists / Conflict, 422 Invalid,
  403 Forbidden (for the verbs in `forbidden_verbs`, worded like the RBAC authorizer),
  415 UnsupportedMediaType (strategic merge patch is not supported for custom resources).
- A merge patch whose body is a JSON array fails with the API server's 422
  ("couldn't get version/kind; json parse error: … cannot unmarshal array …"): that is what a
  real cluster answers when `CustomObjectsApi.patch_namespaced_custom_object` is handed a JSON
  patch list, because kubernetes 30.1 always sends it as `application/merge-patch+json`.
- `status` is written by `FakeKServeController` (see controller.py) whenever a request reads
  the object, so readiness arrives after real time has passed, never on request.
- Watches on the collection (`?watch=true`, optional `fieldSelector=metadata.name=…`,
  `resourceVersion`, `timeoutSeconds`) stream ADDED/MODIFIED/DELETED events, enough for
  `kubectl wait`; discovery (`/api`, `/apis`, `/apis/serving.kserve.io/v1beta1`) lets kubectl map
  `isvc` to the REST path. No OpenAPI, no server-side apply, no Table printing.
"""
from __future__ import annotations

import copy
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from tests.fake_kube.controller import ControllerState, FakeKServeController
from tests.fake_kube.patches import PatchError, json_patch, merge_patch

GROUP, VERSION, PLURAL, KIND = "serving.kserve.io", "v1beta1", "inferenceservices", "InferenceService"
RESOURCE = f"{PLURAL}.{GROUP}"
_PREFIX = f"/apis/{GROUP}/{VERSION}"
_NAMESPACED = re.compile(rf"^{re.escape(_PREFIX)}/namespaces/([^/]+)/{PLURAL}(?:/([^/]+))?/?$")
_ALL_NAMESPACES = re.compile(rf"^{re.escape(_PREFIX)}/{PLURAL}/?$")
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MERGE_PATCH, JSON_PATCH = "application/merge-patch+json", "application/json-patch+json"
ACCEPTED_PATCH_TYPES = "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"


class ApiError(Exception):
    """Answered as a `Status` object."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def body(self) -> dict:
        status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                  "message": self.message, "reason": self.reason, "code": self.code}
        if self.details is not None:
            status["details"] = self.details
        return status


def not_found(name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{RESOURCE} "{name}" not found',
                    {"name": name, "group": GROUP, "kind": PLURAL})


def invalid(name: str, causes: list[tuple[str, str]]) -> ApiError:
    """422 as the API server words schema and admission errors: one cause per field."""
    text = ", ".join(f"{field}: {message}" for field, message in causes)
    return ApiError(422, "Invalid", f'{KIND}.{GROUP} "{name}" is invalid: {text}',
                    {"name": name, "group": GROUP, "kind": KIND,
                     "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field}
                                for field, message in causes]})


#: Discovery documents, so kubectl can map `isvc` / `inferenceservices` to the REST path.
DISCOVERY = {
    "/api": {"kind": "APIVersions", "versions": ["v1"],
             "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": [{
        "name": GROUP, "versions": [{"groupVersion": f"{GROUP}/{VERSION}", "version": VERSION}],
        "preferredVersion": {"groupVersion": f"{GROUP}/{VERSION}", "version": VERSION}}]},
    f"/apis/{GROUP}": {"kind": "APIGroup", "apiVersion": "v1", "name": GROUP,
                       "versions": [{"groupVersion": f"{GROUP}/{VERSION}", "version": VERSION}],
                       "preferredVersion": {"groupVersion": f"{GROUP}/{VERSION}", "version": VERSION}},
    f"/apis/{GROUP}/{VERSION}": {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{GROUP}/{VERSION}",
                                 "resources": [{"name": PLURAL, "singularName": "inferenceservice", "namespaced": True,
                                                "kind": KIND, "shortNames": ["isvc"], "categories": ["all"],
                                                "verbs": ["delete", "get", "list", "patch", "create", "update", "watch"]}]},
    "/version": {"major": "1", "minor": "32", "gitVersion": "v1.32.0-fake"},
}


def _timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeKubeApiServer:
    """A stateful fake of the API server's `inferenceservices` endpoints plus KServe's controller.

    Use as a context manager; `url` is the host for `kubernetes.client.Configuration`.
    Test knobs (plain attributes, changeable while it runs):
      controller.observe_delay / ready_delay / never_ready / default_deployment_mode,
      forbidden_verbs: RBAC verbs ("get", "list", "create", "patch", "update", "delete")
      answered 403, user: who the 403 message says is asking.
    `requests` records (verb, method, path, content type) of every request served.
    """

    def __init__(self, controller: FakeKServeController | None = None, host: str = "127.0.0.1") -> None:
        self.controller = controller or FakeKServeController()
        self.forbidden_verbs: set[str] = set()
        self.user = "system:serviceaccount:{namespace}:pipeline-runner"
        self.requests: list[tuple[str, str, str, str]] = []
        self._objects: dict[tuple[str, str], dict] = {}
        self._states: dict[tuple[str, str], ControllerState] = {}
        self._resource_version = 1000
        self._stopping = threading.Event()
        self._lock = self.controller.lock
        self._httpd = ThreadingHTTPServer((host, 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-kube-api", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @contextmanager
    def custom_objects_api(self) -> Iterator:
        """The real `kubernetes` client's CustomObjectsApi, pointed at this server."""
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.url
        with client.ApiClient(configuration) as api_client:
            yield client.CustomObjectsApi(api_client)

    def __enter__(self) -> FakeKubeApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def writes(self) -> list[tuple[str, str, str, str]]:
        """The requests that could change an object (create, patch, update, delete)."""
        return [r for r in self.requests if r[0] in ("create", "patch", "update", "delete")]

    # -- store ---------------------------------------------------------------------------------

    def _next_version(self) -> str:
        self._resource_version += 1
        return str(self._resource_version)

    def _refresh(self, key: tuple[str, str]) -> dict:
        """Let the fake controller write status (a write: resourceVersion moves if it changed)."""
        obj = self._objects[key]
        status = self.controller.reconcile(obj, self._states[key], time.monotonic())
        if status != obj.get("status", {}):
            obj["status"] = status
            obj["metadata"]["resourceVersion"] = self._next_version()
        return copy.deepcopy(obj)

    def _authorize(self, verb: str, namespace: str, name: str | None) -> None:
        if verb not in self.forbidden_verbs:
            return
        user = self.user.format(namespace=namespace)
        subject = f'{RESOURCE} "{name}"' if name else RESOURCE
        details = {"group": GROUP, "kind": PLURAL}
        if name:
            details = {"name": name, **details}
        raise ApiError(403, "Forbidden",
                       f'{subject} is forbidden: User "{user}" cannot {verb} resource "{PLURAL}" '
                       f'in API group "{GROUP}" in the namespace "{namespace}"', details)

    @staticmethod
    def _validate(obj: dict, namespace: str, name_in_url: str | None) -> None:
        if obj.get("apiVersion") != f"{GROUP}/{VERSION}" or obj.get("kind") != KIND:
            raise ApiError(400, "BadRequest",
                           f"the API version in the data ({obj.get('apiVersion')}) or kind ({obj.get('kind')}) "
                           f"does not match the expected {GROUP}/{VERSION} {KIND}")
        metadata = obj.get("metadata")
        if not isinstance(metadata, dict) or not metadata.get("name"):
            raise invalid("", [("metadata.name", "Required value: name or generateName is required")])
        name = metadata["name"]
        if name_in_url is not None and name != name_in_url:
            raise ApiError(400, "BadRequest",
                           f"the name of the object ({name}) does not match the name on the URL ({name_in_url})")
        if metadata.get("namespace", namespace) != namespace:
            raise ApiError(400, "BadRequest",
                           "the namespace of the provided object does not match the namespace sent on the request")
        if not _DNS1035.match(name) or len(name) > 63:
            raise invalid(name, [("metadata.name", f'Invalid value: "{name}": a DNS-1035 label must consist of '
                                  "lower case alphanumeric characters or '-', start with an alphabetic "
                                  "character, and end with an alphanumeric character")])
        spec = obj.get("spec")
        if not isinstance(spec, dict) or not isinstance(spec.get("predictor"), dict):
            raise invalid(name, [("spec.predictor", "Required value")])
        for component in ("predictor", "transformer"):
            percent = spec.get(component, {}).get("canaryTrafficPercent") if isinstance(spec.get(component), dict) else None
            if percent is not None and (isinstance(percent, bool) or not isinstance(percent, int)):
                field = f"spec.{component}.canaryTrafficPercent"
                raise invalid(name, [(field, f'Invalid value: "{type(percent).__name__}": {field} in body '
                                      f'must be of type integer: "{type(percent).__name__}"')])

    def _create(self, namespace: str, body: dict) -> dict:
        self._validate(body, namespace, None)
        name = body["metadata"]["name"]
        key = (namespace, name)
        if key in self._objects:
            raise ApiError(409, "AlreadyExists", f'{RESOURCE} "{name}" already exists',
                           {"name": name, "group": GROUP, "kind": PLURAL})
        obj = copy.deepcopy(body)
        obj.pop("status", None)
        obj["metadata"].update(namespace=namespace, uid=str(uuid.uuid4()), generation=1,
                               creationTimestamp=_timestamp(), resourceVersion=self._next_version())
        self._objects[key] = obj
        self._states[key] = self.controller.new_state(time.monotonic())
        return self._refresh(key)

    def _store(self, key: tuple[str, str], updated: dict, precondition: str | None) -> dict:
        """Write an updated object (from a patch or a PUT): status and server fields kept."""
        current = self._objects[key]
        if precondition is not None and precondition != current["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict",
                           f'Operation cannot be fulfilled on {RESOURCE} "{key[1]}": the object has been '
                           "modified; please apply your changes to the latest version and try again",
                           {"name": key[1], "group": GROUP, "kind": PLURAL})
        self._validate(updated, key[0], key[1])
        stored = copy.deepcopy(updated)
        stored["status"] = copy.deepcopy(current.get("status", {}))
        metadata = stored["metadata"]
        for server_field in ("uid", "creationTimestamp", "generation"):
            metadata[server_field] = current["metadata"][server_field]
        metadata["namespace"] = key[0]
        if stored.get("spec") != current.get("spec"):
            metadata["generation"] = current["metadata"]["generation"] + 1
            self._states[key].spec_changed_at = time.monotonic()
        metadata["resourceVersion"] = current["metadata"]["resourceVersion"]
        if stored != current:  # a no-op write leaves resourceVersion alone, as the API server does
            metadata["resourceVersion"] = self._next_version()
        self._objects[key] = stored
        return self._refresh(key)

    def _patch(self, key: tuple[str, str], content_type: str, body) -> dict:
        current = self._refresh(key)
        if content_type == MERGE_PATCH:
            if not isinstance(body, dict):
                patched = json.dumps(merge_patch(current, body), separators=(",", ":"))
                message = ("couldn't get version/kind; json parse error: json: cannot unmarshal array into Go "
                           'value of type struct { APIVersion string "json:\\"apiVersion,omitempty\\""; '
                           'Kind string "json:\\"kind,omitempty\\"" }')
                raise ApiError(422, "Invalid", f' "" is invalid: patch: Invalid value: {json.dumps(patched)}: {message}',
                               {"causes": [{"reason": "FieldValueInvalid", "field": "patch",
                                            "message": f"Invalid value: {json.dumps(patched)}: {message}"}]})
            updated = merge_patch(current, body)
            precondition = body.get("metadata", {}).get("resourceVersion") if isinstance(body.get("metadata"), dict) else None
        elif content_type == JSON_PATCH:
            if not isinstance(body, list):
                raise ApiError(400, "BadRequest", "json: cannot unmarshal object into Go value of type jsonpatch.Patch")
            try:
                updated = json_patch(current, body)
            except PatchError as error:
                raise ApiError(422, "Invalid", str(error)) from None
            precondition = None
            if updated["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                precondition = updated["metadata"].get("resourceVersion")
        else:
            raise ApiError(415, "UnsupportedMediaType",
                           f"the body of the request was in an unknown format - accepted media types include: "
                           f"{ACCEPTED_PATCH_TYPES} (this fake serves the first two; {content_type or 'none'} "
                           "was sent)")
        return self._store(key, updated, precondition)

    def _replace(self, key: tuple[str, str], body: dict) -> dict:
        self._refresh(key)
        version = body.get("metadata", {}).get("resourceVersion") if isinstance(body.get("metadata"), dict) else None
        if not version:
            raise invalid(key[1], [("metadata.resourceVersion", "Invalid value: 0x0: must be specified for an update")])
        return self._store(key, body, version)

    def _list(self, namespace: str | None) -> dict:
        keys = sorted(k for k in self._objects if namespace is None or k[0] == namespace)
        items = [self._refresh(k) for k in keys]
        return {"apiVersion": f"{GROUP}/{VERSION}", "kind": f"{KIND}List", "items": items,
                "metadata": {"resourceVersion": str(self._resource_version)}}

    def _delete(self, key: tuple[str, str]) -> dict:
        obj = self._objects.pop(key)
        self._states.pop(key)
        self._next_version()
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": key[1], "group": GROUP, "kind": PLURAL, "uid": obj["metadata"]["uid"]}}

    # -- watch ---------------------------------------------------------------------------------

    def watch_events(self, namespace: str | None, query: dict[str, list[str]]):
        """Yield watch events (`{"type": ADDED|MODIFIED|DELETED, "object": ...}`) for objects newer
        than `resourceVersion`, until `timeoutSeconds` (at most 60) or the server stops. The fake
        controller runs on each poll, as it does on every read."""
        selector = query.get("fieldSelector", [""])[0]
        wanted_name = selector.split("=", 1)[1] if selector.startswith("metadata.name=") else None
        since = int(query.get("resourceVersion", ["0"])[0] or 0)
        deadline = time.monotonic() + min(float(query.get("timeoutSeconds", ["60"])[0]), 60.0)
        sent: dict[tuple[str, str], dict] = {}
        while time.monotonic() < deadline and not self._stopping.is_set():
            events = []
            with self._lock:
                keys = [k for k in self._objects if (namespace is None or k[0] == namespace)
                        and (wanted_name is None or k[1] == wanted_name)]
                for key in keys:
                    obj = self._refresh(key)
                    version = int(obj["metadata"]["resourceVersion"])
                    last = sent.get(key)
                    if last is None and version > since:
                        events.append({"type": "ADDED" if since == 0 else "MODIFIED", "object": obj})
                    elif last is not None and version > int(last["metadata"]["resourceVersion"]):
                        events.append({"type": "MODIFIED", "object": obj})
                    if last is not None or version > since:
                        sent[key] = obj
                for key in [k for k in sent if k not in self._objects]:
                    events.append({"type": "DELETED", "object": sent.pop(key)})
            yield from events
            self._stopping.wait(0.02)

    # -- HTTP ----------------------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, content_type: str, raw_body: bytes) -> tuple[int, dict]:  # noqa: C901
        parts = urlsplit(raw_path)
        query = parse_qs(parts.query)
        if method == "GET" and parts.path.rstrip("/") in DISCOVERY:
            return 200, DISCOVERY[parts.path.rstrip("/")]
        namespaced = _NAMESPACED.match(parts.path)
        everywhere = _ALL_NAMESPACES.match(parts.path)
        namespace, name = (namespaced.group(1), namespaced.group(2)) if namespaced else (None, None)
        if not (namespaced or (everywhere and method == "GET")):
            return 404, ApiError(404, "NotFound", "the server could not find the requested resource",
                                 {"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]}).body()
        verb = {"GET": "get" if name else "list", "POST": "create", "PATCH": "patch",
                "PUT": "update", "DELETE": "delete"}.get(method, method.lower())
        if method == "GET" and query.get("watch", ["false"])[0].lower() in ("true", "1"):
            verb = "watch"
        self.requests.append((verb, method, parts.path, content_type))
        try:
            with self._lock:
                self._authorize(verb, namespace or "", name)
                if verb == "watch":
                    if name:
                        raise ApiError(400, "BadRequest", "watch a collection (with a fieldSelector), not a named object")
                    return 200, {"watch": {"namespace": namespace, "query": query}}
                body = None
                if method in ("POST", "PATCH", "PUT"):
                    try:
                        body = json.loads(raw_body or b"null")
                    except json.JSONDecodeError as error:
                        raise ApiError(400, "BadRequest", f"error decoding request body: {error}") from None
                if method == "GET" and not name:
                    return 200, self._list(namespace)
                if method == "POST" and not name:
                    if not isinstance(body, dict):
                        raise ApiError(400, "BadRequest", "the body of the request must be a JSON object")
                    return 201, self._create(namespace, body)
                if not name:
                    raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
                key = (namespace, name)
                if key not in self._objects:
                    raise not_found(name)
                if method == "GET":
                    return 200, self._refresh(key)
                if method == "PATCH":
                    return 200, self._patch(key, content_type, body)
                if method == "PUT":
                    if not isinstance(body, dict):
                        raise ApiError(400, "BadRequest", "the body of the request must be a JSON object")
                    return 200, self._replace(key, body)
                if method == "DELETE":
                    return 200, self._delete(key)
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        except ApiError as error:
            return error.code, error.body()

    def _handler_class(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw_body = self.rfile.read(length) if length else b""
                content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
                code, body = fake.handle(self.command, self.path, content_type, raw_body)
                if code == 200 and set(body) == {"watch"}:
                    self._stream(fake.watch_events(body["watch"]["namespace"], body["watch"]["query"]))
                    return
                payload = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _stream(self, events) -> None:
                """A watch: one JSON event per chunk, as the API server streams them."""
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for event in events:
                        line = json.dumps(event).encode() + b"\n"
                        self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped watching
                self.close_connection = True

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

            def log_message(self, format, *args) -> None:  # quiet: `requests` keeps the record
                pass

        return Handler
