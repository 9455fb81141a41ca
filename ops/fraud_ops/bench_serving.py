"""`fraud-rollout bench serving`: latency and throughput of the predictor and the transformer on loopback.

In one run: p50/p99 of one-row requests straight to the predictor and through the transformer
(keep-alive, concurrency 1) and their ratio; one 10,000-row request end to end; requests per
second at concurrency 32 with the error count, driven by `wrk` (a Python asyncio client
saturates before the servers do). Each number is printed next to its target.

Shadow scoring, side by side in the same run (`shadow_comparison`): three transformers in front of
the same two predictor processes (one takes all traffic, the other is the revision the shadow
scores go to), shadow off, at the default share and at 100 %; one-row p50 at concurrency 1 and
requests per second at concurrency 32 for each, and the default's cost relative to off (targets:
p50 +10 % at most, throughput −15 % at most).

The prediction log the same way (`logging_comparison`): two transformers in front of one predictor,
without and with `--logger_url`, interleaved; the cost of logging (target: p50 +5 % at most, issue
11) and the events the sink acknowledged per second against requests per second.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import urlopen

import numpy as np
from fraud.export import read_contract
from fraud.processes import ServerProcess
from fraud.protocol import request_body
from fraud.schema import FEATURES
from fraud_control.inferenceservice.isvc import NAME
from fraud_serving.fast_route import INFERENCE_CONTENT_LENGTH_HEADER, binary_request
from fraud_serving.shadow import DEFAULT_SHADOW_PERCENT

#: CPU priority of the bench's own sink (`run_benchmark`): the lowest, as if it ran on other cores.
SINK_NICENESS = 19
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open("{body}", "rb"):read("*a")
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK requests=%d duration_us=%d status=%d connect=%d read=%d write=%d timeout=%d "
                         .. "p50_us=%d p99_us=%d\\n", summary.requests, summary.duration, e.status, e.connect,
                         e.read, e.write, e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass
class Measurement:
    name: str
    value: float
    unit: str
    target: str = ""
    ok: bool | None = None


@dataclass
class BenchReport:
    measurements: list[Measurement] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, value: float, unit: str, limit: float | None = None, at_least: bool = False) -> None:
        if limit is None:
            self.measurements.append(Measurement(name, value, unit))
        else:
            ok = value >= limit if at_least else value <= limit
            target = f"{'≥' if at_least else '≤'} {limit:g} {unit}".strip()
            self.measurements.append(Measurement(name, value, unit, target, ok))

    def value(self, name: str) -> float:
        return next(m.value for m in self.measurements if m.name == name)

    def format(self) -> str:
        width = max(len(m.name) for m in self.measurements)
        lines = [f"{'measurement':<{width}}  {'value':>12}  target"]
        for m in self.measurements:
            verdict = "" if m.ok is None else ("  ok" if m.ok else "  MISSED")
            lines.append(f"{m.name:<{width}}  {m.value:>9.2f} {m.unit:<3}  {m.target}{verdict}")
        return "\n".join(lines + self.notes)


class KeepAliveClient:
    """One HTTP/1.1 connection, reused: the least client overhead Python offers."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.path = parts.path
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)

    def post(self, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        self.connection.request("POST", self.path, body=body, headers=headers or {"Content-Type": "application/json"})
        response = self.connection.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        self.connection.close()


def latencies(url: str, body: bytes, requests: int, warmup: int = 100,
              headers: dict[str, str] | None = None) -> np.ndarray:
    """Seconds per request, one at a time on one keep-alive connection; any non-200 fails the run."""
    client = KeepAliveClient(url)
    try:
        timings = []
        for index in range(warmup + requests):
            start = time.perf_counter()
            status, payload = client.post(body, headers)
            elapsed = time.perf_counter() - start
            if status != 200:
                raise RuntimeError(f"{url} answered {status}: {payload[:200]!r}")
            if index >= warmup:
                timings.append(elapsed)
        return np.asarray(timings)
    finally:
        client.close()


def run_wrk(url: str, body: bytes, connections: int, duration: int, workdir: Path) -> dict[str, int]:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (make system, or apt-get install wrk)")
    body_file, script = workdir / "body.json", workdir / "post.lua"
    body_file.write_bytes(body)
    script.write_text(WRK_SCRIPT.format(body=body_file))
    threads = max(1, min(2, connections))
    result = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "-s", str(script), url],
                            capture_output=True, text=True, timeout=duration + 60)
    match = re.search(r"^WRK (.*)$", result.stdout, re.MULTILINE)
    if result.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({result.returncode}): {result.stdout[-500:]} {result.stderr[-500:]}")
    return {key: int(value) for key, value in (pair.split("=") for pair in match.group(1).split())}


