"""GET /analysis: the rollout's latest step analysis over HTTP, for other controllers (an Argo
Rollouts `web` metric, a Flagger webhook). The status code is the decision, so a caller that only
reads codes gets it right:

- 200: advance or promote (the step passed);
- 425 Too Early: hold, or no analysis yet (evidence insufficient: ask again later);
- 409 Conflict: rollback or abort (the candidate failed a check);
- 404 / 405 for other paths / methods; every body is JSON (`{"error": …}` for the last two).
"""
from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fraud.files import json_safe

PATH = "/analysis"
CODES = {"advance": HTTPStatus.OK, "promote": HTTPStatus.OK, "hold": HTTPStatus.TOO_EARLY,
         "rollback": HTTPStatus.CONFLICT, "abort": HTTPStatus.CONFLICT}


class AnalysisEndpoint:
    """A threaded HTTP server on (`host`, `port`; 0 picks a free one) serving the latest analysis."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self._lock = threading.Lock()
        self._body: dict[str, Any] = {"decision": "hold", "reasons": ["no step analysed yet"], "analysis": None}
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, body: Mapping[str, Any], allow: bool = False) -> None:
                payload = json.dumps(json_safe(dict(body)), allow_nan=False).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                if allow:
                    self.send_header("Allow", "GET")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            def do_GET(self) -> None:  # noqa: N802 (http.server's hook name)
                if self.path.split("?", 1)[0] != PATH:
                    self._send(HTTPStatus.NOT_FOUND, {"error": f"no such path {self.path!r}: GET {PATH}"})
                    return
                body = endpoint.current()
                self._send(CODES.get(str(body["decision"]), HTTPStatus.TOO_EARLY), body)

            def _not_allowed(self) -> None:
                self._send(HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"method {self.command} not allowed: GET {PATH}"},
                           allow=True)

            do_POST = do_PUT = do_DELETE = do_PATCH = _not_allowed  # noqa: N815

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
        with self._lock:
            self._body = {"decision": step["decision"], "percent": step.get("percent"),
                          "next_percent": step.get("next_percent"), "reasons": list(step.get("reasons", [])),
                          "analysis": dict(analysis) if analysis is not None else None}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)
