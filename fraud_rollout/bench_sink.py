"""`fraud-rollout bench sink`: the prediction-log sink's `/metrics` with millions of stored rows.

The sink's feedback signals (score shift, CBPE, feature drift) are over the rows served in the
last `--feedback-window` (1 h). A store that keeps 90 days holds far more than that: the window
must be read by an index, not by a scan of the whole table. The benchmark fills a SQLite store,
in the sink's schema, with `--rows` predictions spread evenly over `--days` (the holdout's
transactions' features, 80 % served by v1; scores drawn as a fraud model's, nearly all near 0), then
times, in one run:

- the signals' computation (what a scrape waits for) without the window's index, as the store
  was before it had one, and with it;
- the real sink (`python -m fraud_control.prediction_log.sink --models-file …`, a subprocess): its first `/metrics`
  after start, which computes the signals, against the 1 s target (Prometheus' scrape timeout is 10 s);
- the same with a busy window (`--busy-hours`, 25: about 350k rows at the default volume, what the
  demo's replay serves): a scrape that waits for the whole computation (`--scrape-wait inf`, before)
  and one that waits at most 0.5 s and answers with the last signals (the default, after), with the
  time until a scrape shows the new signals.
"""
from __future__ import annotations

import json
import sqlite3
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from fraud_rollout.args import positive_int

TARGET_S = 1.0
CHUNK = 250_000


def register(commands, bench) -> None:
    """`bench sink` (a benchmark only: `commands` is the shared signature's)."""
    parser = bench.add_parser("sink", help="the prediction-log sink's /metrics with millions of stored rows")
    parser.add_argument("--rows", type=positive_int, default=10_000_000, help="stored predictions (default 10,000,000)")
    parser.add_argument("--days", type=positive_int, default=30, help="they were served over this many days (default 30)")
    parser.add_argument("--report", type=Path,
                        help="pipeline report.json whose models and holdout are used (default: the pipeline run's, "
                             "else the demo's)")
    parser.add_argument("--busy-hours", type=positive_int, default=25,
                        help="the busy feedback window, in hours (default 25: about 350,000 rows at the default volume)")
    parser.add_argument("--dir", type=Path, help="where the store is written (default: a temporary directory)")
    parser.set_defaults(func=bench_command)


def fill(path: Path, rows: int, days: int, versions: list[str], features: np.ndarray,
         progress=print) -> tuple[int, float]:
    """`rows` answered predictions over the `days` before now, 80 % the first version's; returns
    (rows in the last hour, seconds taken). The schema is the store's own (open_store creates it)."""
    from fraud_control.prediction_log.store import open_store

    with open_store(str(path)):
        pass
    rng = np.random.default_rng(0)
    end = datetime.now(UTC)
    span = timedelta(days=days).total_seconds()
    started = time.perf_counter()
    connection = sqlite3.connect(path)
    try:
        for offset in range(0, rows, CHUNK):
            n = min(CHUNK, rows - offset)
            seconds = span * (1 - (np.arange(offset, offset + n) + 0.5) / rows)  # oldest first
            served = np.where(rng.random(n) < 0.8, 0, 1)
            scores = rng.beta(0.3, 30, n)  # a fraud model's scores: nearly all near 0
            picks = rng.integers(0, len(features), n)
            times = [(end - timedelta(seconds=float(s))).isoformat(timespec="microseconds") for s in seconds]
            connection.executemany(
                "INSERT INTO predictions (event_id, row, transaction_id, features, model_version, score, decision, "
                "requested_at, answered_at) VALUES (?, 0, ?, ?, ?, ?, ?, ?, ?)",
                ((f"bench-{offset + i}", f"t-{offset + i}", features[picks[i]].tobytes(), versions[served[i]],
                  float(scores[i]), int(scores[i] >= 0.5), times[i], times[i]) for i in range(n)))
            connection.commit()
            progress(f"  stored {offset + n:,} of {rows:,} rows")
    finally:
        connection.close()
    return int(np.ceil(rows * 3600 / span)), time.perf_counter() - started


def signals_seconds(path: Path, models, window: timedelta, *, indexed: bool) -> float:
    """Time one computation of the feedback signals over the last `window` (what a scrape waits
    for), on the store as it is now or (`indexed` False) as it was before it had the window's index:
    that is dropped after the store is open, since opening it creates the index."""
    from fraud_control.prediction_log.feedback import signals_of
    from fraud_control.prediction_log.store import open_store

    with open_store(str(path)) as store:
        if not indexed:
            with sqlite3.connect(path) as connection:
                connection.execute("DROP INDEX predictions_time")
        started = time.perf_counter()
        signals = signals_of(store, models.profiles, models.feature_profile, since=datetime.now(UTC) - window)
        seconds = time.perf_counter() - started
    assert signals is not None, "the window holds no answered rows"
    return seconds


