"""`fraud-rollout replay`: labelled holdout transactions through the live endpoint, per version.

The replay is a client like any other: it sends raw transactions as Open Inference Protocol v2
JSON to the transformer (which validates, scales with the feature contract and splits between the
predictor revisions), and records for every transaction the `model_version` that answered, the
decision, the score, the request's latency and whether it failed. From those rows `fraud_canary`
computes per-version confusion counts, precision, recall, F1, flag rate, traffic share, latency
percentiles and error rate.

How it sends. `--batch` rows per request, `--concurrency` requests in flight over that many
keep-alive connections, optionally paced at `--rate` transactions per second. The split happens
per *request* (as Knative splits), so each version's rows are whole requests, an unbiased sample
of them, and the canary share is measured in rows; the default batch keeps ≥ 2,000 requests so the
share is measured within about a point, with at most 100 rows per request. A Python client
saturates early (DESIGN: near a thousand requests per second here), which is why batching, not
more concurrency, makes a 200,000-row replay fast (see `fraud-rollout bench replay`).

Outputs: a JSON report (`--out`, NaN written as null) and beside it a Parquet file with one row per
transaction (`rows_file` in the report), which the skew check and notebook 02 read.

Training/serving skew check (`skew_check`): every answered transaction's online decision must equal
the offline decision of the version that served it, i.e. that version's SavedModel signature
(`SignatureScorer`) on the contract-scaled holdout. With `--report` the replay knows each version's
artifact and runs the check itself.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from fraud.schema import FEATURES, LABEL, DataError, check_transactions

from fraud_rollout.args import non_negative_float, positive_int
from fraud_rollout.targets import add_target_options, current_subject

log = logging.getLogger(__name__)

DEFAULT_PIPELINE_REPORT = Path(".fraud-rollout/run/report.json")
ROWS_SUFFIX = ".rows.parquet"
#: Points in the report's traffic timeline (the "traffic split over the replay" plot).
TIMELINE_BINS = 60
ERROR_SAMPLES = 5
#: The default batch keeps at least this many requests (the split is per request: ±0.9 points at
#: a 20 % share with 2,000 requests) and at most `MAX_DEFAULT_BATCH` rows in one.
MIN_REQUESTS = 2_000
MAX_DEFAULT_BATCH = 100


def default_batch(rows: int) -> int:
    return max(1, min(MAX_DEFAULT_BATCH, rows // MIN_REQUESTS))


def register(commands, bench) -> None:
    replay = commands.add_parser(
        "replay", help="stream labelled holdout transactions through the live endpoint; per-version metrics")
    replay.add_argument("--url", required=True, help="transformer base URL (or the full infer URL)")
    source = replay.add_mutually_exclusive_group()
    source.add_argument("--holdout", type=Path, help="labelled transactions (.parquet or .csv with Class)")
    source.add_argument("--report", type=Path,
                        help=f"pipeline report.json: its holdout, and each version's artifact for the skew check "
                             f"(default {DEFAULT_PIPELINE_REPORT} when neither is given)")
    add_replay_options(replay)
    replay.add_argument("--out", type=Path, help="replay report JSON (default: replay.json beside the pipeline "
                                                 "report, else in the current directory)")
    add_target_options(replay)  # the InferenceService the evidence is about, recorded as its subject
    replay.add_argument("--no-skew-check", action="store_true",
                        help="skip comparing online decisions with each version's offline signature")
    replay.set_defaults(func=replay_command)

    bench_replay = bench.add_parser("replay", help="replay a pipeline run's holdout through the local canary runtime")
    bench_replay.add_argument("--report", type=Path, default=DEFAULT_PIPELINE_REPORT,
                              help="pipeline report.json (a 1,000,000-transaction run for the target)")
    bench_replay.add_argument("--url", help="replay against this running transformer instead of starting the runtime")
    add_replay_options(bench_replay)
    bench_replay.add_argument("--target-seconds", type=non_negative_float, default=20.0,
                              help="the replay time to meet")
    bench_replay.add_argument("--out", type=Path, help="replay report JSON (default: a temporary directory)")
    bench_replay.set_defaults(func=bench_command)


def add_replay_options(parser: argparse.ArgumentParser) -> None:

    parser.add_argument("--limit", type=positive_int, help="replay only the first N transactions")
    parser.add_argument("--rate", type=non_negative_float, default=0.0,
                        help="transactions per second (0: as fast as the endpoint answers)")
    parser.add_argument("--batch", type=positive_int, default=None,
                        help="transactions per request (default: enough requests, ≥ 2,000, to measure the split "
                             "within about a point, at most 100 rows each)")
    parser.add_argument("--concurrency", type=positive_int, default=8, help="requests in flight")
    parser.add_argument("--timeout", type=non_negative_float, default=30.0, help="seconds per request")
    parser.add_argument("--model-name", default="fraud-detector", help="model name in the v2 path")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplaySource:
    """What is replayed: labelled raw transactions, and where they came from."""

    frame: pd.DataFrame  # FEATURES + Class, in replay order
    holdout_path: Path
    pipeline_report: Path | None = None
    artifacts: dict[str, str] = field(default_factory=dict)  # model_version → artifact root


def read_pipeline_report(path: Path, option: str = "--report") -> dict:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{option} {path}: no such file (run `fraud-rollout pipeline run --local` or "
                        "`fraud-rollout demo` first)")
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(f"{option} {path}: not JSON ({error})") from None
    if not isinstance(report, dict) or "models" not in report:
        raise DataError(f"{option} {path}: not a pipeline report (no 'models')")
    return report


def version_artifacts(report: dict) -> dict[str, str]:
    """model_version ("v1") → exported artifact root, from a pipeline report."""
    return {str(model.get("version", name)): model["artifact"]
            for name, model in report["models"].items() if model.get("artifact")}


def read_holdout(path: Path, option: str = "--holdout") -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{option} {path}: no such file")
    try:
        frame = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    except (OSError, ValueError) as error:
        raise DataError(f"{option} {path}: cannot read labelled transactions ({error})") from None
    check_transactions(frame, labelled=True, source=f"{option} {path}")
    return frame.loc[:, [*FEATURES, LABEL]].reset_index(drop=True)


def load_source(holdout: Path | None, report: Path | None) -> ReplaySource:
    """The holdout to replay: given directly, or the one a pipeline report names."""
    if holdout is not None:
        return ReplaySource(read_holdout(holdout), Path(holdout))
    report_path = Path(report or DEFAULT_PIPELINE_REPORT)
    pipeline = read_pipeline_report(report_path)
    holdout_path = pipeline.get("artifacts", {}).get("holdout")
    if not holdout_path:
        raise DataError(f"--report {report_path}: names no holdout (artifacts.holdout); pass --holdout")
    return ReplaySource(read_holdout(Path(holdout_path), option=f"artifacts.holdout of {report_path}"),
                        Path(holdout_path), report_path.resolve(), version_artifacts(pipeline))


# --------------------------------------------------------------------------------------------
# Sending
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayOptions:
    url: str
    limit: int | None = None
    rate: float = 0.0  # transactions per second; 0 = unpaced
    batch: int | None = None  # None: default_batch(rows)
    concurrency: int = 8
    timeout: float = 30.0
    model_name: str = "fraud-detector"
    progress: bool = True


@dataclass
class ReplayRows:
    """One entry per transaction (row) and per request, as sent and answered."""

    labels: np.ndarray  # int8, 1 = fraud
    amount: np.ndarray
    model_version: np.ndarray  # str, "" where the request failed without a version
    decision: np.ndarray  # float: 1/0, NaN where failed
    probability: np.ndarray  # float32, NaN where failed
    latency_ms: np.ndarray  # of the row's request
    error: np.ndarray  # bool
    request: np.ndarray  # int32, index of the row's request
    # per request
    request_start_s: np.ndarray  # seconds after the replay started
    request_latency_ms: np.ndarray
    request_version: np.ndarray  # str
    request_status: np.ndarray  # int16 HTTP status, 0 = no response
    error_messages: list[str]
    wall_seconds: float

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"row": np.arange(len(self.labels), dtype=np.int64), "label": self.labels,
                             "amount": self.amount, "model_version": self.model_version,
                             "decision": self.decision, "probability": self.probability,
                             "latency_ms": self.latency_ms, "error": self.error, "request": self.request,
                             "request_start_s": self.request_start_s[self.request]})


class EndpointUnreachable(DataError):
    """The URL does not answer as a ready v2 model."""


def check_endpoint(url: str, model_name: str, timeout: float = 10.0) -> None:
    """Fail fast, naming the URL, when the endpoint is not a ready v2 model."""
    import urllib.error
    import urllib.request

    from fraud_serving.client import infer_url

    ready = infer_url(url, model_name).removesuffix("/infer") + "/ready"
    try:
        with urllib.request.urlopen(ready, timeout=timeout) as response:
            status, text = response.status, ""
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read(200).decode(errors="replace")
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise EndpointUnreachable(f"--url {url}: cannot reach the endpoint ({reason})") from None
    if status != 200:
        raise EndpointUnreachable(f"--url {url}: model {model_name!r} is not ready ({status} from {ready}: {text})")


def send(raw: np.ndarray, options: ReplayOptions, on_progress: Callable[[int], None] | None = None) -> ReplayRows:
    """Send `raw` ([N, 30], contract order) in batches; return what every row got back.

    Never raises for a failed request: a non-200 answer or a connection error marks its rows as
    errors (the report counts them against the version, or as unattributed)."""
    return asyncio.run(_send(raw, options, on_progress))


async def _send(raw: np.ndarray, options: ReplayOptions, on_progress) -> ReplayRows:
    import aiohttp
    import orjson
    from fraud_serving.client import INPUT_NAME, infer_url
    from tqdm import tqdm

    n = len(raw)
    url = infer_url(options.url, options.model_name)
    starts = np.arange(0, n, options.batch)
    requests = len(starts)
    version = np.full(requests, "", dtype=object)
    status = np.zeros(requests, dtype=np.int16)
    started_at = np.zeros(requests)
    latency = np.full(requests, np.nan)
    decision = np.full(n, np.nan)
    probability = np.full(n, np.nan, dtype=np.float32)
    messages: list[str] = []
    raw = np.ascontiguousarray(raw, dtype=np.float64)
    pending = iter(range(requests))
    bar = tqdm(total=n, unit="tx", desc="replay", disable=not options.progress, smoothing=0.1)
    done = 0
    t0 = time.perf_counter()

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal done
        for i in pending:
            lo, hi = int(starts[i]), min(int(starts[i]) + options.batch, n)
            if options.rate > 0:  # pacing: request i is due when its first row is
                delay = t0 + lo / options.rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            body = orjson.dumps({"id": f"replay-{i}", "inputs": [
                {"name": INPUT_NAME, "shape": [hi - lo, raw.shape[1]], "datatype": "FP64", "data": raw[lo:hi]}]},
                option=orjson.OPT_SERIALIZE_NUMPY)
            began = time.perf_counter()
            started_at[i] = began - t0
            try:
                async with session.post(url, data=body, headers={"content-type": "application/json"}) as response:
                    status[i] = response.status
                    payload = await response.read()
                latency[i] = 1000 * (time.perf_counter() - began)
                if status[i] == 200:
                    answer = orjson.loads(payload)
                    outputs = {o["name"]: o["data"] for o in answer["outputs"]}
                    got = np.asarray(outputs["is_fraud"], dtype=np.float64).reshape(-1)
                    if got.shape[0] != hi - lo:
                        raise ValueError(f"{got.shape[0]} decisions for {hi - lo} rows")
                    decision[lo:hi] = got
                    probability[lo:hi] = np.asarray(outputs["fraud_probability"], dtype=np.float32).reshape(-1)
                    version[i] = str(answer.get("model_version") or "")
                else:
                    _note(messages, f"HTTP {status[i]}: {payload[:200].decode(errors='replace')}")
            except (TimeoutError, aiohttp.ClientError, KeyError, TypeError, ValueError) as error:
                latency[i] = 1000 * (time.perf_counter() - began)
                if status[i] == 200:  # answered, but not a usable v2 response
                    status[i] = -1
                _note(messages, f"{type(error).__name__}: {str(error)[:200]}")
            done += hi - lo
            bar.update(hi - lo)
            if on_progress is not None:
                on_progress(done)

    connector = aiohttp.TCPConnector(limit=options.concurrency, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=options.timeout or None)
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await asyncio.gather(*(worker(session) for _ in range(min(options.concurrency, requests))))
    finally:
        bar.close()
    wall = time.perf_counter() - t0

    request_of_row = np.repeat(np.arange(requests, dtype=np.int32), np.diff(np.append(starts, n)))
    failed = status != 200
    return ReplayRows(
        labels=np.zeros(n, dtype=np.int8), amount=np.zeros(n), model_version=version[request_of_row].astype(str),
        decision=decision, probability=probability, latency_ms=latency[request_of_row],
        error=failed[request_of_row], request=request_of_row, request_start_s=started_at,
        request_latency_ms=latency, request_version=version.astype(str), request_status=status,
        error_messages=messages, wall_seconds=wall)


def _note(messages: list[str], message: str) -> None:
    if len(messages) < 1000:
        messages.append(message)


def replay(source: ReplaySource, options: ReplayOptions,
           on_progress: Callable[[int], None] | None = None) -> ReplayRows:
    """Replay `source` (the first `options.limit` rows)."""
    frame = source.frame if options.limit is None else source.frame.iloc[:options.limit]
    if options.batch is None:
        options = replace(options, batch=default_batch(len(frame)))
    rows = send(frame.loc[:, list(FEATURES)].to_numpy(dtype=np.float64), options, on_progress)
    rows.labels = frame[LABEL].to_numpy(dtype=np.int8)
    rows.amount = frame["Amount"].to_numpy(dtype=np.float64)
    return rows


# --------------------------------------------------------------------------------------------
# Metrics, skew, report
# --------------------------------------------------------------------------------------------


def online_metrics(rows: ReplayRows | pd.DataFrame, labelled: bool = True) -> dict:
    """`fraud_canary.metrics.version_metrics` over the replayed rows (a ReplayRows or its frame)."""
    from fraud_canary.metrics import version_metrics

    frame = rows.frame() if isinstance(rows, ReplayRows) else rows
    error = frame["error"].to_numpy(dtype=bool)
    return version_metrics(frame["label"].to_numpy() if labelled else None,
                           np.where(error, 0.0, frame["decision"].to_numpy(dtype=float)),
                           frame["model_version"].astype(str).to_numpy(), frame["latency_ms"].to_numpy(dtype=float),
                           error)


def timeline(rows: ReplayRows, bins: int = TIMELINE_BINS) -> list[dict]:
    """Rows per version (and failed rows) in equal slices of the replay's duration."""
    frame = rows.frame()
    if frame.empty:
        return []
    end = max(float(frame["request_start_s"].max()), 1e-9)
    edges = np.linspace(0.0, end, bins + 1)
    slot = np.clip(np.searchsorted(edges, frame["request_start_s"].to_numpy(), side="right") - 1, 0, bins - 1)
    frame = frame.assign(slot=slot, version=np.where(frame["error"], "error", frame["model_version"]))
    counts = frame.groupby(["slot", "version"]).size().unstack(fill_value=0)
    return [{"start_s": round(float(edges[s]), 3), "rows": {str(v): int(counts.loc[s, v]) for v in counts.columns
                                                            if counts.loc[s, v]}}
            for s in counts.index]


