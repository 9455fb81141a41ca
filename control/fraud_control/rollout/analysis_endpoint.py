"""GET /analysis: the rollout's latest step analysis over HTTP, for other controllers. The verdict is
in the JSON body, where an Argo Rollouts `web` metric reads it (`jsonPath: "{$.verdict}"`); the status
code only says whether there is a verdict:

- 200 `{"verdict", "decision", "percent", "next_percent", "reasons", "analysis"}` for advance,
  promote, hold, rollback, inconclusive and abort (`hold`, "no step analysed yet", before the first);
- 503, same body, for `error`: the evidence could not be read. Argo records any non-2xx answer as a
  measurement Error without reading the body, counted against `consecutiveErrorLimit`
  (argo-rollouts `metricproviders/webmetric/webmetric.go`), which is what a failed analysis is;
- 404 / 405 for other paths / methods, `{"error": …}`.

Flagger reads no body: it POSTs to a webhook and takes any code above 202 as "no"
(fluxcd/flagger `pkg/controller/webhook.go`), so a 200 that says rollback would pass its check.
`/analysis/flagger/<hook>` (POST, or GET to look) answers the question each hook type asks with the
code, same body: 200 yes, 409 no, 503 error (a no too). `confirm-traffic-increase`: advance or promote;
`confirm-promotion`: promote; `rollback`: rollback or abort (Flagger then rolls back at once).
"""
from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fraud.files import json_safe
from fraud_canary import progressive

PATH = "/analysis"
FLAGGER_PATH = f"{PATH}/flagger/"
#: The rollout's verdicts, and the controller's record of an abort.
VERDICTS = (*progressive.VERDICTS, "abort")
#: Flagger hook type → the verdicts it answers yes to (Flagger's scheduler_hooks.go runs each).
FLAGGER_YES = {"confirm-traffic-increase": ("advance", "promote"), "confirm-promotion": ("promote",),
               "rollback": ("rollback", "abort")}
#: A POST body is read only to keep the connection sane; Flagger's payload names the canary, nothing more.
MAX_BODY = 64 * 1024


def status_for(verdict: str, hook: str | None = None) -> HTTPStatus:
    """The code of `verdict` on GET /analysis (`hook` None) or on Flagger's `hook` path."""
    if verdict == "error":
        return HTTPStatus.SERVICE_UNAVAILABLE
    if hook is None:
        return HTTPStatus.OK
    return HTTPStatus.OK if verdict in FLAGGER_YES[hook] else HTTPStatus.CONFLICT


class AnalysisEndpoint:
    """A threaded HTTP server on (`host`, `port`; 0 picks a free one) serving the latest analysis."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self._lock = threading.Lock()
        self._body: dict[str, Any] = {"verdict": "hold", "decision": "hold", "percent": None, "next_percent": None,
                                      "reasons": ["no step analysed yet"], "analysis": None}
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, body: Mapping[str, Any], allow: str = "") -> None:
                payload = json.dumps(json_safe(dict(body)), allow_nan=False).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                if allow:
                    self.send_header("Allow", allow)
                self.end_headers()
                self.wfile.write(payload)

            def _answer(self) -> None:
                path = self.path.split("?", 1)[0]
                hook = path.removeprefix(FLAGGER_PATH) if path.startswith(FLAGGER_PATH) else None
                if path != PATH and hook not in FLAGGER_YES:
                    self._send(HTTPStatus.NOT_FOUND, {"error": f"no such path {self.path!r}: GET {PATH}, or POST "
                                                      f"{FLAGGER_PATH}{{{','.join(FLAGGER_YES)}}}"})
                    return
                if self.command == "POST" and hook is None:
                    self._not_allowed()
                    return
                self.rfile.read(min(int(self.headers.get("Content-Length") or 0), MAX_BODY))
                body = endpoint.current()
                self._send(status_for(body["verdict"], hook), body)

            def _not_allowed(self) -> None:
                path = self.path.split("?", 1)[0]
                allow = "GET, POST" if path.startswith(FLAGGER_PATH) else "GET"
                self._send(HTTPStatus.METHOD_NOT_ALLOWED,
                           {"error": f"method {self.command} not allowed: {allow} {path if allow != 'GET' else PATH}"},
                           allow=allow)

            do_GET = do_POST = _answer  # noqa: N815 (http.server's hook names)
            do_PUT = do_DELETE = do_PATCH = _not_allowed  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # a caller polling every few seconds would fill the log

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://{host}:{self.port}{PATH}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="analysis-endpoint", daemon=True)
        self._thread.start()

    def current(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._body)

    def update(self, step: Mapping[str, Any], analysis: Mapping[str, Any] | None) -> None:
        """The latest step record (decision, percent, reasons) and its analysis."""
        decision = str(step["decision"])
        if decision not in VERDICTS:  # a new verdict must choose its code here, not fall into one
            raise ValueError(f"step decision {decision!r} is none of {', '.join(VERDICTS)}")
        with self._lock:
            self._body = {"verdict": decision, "decision": decision, "percent": step.get("percent"),
                          "next_percent": step.get("next_percent"), "reasons": list(step.get("reasons", [])),
                          "analysis": dict(analysis) if analysis is not None else None}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)