def first_scrape_seconds(path: Path, roots: list[str], workdir: Path,
                         options: tuple[str, ...] = ()) -> tuple[float, int, float]:
    """Start the real sink on `path` (with more of its flags, `options`) and time its first /metrics;
    (seconds, fraud_feedback_* samples in it, seconds from the first scrape until one shows them)."""
    import httpx
    from fraud_control.local_runtime.servers import start_sink

    models_file = workdir / "models.json"
    models_file.write_text(json.dumps(roots))
    sink = start_sink(str(path), workdir / "logs", models_file=models_file, options=options).wait_ready()

    def scrape(client: httpx.Client) -> int:
        response = client.get(f"{sink.url}/metrics")
        response.raise_for_status()
        return sum(1 for line in response.text.splitlines() if line.startswith("fraud_feedback_"))

    try:
        with httpx.Client(timeout=120) as client:
            started = time.perf_counter()
            series = scrape(client)
            seconds = time.perf_counter() - started
            shown = series
            while not shown and time.perf_counter() - started < 120:
                time.sleep(0.1)  # the computation runs on in the sink: the next scrapes show it when done
                shown = scrape(client)
            return seconds, series, time.perf_counter() - started
    finally:
        sink.stop()


def bench_command(args) -> int:
    import pandas as pd
    from fraud.schema import FEATURES
    from fraud_control.prediction_log.feedback import monitored_models
    from fraud_control.prediction_log.store import open_store
    from fraud_ops.local_defaults import pipeline_report
    from fraud_ops.replay_source import read_pipeline_report

    report = read_pipeline_report(args.report or pipeline_report())
    roots = [report["models"][role]["artifact"] for role in ("v1", "v2")]
    models = monitored_models(roots)
    features = pd.read_parquet(report["artifacts"]["holdout"]).loc[:, list(FEATURES)].to_numpy(dtype="<f8")
    with tempfile.TemporaryDirectory(prefix="bench-sink-", dir=args.dir) as directory:
        workdir = Path(directory)
        path = workdir / "prediction-log.sqlite"
        print(f"bench sink: {args.rows:,} predictions over {args.days} days into {path}", flush=True)
        in_window, filled = fill(path, args.rows, args.days, list(models.versions), features,
                                 progress=lambda line: print(line, flush=True))
        size_mb = path.stat().st_size / 1e6
        window = timedelta(hours=1)
        before = signals_seconds(path, models, window, indexed=False)
        started = time.perf_counter()
        with open_store(str(path)):  # opening the store builds its missing index: once, after an upgrade
            pass
        indexed = time.perf_counter() - started
        after = signals_seconds(path, models, window, indexed=True)
        scrape, series, _ = first_scrape_seconds(path, roots, workdir)
        busy = ("--feedback-window", f"{args.busy_hours}h")
        waited, waited_series, _ = first_scrape_seconds(path, roots, workdir, (*busy, "--scrape-wait", "inf"))
        bounded, bounded_series, shown = first_scrape_seconds(path, roots, workdir, busy)
    in_busy = round(args.rows * args.busy_hours / (24 * args.days))
    print(f"\nbench sink: {args.rows:,} stored rows ({size_mb:,.0f} MB, filled in {filled:.0f} s), about "
          f"{in_window:,} in the feedback window (1 h)")
    print(f"  {'feedback signals, no window index (before)':<46}{before:>8.2f} s")
    print(f"  {'feedback signals, with the index (after)':<46}{after:>8.2f} s   (building the index: {indexed:.0f} s, once)")
    print(f"  {'the real sink, first /metrics after start':<46}{scrape:>8.2f} s   target < {TARGET_S:.0f} s: "
          f"{'MET' if scrape < TARGET_S else 'MISSED'} ({series} fraud_feedback_* samples)")
    print(f"  a busy window ({args.busy_hours} h, about {in_busy:,} rows), the real sink's first /metrics:")
    print(f"  {'  waiting for the signals (--scrape-wait inf)':<46}{waited:>8.2f} s   ({waited_series} samples)")
    print(f"  {'  waiting at most 0.5 s (the default)':<46}{bounded:>8.2f} s   target < {TARGET_S:.0f} s: "
          f"{'MET' if bounded < TARGET_S else 'MISSED'} ({bounded_series} samples; in a scrape {shown:.2f} s "
          "after the first)")
    return 0