def offline_decisions(raw: np.ndarray, artifacts: dict[str, str]) -> dict[str, dict[str, np.ndarray]]:
    """Each version's own SavedModel signature on the holdout scaled by that artifact's feature
    contract: the offline decision the online answer must equal."""
    from fraud.export import SignatureScorer, read_contract

    out = {}
    for version, root in artifacts.items():
        scaled = read_contract(root).transform(raw)
        out[version] = SignatureScorer(root)(scaled)
    return out


def skew_check(rows: pd.DataFrame, raw: np.ndarray, artifacts: dict[str, str]) -> dict:
    """Compare every answered row's online decision with the offline decision of the version that
    served it. `disagreements` must be 0 (no training/serving skew)."""
    answered = ~rows["error"].to_numpy(dtype=bool)
    versions = rows["model_version"].astype(str).to_numpy()
    served = sorted(set(versions[answered].tolist()))
    missing = [v for v in served if v not in artifacts]
    offline = offline_decisions(raw[: len(rows)], {v: artifacts[v] for v in served if v in artifacts})
    per_version = {}
    disagreeing_rows: list[int] = []
    for version in served:
        if version not in offline:
            continue
        mask = answered & (versions == version)
        online_decision = rows["decision"].to_numpy()[mask].astype(np.int64)
        offline_decision = offline[version]["is_fraud"][mask].astype(np.int64)
        differ = online_decision != offline_decision
        gap = np.abs(rows["probability"].to_numpy(dtype=np.float64)[mask]
                     - offline[version]["fraud_probability"][mask].astype(np.float64))
        per_version[version] = {"rows": int(mask.sum()), "disagreements": int(differ.sum()),
                                "max_abs_probability_difference": float(gap.max()) if gap.size else None,
                                "offline_flagged": int(offline_decision.sum()),
                                "online_flagged": int(online_decision.sum())}
        disagreeing_rows += np.flatnonzero(mask)[differ][:10].tolist()
    return {"compared_rows": int(sum(v["rows"] for v in per_version.values())),
            "disagreements": int(sum(v["disagreements"] for v in per_version.values())),
            "versions": per_version, "versions_without_artifact": missing,
            "first_disagreeing_rows": disagreeing_rows[:10],
            "method": "online is_fraud vs SignatureScorer(artifact of the answering version) on the "
                      "contract-scaled holdout row"}


