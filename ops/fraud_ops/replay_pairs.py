"""The replay's paired evidence: the transformer's shadow pairs joined with the replayed labels.

With shadow scoring on, the transformer writes one JSON line per shadowed request (`id`, both
versions, both `is_fraud` lists) to its pair log (`<state-dir>/shadow-pairs.jsonl` for the local
runtime). After the replay, `wait_drained` waits until the transformer's
`fraud_shadow_in_flight` gauge reads 0 (every shadow score it started is on disk), then
`paired_from_log` joins the records on the replay's request ids with the labels of those rows,
orients each pair by the report's baseline and canary versions and calls
`fraud_canary.paired.paired_outcomes`. Records of other requests (other clients, earlier
replays: the ids carry this replay's token) are left out.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import orjson
from fraud.schema import DataError
from fraud.waiting import poll
from fraud_canary.paired import PairedOutcomes, paired_outcomes

from fraud_ops.replay_load import ReplayRows

IN_FLIGHT_METRIC = "fraud_shadow_in_flight"
LOG_QUEUE_METRIC = "fraud_payload_log_queue"
DRAIN_TIMEOUT_SECONDS = 30.0
POLL_SECONDS = 0.1


def paired_from_log(records: Iterable[dict], labels_by_id: dict[str, np.ndarray], *, baseline_version: str,
                    canary_version: str) -> PairedOutcomes | None:
    """Paired outcomes over the shadow records of these ids for this version pair (either way
    round: served baseline and shadow canary, or the reverse); None when no record matches."""
    baseline_flags, canary_flags, labels = [], [], []
    for record in records:
        row_labels = labels_by_id.get(str(record.get("id")))
        if row_labels is None:
            continue
        versions = (record.get("served_version"), record.get("shadow_version"))
        served = np.asarray(record.get("served_is_fraud", []), dtype=bool)
        shadow = np.asarray(record.get("shadow_is_fraud", []), dtype=bool)
        if not (len(served) == len(shadow) == len(row_labels)):
            continue
        if versions == (baseline_version, canary_version):
            baseline_flags.append(served)
            canary_flags.append(shadow)
        elif versions == (canary_version, baseline_version):
            baseline_flags.append(shadow)
            canary_flags.append(served)
        else:
            continue
        labels.append(row_labels)
    if not labels:
        return None
    return paired_outcomes(np.concatenate(baseline_flags), np.concatenate(canary_flags),
                           baseline_version=baseline_version, canary_version=canary_version,
                           labels=np.concatenate(labels))


def labels_by_request(rows: ReplayRows, id_prefix: str) -> dict[str, np.ndarray]:
    """The labels of each answered request's rows, by the request id the replay sent."""
    bounds = np.flatnonzero(np.diff(rows.request)) + 1
    per_request = np.split(rows.labels.astype(bool), bounds)
    requests = rows.request[np.concatenate([[0], bounds])] if len(rows.request) else []
    return {f"{id_prefix}{int(i)}": labels for i, labels in zip(requests, per_request)
            if rows.request_status[int(i)] == 200}


def paired_versions(subject: dict | None, rows: ReplayRows) -> tuple[str, str] | None:
    """(baseline, canary): the subject's rolled-out and canary models, else the answering versions
    by traffic (the larger share is the rolled-out one); None with fewer than two versions."""
    if subject and subject.get("canary_model"):
        baseline = str(subject.get("rolled_out_model", {}).get("modelVersion") or "")
        canary = str(subject["canary_model"].get("modelVersion") or "")
        if baseline and canary and baseline != canary:
            return baseline, canary
    versions, counts = np.unique(rows.request_version[rows.request_version != ""], return_counts=True)
    if len(versions) < 2:
        return None
    order = np.argsort(-counts, kind="stable")
    return str(versions[order[0]]), str(versions[order[1]])


def read_pairs(path: Path) -> list[dict]:
    """The pair log's records (a line cut short by a writer still running is skipped)."""
    records = []
    with open(path, "rb") as log:
        for line in log:
            try:
                records.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
    return records


def metrics_url(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/metrics"


def gauge(url: str, name: str, timeout: float = 5.0) -> float | None:
    """The transformer's gauge `name`, None when its /metrics does not show it."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = httpx.get(metrics_url(url), timeout=timeout).text
    except (httpx.HTTPError, OSError):
        return None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    return None


def wait_zero(url: str, name: str, what: str, hint: str, timeout: float) -> None:
    """Until the transformer's gauge `name` reads 0; DataError naming the URL if it does not in
    `timeout` or shows no such gauge (`hint` says why it might not)."""
    last: list[float] = []

    def drained() -> bool:
        value = gauge(url, name)
        if value is None:
            raise DataError(f"{metrics_url(url)}: no {name} gauge ({hint})")
        last[:] = [value]
        return value == 0

    if not poll(drained, timeout_s=timeout, poll_s=POLL_SECONDS):
        raise DataError(f"{metrics_url(url)}: {last[0]:g} {what} after {timeout:g} s")


def wait_drained(url: str, timeout: float = DRAIN_TIMEOUT_SECONDS) -> None:
    """Until the transformer at `url` has no shadow score in flight (each one answered is then in
    the pair log); DataError naming the URL if it does not drain in `timeout` or shows no gauge."""
    wait_zero(url, IN_FLIGHT_METRIC, "shadow scores still in flight", "is shadow scoring on?", timeout)


def wait_logged(url: str, timeout: float = DRAIN_TIMEOUT_SECONDS) -> None:
    """Until the transformer's payload logger has every event acknowledged by the prediction-log
    sink (`fraud_payload_log_queue` 0): then every answered request is in the store."""
    wait_zero(url, LOG_QUEUE_METRIC, "prediction-log events not yet acknowledged by the sink",
              "is the prediction log on?", timeout)