def sample_transactions(rows: int, seed: int = 0) -> np.ndarray:
    """Raw transactions in contract order from the simulator (the schema the model was trained on)."""
    from fraud import simulate

    frame = simulate.generate(max(rows, 1_000), seed)
    return frame.loc[:, list(FEATURES)].to_numpy(dtype=np.float64)[:rows]


def compute_medians(artifact_root: str | Path, repeats: int = 2_000) -> dict[str, float]:
    """Median seconds of one single-row scoring call, in process: the NumPy path the predictor
    serves and the SavedModel signature it was checked against (the measurement behind the choice)."""
    from fraud_serving.scoring import load_artifact, probe_inputs

    artifact = load_artifact(artifact_root)
    row = probe_inputs(artifact.n_features)[:1]
    medians = {}
    for name, score in (("numpy", artifact.score), ("signature", artifact.signature)):
        for _ in range(200):
            score(row)
        timings = np.empty(repeats)
        for i in range(repeats):
            started = time.perf_counter()
            score(row)
            timings[i] = time.perf_counter() - started
        medians[name] = float(np.median(timings))
    return medians


def measure(predictor_url: str, transformer_url: str, contract_dir: str | Path, requests: int = 2_000,
            rows: int = 10_000, duration: int = 10, connections: int = 32, model_name: str = NAME) -> BenchReport:
    """Benchmark already running servers (base URLs)."""
    report = BenchReport()
    contract = read_contract(contract_dir)
    raw = sample_transactions(max(rows, 1))
    one_raw = json.dumps(request_body(raw[:1])).encode()
    one_scaled = json.dumps({"inputs": [{"name": "scaled_features", "shape": [1, len(FEATURES)], "datatype": "FP32",
                                         "data": contract.transform(raw[:1]).tolist()}]}).encode()
    predictor_infer = f"{predictor_url}/v2/models/{model_name}/infer"
    transformer_infer = f"{transformer_url}/v2/models/{model_name}/infer"

    compute = compute_medians(contract_dir)
    report.add("one-row compute, NumPy path served (median)", compute["numpy"] * 1e3, "ms", 0.1)
    report.add("one-row compute, SavedModel signature (median)", compute["signature"] * 1e3, "ms")
    direct = latencies(predictor_infer, one_scaled, requests) * 1e3
    through = latencies(transformer_infer, one_raw, requests) * 1e3
    report.add("predictor direct p50 (1 row)", float(np.percentile(direct, 50)), "ms")
    report.add("predictor direct p99 (1 row)", float(np.percentile(direct, 99)), "ms")
    report.add("via transformer p50 (1 row)", float(np.percentile(through, 50)), "ms", 3)
    report.add("via transformer p99 (1 row)", float(np.percentile(through, 99)), "ms", 8)
    report.add("p50 ratio transformer/direct", float(np.percentile(through, 50) / np.percentile(direct, 50)), "x",
               1.6)

    big = json.dumps(request_body(raw[:rows])).encode()
    # Warm-up requests size the servers' buffers and thread pools; the first 10,000-row requests
    # here take 70–130 ms, the steady state about 45.
    big_runs = latencies(transformer_infer, big, requests=5, warmup=3) * 1e3
    report.add(f"{rows:,} rows via transformer, JSON (median of 5, after 3 warm-up)", float(np.median(big_runs)),
               "ms", 60)
    binary, json_length = binary_request(None, "transactions", raw[:rows], "FP64")
    binary_runs = latencies(transformer_infer, binary, requests=5, warmup=3, headers={
        "Content-Type": "application/octet-stream", INFERENCE_CONTENT_LENGTH_HEADER: str(json_length)}) * 1e3
    report.add(f"{rows:,} rows via transformer, binary tensor (median of 5)", float(np.median(binary_runs)), "ms")

    with tempfile.TemporaryDirectory() as workdir:
        wrk_transformer = run_wrk(transformer_infer, one_raw, connections, duration, Path(workdir))
        wrk_predictor = run_wrk(predictor_infer, one_scaled, connections, duration, Path(workdir))
    for label, result, limit in (("via transformer", wrk_transformer, 600), ("predictor direct", wrk_predictor, None)):
        seconds = result["duration_us"] / 1e6
        errors = sum(result[key] for key in ("status", "connect", "read", "write", "timeout"))
        report.add(f"{label} req/s (c={connections}, {duration} s)", result["requests"] / seconds, "/s", limit,
                   at_least=True)
        report.add(f"{label} errors (c={connections})", errors, "", 0)
        report.add(f"{label} p99 under load (c={connections})", result["p99_us"] / 1e3, "ms")
    report.notes.append(f"loopback, 1-row bodies {len(one_raw)} B (raw) / {len(one_scaled)} B (scaled); "
                        f"{rows:,}-row body {len(big) / 1e6:.1f} MB as JSON, {len(binary) / 1e6:.1f} MB binary; "
                        f"wrk {connections} connections")
    return report


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Rounds:
    """One transformer's share of an interleaved comparison: per round, one-row latencies (c=1), wrk's
    (requests, seconds, errors) at c=`connections`, its CPU seconds per request, and the prediction-log
    events its sink acknowledged during the wrk run, and (a logging transformer) all it acknowledged
    once the run's backlog drained, and how long that took."""

    timings: list[np.ndarray] = field(default_factory=list)
    served: list[tuple[int, float, int]] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    logged: list[float] = field(default_factory=list)
    logged_drained: list[float] = field(default_factory=list)
    drain_seconds: list[float] = field(default_factory=list)

    def p50_ms(self) -> float:
        return float(np.percentile(np.concatenate(self.timings), 50)) * 1e3

    def rate(self) -> float:
        return sum(r for r, _, _ in self.served) / sum(s for _, s, _ in self.served)