def build_report(source: ReplaySource, options: ReplayOptions, rows: ReplayRows, rows_file: Path,
                 skew: dict | None, subject: dict | None = None) -> dict:
    """The replay report; `subject` is the InferenceService replayed against (fraud_control.subject),
    which `canary analyze --apply` compares with what is deployed then."""
    from fraud_canary.metrics import UNATTRIBUTED

    metrics = online_metrics(rows)
    n = len(rows.labels)
    failed_requests = int((rows.request_status != 200).sum())
    statuses = pd.Series(rows.request_status).value_counts().sort_index()
    answered_versions = sorted({v for v in rows.request_version.tolist() if v})
    return {
        "kind": "fraud-rollout replay",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "url": options.url,
        "source": {"holdout": str(source.holdout_path.resolve()),
                   "pipeline_report": str(source.pipeline_report) if source.pipeline_report else None,
                   "artifacts": source.artifacts, "rows": n, "frauds": int(rows.labels.sum())},
        "options": {k: v for k, v in asdict(options).items() if k not in ("url", "progress")},
        "timing": {"wall_seconds": round(rows.wall_seconds, 3),
                   "rows_per_second": round(n / rows.wall_seconds, 1) if rows.wall_seconds else None,
                   "requests": len(rows.request_status),
                   "requests_per_second": (round(len(rows.request_status) / rows.wall_seconds, 1)
                                           if rows.wall_seconds else None)},
        "totals": {"rows": n, "answered_rows": int((~rows.error).sum()), "failed_rows": int(rows.error.sum()),
                   "failed_requests": failed_requests,
                   "unattributed_rows": int(metrics[UNATTRIBUTED].requests) if UNATTRIBUTED in metrics else 0,
                   "versions_answering": answered_versions},
        "versions": {version: m.to_dict() for version, m in metrics.items()},
        "errors": {"requests_by_status": {str(int(k)): int(v) for k, v in statuses.items() if k != 200},
                   "samples": rows.error_messages[:ERROR_SAMPLES]},
        "timeline": timeline(rows),
        "rows_file": rows_file.name,
        "skew": skew,
        "subject": subject,
    }


