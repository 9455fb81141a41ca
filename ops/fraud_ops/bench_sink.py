"""The measuring of `fraud-rollout bench sink`: the prediction-log sink's `/metrics` with millions of stored rows.

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

TARGET_S = 1.0
CHUNK = 250_000


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


def measure(report_path: Path, rows: int, days: int, busy_hours: int, directory: Path | None,
            progress=print) -> dict:
    """Fill a store with `rows` predictions over `days` from the report's holdout and models, then
    time the signals (without and with the window's index) and the real sink's first /metrics
    (quiet, and with a busy window of `busy_hours`, waiting and not); `progress` takes the lines."""
    import pandas as pd
    from fraud.schema import FEATURES
    from fraud_control.prediction_log.feedback import monitored_models
    from fraud_control.prediction_log.store import open_store

    from fraud_ops.replay_source import read_pipeline_report

    report = read_pipeline_report(report_path)
    roots = [report["models"][role]["artifact"] for role in ("v1", "v2")]
    models = monitored_models(roots)
    features = pd.read_parquet(report["artifacts"]["holdout"]).loc[:, list(FEATURES)].to_numpy(dtype="<f8")
    with tempfile.TemporaryDirectory(prefix="bench-sink-", dir=directory) as temporary:
        workdir = Path(temporary)
        path = workdir / "prediction-log.sqlite"
        progress(f"bench sink: {rows:,} predictions over {days} days into {path}")
        in_window, filled = fill(path, rows, days, list(models.versions), features, progress=progress)
        size_mb = path.stat().st_size / 1e6
        window = timedelta(hours=1)
        before = signals_seconds(path, models, window, indexed=False)
        started = time.perf_counter()
        with open_store(str(path)):  # opening the store builds its missing index: once, after an upgrade
            pass
        indexed = time.perf_counter() - started
        after = signals_seconds(path, models, window, indexed=True)
        scrape, series, _ = first_scrape_seconds(path, roots, workdir)
        busy = ("--feedback-window", f"{busy_hours}h")
        waited, waited_series, _ = first_scrape_seconds(path, roots, workdir, (*busy, "--scrape-wait", "inf"))
        bounded, bounded_series, shown = first_scrape_seconds(path, roots, workdir, busy)
    return {"in_window": in_window, "filled": filled, "size_mb": size_mb, "before": before, "indexed": indexed,
            "after": after, "scrape": scrape, "series": series, "waited": waited, "waited_series": waited_series,
            "bounded": bounded, "bounded_series": bounded_series, "shown": shown}
