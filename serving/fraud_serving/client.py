"""A plain v2 client for the transformer: raw transactions in, fraud_probability / is_fraud out.

Requests are standard Open Inference Protocol JSON (what curl or KServe's InferenceRESTClient
send), built by the one contract (`fraud.protocol.request_body`): raw values in contract order.
The transformer does the scaling; a client never does.
"""
from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from fraud.export import MODEL_NAME as NAME
from fraud.protocol import request_body
from fraud.schema import FEATURES, TRANSACTION_ID


def infer_url(url: str, model_name: str = NAME) -> str:
    """Accept a server base URL or a full infer URL."""
    url = url.rstrip("/")
    return url if url.endswith("/infer") else f"{url}/v2/models/{model_name}/infer"


def read_transactions(path: str | Path) -> dict:
    """A v2 request from a CSV (columns by name, `transaction_id` sent as its input when present, other
    columns such as Class ignored) or JSON file
    (a v2 request as is, a list of records, or a {column: values} object)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        frame = pd.read_csv(path)
    elif path.suffix.lower() == ".json":
        body = json.loads(path.read_text())
        if isinstance(body, dict) and "inputs" in body:
            return body
        frame = pd.DataFrame(body)
    else:
        raise ValueError(f"{path}: expected a .csv or .json file")
    missing = [feature for feature in FEATURES if feature not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {', '.join(missing)}")
    ids = frame[TRANSACTION_ID].astype(str).tolist() if TRANSACTION_ID in frame.columns else None
    return request_body(frame.loc[:, list(FEATURES)].to_numpy(dtype=np.float64), transaction_ids=ids)


def predict(url: str, body: dict, model_name: str = NAME, timeout: float = 30.0) -> dict:
    """POST a v2 request; raises ValueError with the server's message, on one line, on a 4xx/5xx."""
    response = httpx.post(infer_url(url, model_name), json=body, timeout=timeout)
    if response.status_code != 200:
        raise ValueError(f"{response.status_code} from {infer_url(url, model_name)}: {error_message(response)}")
    return response.json()


def error_message(response: httpx.Response, limit: int = 300) -> str:
    """The Open Inference Protocol's `{"error": …}`, else the body's text squeezed onto one line."""
    try:
        body = response.json()
    except ValueError:
        body = None
    text = body["error"] if isinstance(body, dict) and isinstance(body.get("error"), str) else response.text
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def outputs(response: dict) -> dict[str, list]:
    return {output["name"]: output["data"] for output in response["outputs"]}