def write_report(report: dict, path: Path) -> Path:
    from fraud.files import write_json

    return write_json(path, report)


def rows_path(report_path: Path) -> Path:
    return report_path.with_name(report_path.stem + ROWS_SUFFIX)


def read_replay(path: Path, option: str = "--replay-report") -> tuple[dict, pd.DataFrame | None]:
    """A replay report and its per-row frame (None if the rows file is gone)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{option} {path}: no such file (run `fraud-rollout replay` first)")
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(f"{option} {path}: not JSON ({error})") from None
    if not isinstance(report, dict) or report.get("kind") != "fraud-rollout replay":
        raise DataError(f"{option} {path}: not a replay report")
    rows_file = path.parent / report.get("rows_file", "")
    frame = pd.read_parquet(rows_file) if report.get("rows_file") and rows_file.is_file() else None
    return report, frame


@dataclass
class ReplayResult:
    report: dict
    report_path: Path
    rows: ReplayRows


def run_replay(source: ReplaySource, options: ReplayOptions, out: Path, *, skew: bool = True,
               on_progress: Callable[[int], None] | None = None, subject: dict | None = None) -> ReplayResult:
    """Check the endpoint, replay, write the rows file and the report (with the skew check when
    each answering version's artifact is known)."""
    check_endpoint(options.url, options.model_name)
    if options.batch is None:  # resolved here too, so that the report states it
        options = replace(options, batch=default_batch(min(len(source.frame), options.limit or len(source.frame))))
    rows = replay(source, options, on_progress)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame = rows.frame()
    frame.to_parquet(rows_path(out), index=False)
    skew_result = None
    if skew and source.artifacts:
        raw = source.frame.loc[:, list(FEATURES)].to_numpy(dtype=np.float64)[: len(frame)]
        skew_result = skew_check(frame, raw, source.artifacts)
    report = build_report(source, options, rows, rows_path(out), skew_result, subject)
    write_report(report, out)
    return ReplayResult(report, out, rows)


def summary_lines(report: dict) -> list[str]:
    """The console summary of a replay report."""
    t, totals = report["timing"], report["totals"]
    lines = [f"replayed {totals['rows']:,} transactions in {t['wall_seconds']:.1f} s "
             f"({t['rows_per_second'] or 0:,.0f}/s, {t['requests']:,} requests of ≤ {report['options']['batch']}); "
             f"failed rows {totals['failed_rows']:,} in {totals['failed_requests']:,} requests",
             f"  {'version':<9}{'rows':>9}{'share':>8}{'errors':>8}{'frauds':>8}{'recall':>8}{'precision':>10}"
             f"{'flag rate':>10}{'p50 ms':>8}{'p99 ms':>8}"]

    def f(x, spec):
        return "n/a" if x is None else format(x, spec)

    for version, m in report["versions"].items():
        frauds = None if m["tp"] is None else m["tp"] + m["fn"]
        lines.append(f"  {version:<9}{m['requests']:>9,}{f(m['traffic_share'], '.1%'):>8}{m['errors']:>8,}"
                     f"{f(frauds, ','):>8}{f(m['recall'], '.3f'):>8}{f(m['precision'], '.3f'):>10}"
                     f"{f(m['flag_rate'], '.4f'):>10}{f(m['latency_p50_ms'], '.1f'):>8}{f(m['latency_p99_ms'], '.1f'):>8}")
    skew = report.get("skew")
    if skew:
        lines.append(f"  skew check: {skew['disagreements']} of {skew['compared_rows']:,} online decisions differ "
                     f"from the offline decision of the version that served them")
    if report["errors"]["samples"]:
        lines.append(f"  first errors: {report['errors']['samples'][:2]}")
    return lines


def replay_command(args) -> int:
    from fraud_rollout.args import UsageError

    if args.batch is not None and args.batch > 10_000:
        raise UsageError(f"--batch {args.batch}: the transformer accepts at most 10,000 rows per request")
    if args.holdout is None and args.report is None and not DEFAULT_PIPELINE_REPORT.is_file():
        raise UsageError(f"give --holdout PARQUET or --report report.json ({DEFAULT_PIPELINE_REPORT} does not exist)")
    source = load_source(args.holdout, args.report)
    out = args.out or ((source.pipeline_report.parent if source.pipeline_report else Path.cwd()) / "replay.json")
    options = ReplayOptions(url=args.url, limit=args.limit, rate=args.rate, batch=args.batch,
                            concurrency=args.concurrency, timeout=args.timeout, model_name=args.model_name,
                            progress=not args.no_progress)
    result = run_replay(source, options, out, skew=not args.no_skew_check, subject=current_subject(args))
    print("\n".join(summary_lines(result.report)))
    print(f"  report: {result.report_path}")
    skew = result.report.get("skew")
    return 1 if skew and skew["disagreements"] else 0


def bench_command(args) -> int:
    """Replay a run's holdout through the local canary runtime (started here unless --url) and
    compare the time with the target."""
    import tempfile
    from contextlib import ExitStack

    from fraud_rollout.serving_session import LocalServing

    pipeline = read_pipeline_report(args.report)
    source = load_source(None, args.report)
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-replay-")))
        url = args.url
        if url is None:
            artifacts = version_artifacts(pipeline)
            started = time.perf_counter()
            serving = stack.enter_context(LocalServing(workdir / "serving", baseline=artifacts["v1"],
                                                       candidate=artifacts["v2"], canary_percent=20,
                                                       log_dir=workdir / "logs"))
            print(f"local canary runtime ready in {time.perf_counter() - started:.1f} s at {serving.url} "
                  "(v1 rolled out, v2 at 20 %)")
            url = serving.url
        options = ReplayOptions(url=url, limit=args.limit, rate=args.rate, batch=args.batch,
                                concurrency=args.concurrency, timeout=args.timeout, model_name=args.model_name,
                                progress=not args.no_progress)
        result = run_replay(source, options, args.out or workdir / "replay.json", skew=False)
    t = result.report["timing"]
    rows = result.report["totals"]["rows"]
    print("\n".join(summary_lines(result.report)))
    met = t["wall_seconds"] <= args.target_seconds
    print(f"\nbench replay: {rows:,} holdout transactions of a {pipeline['data'].get('n_transactions', '?')}"
          f"-transaction run, batch {result.report['options']['batch']}, concurrency {args.concurrency}")
    print(f"  {rows / t['wall_seconds']:,.0f} transactions/s, {t['requests_per_second']:,.0f} requests/s")
    print(f"  replay time {t['wall_seconds']:.1f} s   target ≤ {args.target_seconds:g} s: "
          f"{'MET' if met else 'MISSED'} ({t['wall_seconds'] / args.target_seconds:.2f} of the budget)")
    return 0
