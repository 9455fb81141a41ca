"""A JSON GET for tests of small HTTP endpoints: the status and the parsed body, 4xx and 5xx included."""
from __future__ import annotations

import json
import urllib.error
import urllib.request


def get_json(url: str, method: str = "GET") -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