def interleaved(transformers: dict, requests: int, duration: int, connections: int, workdir: Path,
                rounds: int) -> dict:
    """The transformers take turns in `rounds` short runs (`requests / rounds` one-row requests, then
    wrk for at least 2 s); a cost is the median over rounds of the ratio to the baseline in the same
    round. On this shared 2-core machine other processes' load drifts within seconds: per-round p50s
    of one configuration ranged 2.8–17 ms, an A/A pair (shadow off vs 0.001 %) differed by 9 % pooled,
    and one-after-the-other runs put +36 % on a 10 % shadow share. The transformer's CPU time per
    request under wrk (from /proc) is steadier than either: it is the capacity a feature costs the
    transformer, whoever else loads the machine."""
    one_raw = json.dumps(request_body(sample_transactions(1))).encode()
    measured = {key: Rounds() for key in transformers}
    wrk_seconds = max(2, duration // 3)
    for _ in range(rounds):
        for key, server in transformers.items():
            runs = measured[key]
            runs.timings.append(latencies(server.infer_url, one_raw, max(1, requests // rounds), warmup=20))
            settle(server.url)  # the latency run's events: not counted as the wrk run's
            before, logged_before = cpu_seconds(server.process.pid), logged_events(server.url)
            result = run_wrk(server.infer_url, one_raw, connections, wrk_seconds, workdir)
            runs.cpu.append((cpu_seconds(server.process.pid) - before) / max(1, result["requests"]))
            runs.logged.append(logged_events(server.url) - logged_before)
            errors = sum(result[key] for key in ("status", "connect", "read", "write", "timeout"))
            runs.served.append((result["requests"], result["duration_us"] / 1e6, errors))
            drained = settle(server.url)
            if drained is not None:
                runs.drain_seconds.append(drained)
                runs.logged_drained.append(logged_events(server.url) - logged_before)
    return measured


def settle(server_url: str) -> float | None:
    """Until a logging transformer has posted the events its wrk run queued (otherwise posting that
    backlog, and the sink storing it, runs during the next configuration's latency run); the seconds
    it took, None for a transformer without a prediction log."""
    from fraud_ops.replay_pairs import LOG_QUEUE_METRIC, gauge, wait_logged

    if gauge(server_url, LOG_QUEUE_METRIC) is None:
        return None
    started = time.perf_counter()
    wait_logged(server_url, timeout=120)
    return time.perf_counter() - started


def logged_events(server_url: str) -> float:
    """Prediction-log events the transformer's sink has acknowledged so far (its /metrics)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urlopen(f"{server_url}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return sum(sample.value for family in text_string_to_metric_families(text)
               if family.name == "fraud_payload_log_events" for sample in family.samples
               if sample.name == "fraud_payload_log_events_total")


def add_costs(report: BenchReport, label: str, measured: Rounds, baseline: Rounds, connections: int,
              rounds: int, p50_limit: float, rate_limit: float) -> None:
    p50_ratio = np.median([np.median(m) / np.median(b) for m, b in zip(measured.timings, baseline.timings)])
    rate_ratio = np.median([(m[0] / m[1]) / (b[0] / b[1]) for m, b in zip(measured.served, baseline.served)])
    report.add(f"{label}: p50 increase (median of {rounds} rounds)", 100 * (p50_ratio - 1), "%", p50_limit)
    report.add(f"{label}: req/s decrease (c={connections}, median of {rounds} rounds)", 100 * (1 - rate_ratio), "%",
               rate_limit)
    report.add(f"{label}: transformer CPU per request increase",
               100 * (np.median(measured.cpu) / np.median(baseline.cpu) - 1), "%", 15)


def add_rounds(report: BenchReport, label: str, runs: Rounds, connections: int) -> None:
    report.add(f"{label}: via transformer p50 (1 row)", runs.p50_ms(), "ms")
    report.add(f"{label}: via transformer req/s (c={connections})", runs.rate(), "/s")
    report.add(f"{label}: transformer CPU per request (median)", float(np.median(runs.cpu)) * 1e3, "ms")
    report.add(f"{label}: errors (c={connections})", sum(e for _, _, e in runs.served), "", 0)


def shadow_comparison(report: BenchReport, transformers: dict[float, ServerProcess], requests: int, duration: int,
                      connections: int, workdir: Path, rounds: int = 6) -> None:
    """p50 (c=1) and req/s (c=`connections`) through transformers that differ only in the shadow
    share, interleaved (`interleaved`)."""
    measured = interleaved(transformers, requests, duration, connections, workdir, rounds)
    for percent, runs in measured.items():
        add_rounds(report, f"shadow {percent:g} %", runs, connections)
    default = DEFAULT_SHADOW_PERCENT
    add_costs(report, f"shadow {default:g} % vs off", measured[default], measured[0.0], connections, rounds, 10, 15)
    report.notes.append(f"shadow: the same two predictor processes behind every transformer, one at 100 % of the "
                        f"traffic, the other the shadow target; {rounds} interleaved rounds, wrk "
                        f"{max(2, duration // 3)} s each")


def logging_comparison(report: BenchReport, transformers: dict[str, ServerProcess], requests: int, duration: int,
                       connections: int, workdir: Path, sink: str, rounds: int = 12) -> None:
    """The prediction log's cost: the same predictor behind a transformer without and one with
    `--logger_url` (interleaved, `interleaved`), and whether the sink keeps up: the events it
    acknowledged per second under wrk against the requests answered per second (2 events each)."""
    measured = interleaved(transformers, requests, duration, connections, workdir, rounds)
    for label, runs in measured.items():
        add_rounds(report, f"logging {label}", runs, connections)
    on = measured["on"]
    add_costs(report, "logging on vs off", on, measured["off"], connections, rounds, 5, 15)
    events_rate = sum(on.logged) / sum(s for _, s, _ in on.served)
    answered = sum(r for r, _, _ in on.served)
    report.add(f"logging on: events acknowledged per second during the run (c={connections})", events_rate, "/s")
    report.add("logging on: events acknowledged per request answered, during the run", events_rate / on.rate(), "")
    # nothing lost: two events per answered request once the backlog drained (wrk's own requests only)
    report.add("logging on: events acknowledged per request answered, once drained", sum(on.logged_drained) / answered,
               "", 2.0, at_least=True)
    report.add("logging on: backlog drained after a run (max)", max(on.drain_seconds), "s")
    report.notes.append(f"logging: one predictor behind both transformers, shadow off; sink {sink}; "
                        f"{rounds} interleaved rounds")


def run_benchmark(baseline: Path, requests: int = 2_000, rows: int = 10_000, duration: int = 10,
                  connections: int = 32, prediction_sink_url: str | None = None) -> BenchReport:
    """Start a predictor and a transformer for `baseline` on loopback, measure, stop them; then the
    shadow comparison (a second predictor and three transformers with routes files) and the logging
    comparison (a transformer posting to `prediction_sink_url`, else to the real prediction-log sink
    started here on a SQLite file in the bench's log dir, so the numbers include its commits)."""
    from fraud.processes import stop_all
    from fraud.routes import Backend, write_routes
    from fraud_control.local_runtime.servers import start_predictor, start_sink, start_transformer

    with tempfile.TemporaryDirectory() as logs, ExitStack() as stack:
        predictor = start_predictor(baseline, Path(logs))
        stack.callback(stop_all, [predictor])
        other = start_predictor(baseline, Path(logs), label="predictor-shadow-target")
        stack.callback(stop_all, [other])
        transformer = start_transformer(baseline, Path(logs), predictor_url=predictor.url, shadow_percent=0)
        stack.callback(stop_all, [transformer])
        routes = Path(logs) / "routes.json"
        write_routes(routes, [Backend(predictor.url, "served", "", 100), Backend(other.url, "shadow", "", 0)], 1)
        shadowed = {}
        for percent in (0.0, DEFAULT_SHADOW_PERCENT, 100.0):
            server = start_transformer(baseline, Path(logs), routes_file=routes, shadow_percent=percent,
                                       pairs_log=Path(logs) / f"pairs-{percent:g}.jsonl",
                                       label=f"transformer-shadow-{percent:g}")
            stack.callback(stop_all, [server])
            shadowed[percent] = server
        if prediction_sink_url is None:
            store = Path(logs) / "bench-prediction-log.sqlite"
            # On a cluster the sink has a pod of its own; here it shares the 2 cores with the servers
            # under test, so it runs at the lowest CPU priority: it takes what inference leaves, and
            # the events it acknowledges per second show whether that keeps up.
            sink_process = start_sink(str(store), Path(logs), niceness=SINK_NICENESS).wait_ready()
            stack.callback(sink_process.stop)
            sink, sink_label = sink_process.url, f"the prediction-log sink on SQLite ({store}), at nice {SINK_NICENESS}"
        else:
            sink, sink_label = prediction_sink_url, prediction_sink_url
        logging = {"off": start_transformer(baseline, Path(logs), predictor_url=predictor.url, shadow_percent=0,
                                            label="transformer-logging-off"),
                   "on": start_transformer(baseline, Path(logs), predictor_url=predictor.url, shadow_percent=0,
                                           logger_url=sink, label="transformer-logging-on")}
        stack.callback(stop_all, list(logging.values()))
        for server in (predictor, other, transformer, *shadowed.values(), *logging.values()):
            server.wait_ready()
        report = measure(predictor.url, transformer.url, baseline, requests=requests, rows=rows, duration=duration,
                         connections=connections)
        shadow_comparison(report, shadowed, requests, duration, connections, Path(logs))
        logging_comparison(report, logging, requests, duration, connections, Path(logs), sink_label)
        return report
