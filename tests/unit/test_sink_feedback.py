"""The feedback signals of the prediction store (`store_signals` on a real SQLite store), the sink's
cache of them, and `sink serve --model` refusing a model root it cannot monitor (exit 2, one line)."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from fraud.contract import fit_contract
from fraud.files import write_json
from fraud.profile import PROFILE_FILE, fit_feature_profile
from fraud.schema import FEATURES
from fraud.score_profile import MONITORING_FILE, fit_score_profile
from fraud_canary.feedback import FeedbackSignals, feedback_signals
from fraud_control.prediction_log.feedback import monitored_models, store_signals
from fraud_control.prediction_log.sink import FeedbackCache, SinkMetrics
from fraud_control.prediction_log.store import StoreError, open_store

from tests.prediction_log import T0, features, served_pair


def score_profile(seed: int):
    rng = np.random.default_rng(seed)
    scores = rng.uniform(size=4000)
    return fit_score_profile((rng.uniform(size=4000) < scores).astype(int), scores, 0.5)


def reference_frame(rows: int = 5000) -> pd.DataFrame:
    frame = pd.DataFrame(features(rows, seed=99), columns=list(FEATURES))
    frame["Class"] = 0
    return frame


@pytest.fixture
def store_url(tmp_path):
    return str(tmp_path / "predictions.db")


def record(url: str, events) -> None:
    with open_store(url) as store:
        store.record(list(events))


def test_store_signals_are_feedback_signals_of_the_answered_rows_since(store_url):
    reference = reference_frame()
    profile = fit_feature_profile(reference, fit_contract(reference))
    profiles = {"v1": score_profile(1), "v2": score_profile(2)}
    assert store_signals(store_url, profiles, profile) is None  # an empty store
    request_only, _ = served_pair("unanswered", 5, seed=9)
    record(store_url, [request_only])
    assert store_signals(store_url, profiles, profile) is None  # nothing answered

    since = T0 + timedelta(minutes=1)
    later = T0 + timedelta(minutes=2)
    kept = [served_pair("a", 300, "v1", at=later, seed=1), served_pair("b", 200, "v2", at=later, seed=2),
            served_pair("c", 250, "v1", at=later, seed=3), served_pair("d", 40, "v9", at=later, seed=4)]
    old = served_pair("old", 100, "v1", at=T0, seed=5)
    _, response_only = served_pair("e", 30, "v2", at=later, seed=6)  # its request was never logged
    record(store_url, [event for pair in [*kept, old] for event in pair] + [response_only])

    signals = store_signals(store_url, profiles, profile, since=since)

    def answered(version: str) -> tuple[np.ndarray, np.ndarray]:
        bodies = [response.body for _, response in kept if response.body.model_version == version]
        if version == "v2":
            bodies.append(response_only.body)
        return (np.concatenate([b.fraud_probability for b in bodies]).astype(np.float64),
                np.concatenate([b.is_fraud for b in bodies]))

    # v9 has no profile: no per-version signals, its inputs still count for drift
    inputs = np.concatenate([request.body.features for request, _ in kept])
    assert signals == feedback_signals({"v1": answered("v1"), "v2": answered("v2")}, profiles, inputs, profile)
    assert [(v.model_version, v.rows) for v in signals.versions] == [("v1", 550), ("v2", 230)]
    everything = store_signals(store_url, profiles, profile)
    assert [(v.model_version, v.rows) for v in everything.versions] == [("v1", 650), ("v2", 230)]

    # a profile in another feature order gets its columns in that order
    reordered = tuple(reversed(FEATURES))
    backwards = fit_feature_profile(reference, fit_contract(reference, features=reordered))
    drift = {d.feature: d for d in store_signals(store_url, profiles, backwards, since=since).features}
    assert list(drift) == list(reordered) and all(drift[d.feature] == d for d in signals.features)


def test_the_cache_computes_once_per_period_for_concurrent_scrapes_and_drops_signals_on_a_store_error():
    now = [0.0]
    calls: list[str] = []
    result: list[object] = [FeedbackSignals((), ())]

    def compute():
        calls.append(threading.current_thread().name)
        if isinstance(result[0], Exception):
            raise result[0]
        return result[0]

    metrics = SinkMetrics()
    cache = FeedbackCache(compute, metrics, ttl_s=10.0, clock=lambda: now[0])

    async def scrapes(n: int) -> list:
        return await asyncio.gather(*(cache.refresh() for _ in range(n)))

    async def scrape_storms() -> None:  # one event loop, as in the sink
        assert await scrapes(20) == [result[0]] * 20 and len(calls) == 1
        assert calls[0] != threading.main_thread().name  # off the event loop's thread
        now[0] = 9.9
        assert await scrapes(3) == [result[0]] * 3 and len(calls) == 1
        now[0] = 10.0
        result[0] = StoreError("predictions.db: database is locked")
        assert await scrapes(3) == [None] * 3 and len(calls) == 2 and cache.latest is None

    asyncio.run(scrape_storms())
    assert metrics.registry.get_sample_value("fraud_sink_feedback_errors_total") == 1.0


def test_a_scrape_waits_at_most_its_bound_for_a_slow_computation_and_never_reads_another_models_signals():
    """A busy window takes seconds to compute: the scrape answers after `wait_s` with what the cache
    has (nothing after a start or a change of models), and the computation goes on for the next one."""
    stamp, release, calls = ["a"], threading.Event(), []
    signals = {"a": FeedbackSignals((), ()), "b": FeedbackSignals((), ())}

    def compute():
        calls.append(stamp[0])
        if stamp[0] == "b":
            assert release.wait(timeout=60)
        return signals[stamp[0]]

    cache = FeedbackCache(compute, SinkMetrics(), ttl_s=10.0, clock=lambda: 0.0, models_stamp=lambda: stamp[0],
                          wait_s=0.05)

    async def until_computed() -> FeedbackSignals | None:
        for _ in range(6000):  # the worker thread's end, polled: at most 60 s
            if cache.latest is not None:
                return cache.latest
            await asyncio.sleep(0.01)
        return None

    async def scrapes() -> None:
        assert await cache.refresh() is signals["a"]  # fast: answered in the same scrape
        stamp[0] = "b"
        assert await cache.refresh() is None  # slow: a's signals are not b's; none yet
        assert await cache.refresh() is None and calls == ["a", "b"]  # the one computation still runs
        release.set()
        assert await until_computed() is signals["b"]
        assert await cache.refresh() is signals["b"] and calls == ["a", "b"]

    asyncio.run(scrapes())


def model_root(root, version: int, contract_id: str, *, monitoring: bool = True, profile=None):
    version_dir = root / "fraud-detector" / str(version)
    version_dir.mkdir(parents=True)
    write_json(version_dir / "metadata.json", {"model_version": f"v{version}", "contract_id": contract_id})
    if monitoring:
        write_json(version_dir / MONITORING_FILE, score_profile(version).to_dict())
    if profile is not None:
        profile.save(root / PROFILE_FILE)
    return root


def sink_serve(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fraud_rollout", "sink", "serve", "--store",
                           str(cwd / "predictions.db"), "--port", "0", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_monitored_models_read_each_versions_score_profile_and_the_first_roots_feature_profile(tmp_path):
    reference = reference_frame()
    profile = fit_feature_profile(reference, fit_contract(reference))
    v1 = model_root(tmp_path / "v1", 1, profile.contract_id, profile=profile)
    v2 = model_root(tmp_path / "v2", 2, profile.contract_id)
    models = monitored_models([v1, v2])
    assert models.versions == ("v1", "v2") and models.feature_profile == profile
    assert models.profiles["v2"] == score_profile(2)


def test_sink_serve_refuses_a_model_root_it_cannot_monitor(tmp_path):
    reference = reference_frame()
    profile = fit_feature_profile(reference, fit_contract(reference))
    good = model_root(tmp_path / "good", 1, profile.contract_id, profile=profile)
    bare = model_root(tmp_path / "bare", 2, profile.contract_id, monitoring=False)
    unprofiled = model_root(tmp_path / "unprofiled", 3, profile.contract_id)
    other = model_root(tmp_path / "other", 4, "c0ffee")
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("")
    prefix = "fraud-rollout sink serve: error: --model"
    for models, message in [
        ([tmp_path / "missing"], f"{tmp_path / 'missing'}: no such directory"),
        ([tmp_path / "file"], f"{tmp_path / 'file'}: not a directory"),
        ([tmp_path / "empty"], f"{tmp_path / 'empty'}: expected one version directory under fraud-detector/, found "
                               "none (not an exported model)"),
        ([good, bare], f"{bare}: no {MONITORING_FILE} in {bare / 'fraud-detector' / '2'}"),
        ([unprofiled, good], f"{unprofiled}: no {PROFILE_FILE} beside its feature_contract.json (the model was "
                             "exported without its feature profile)"),
        ([good, good], f"{good}: model_version v1 is given twice"),
        ([good, other], f"{other}: model v4 has feature contract c0ffee, the feature profile (from {good}) is of "
                        f"{profile.contract_id}"),
    ]:
        done = sink_serve(*[arg for root in models for arg in ("--model", str(root))], cwd=tmp_path)
        assert (done.returncode, done.stderr.strip()) == (2, f"{prefix} {message}"), done.stderr
    assert not (tmp_path / "predictions.db").exists()  # refused before the store is opened


@pytest.mark.parametrize("value, message", [
    ("0m", "'0m' is not a positive duration (90s, 30m, 1h, 7d)"),
    ("1 hour", "'1 hour' is not a positive duration (90s, 30m, 1h, 7d)"),
    ("-1h", "'-1h' is not a positive duration (90s, 30m, 1h, 7d)"),
])
def test_a_bad_feedback_window_is_named(tmp_path, value, message):
    done = sink_serve(f"--feedback-window={value}", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (f"fraud-rollout sink serve: error: argument --feedback-window: "
                                                    f"{message}")
    assert not (tmp_path / "predictions.db").exists()



def test_store_signals_judge_every_version_on_its_pairs_by_the_newest_models_calibration(store_url):
    from fraud_canary.feedback import feedback_alerts, paired_estimates
    from fraud_control.prediction_log.feedback_metrics import FeedbackCollector
    from prometheus_client import CollectorRegistry, generate_latest

    from tests.prediction_log import shadow_pair

    reference = reference_frame()
    profile = fit_feature_profile(reference, fit_contract(reference))
    profiles = {"v1": score_profile(1), "v2": score_profile(2)}
    rng = np.random.default_rng(3)
    v1_flags, v2_flags = (rng.uniform(size=400) < 0.1).astype(int), (rng.uniform(size=400) < 0.3).astype(int)
    events = [*served_pair("a", 400, "v1", seed=1),
              shadow_pair("a", v1_flags.tolist(), v2_flags.tolist(), [f"t{i}" for i in range(400)])]
    record(store_url, events)
    signals = store_signals(store_url, profiles, profile)
    # shadow_pair's scores: 0.9 where flagged, else 0.1; v2 (the newest) is the reference
    v2_scores = np.where(v2_flags == 1, 0.9, 0.1)
    assert signals.paired_reference == "v2"
    assert signals.paired == paired_estimates({"v1": (v2_scores, v1_flags), "v2": (v2_scores, v2_flags)},
                                              profiles["v2"])
    registry = CollectorRegistry()
    registry.register(FeedbackCollector(lambda: signals))
    text = generate_latest(registry).decode()
    upper = signals.paired["v1"].recall.upper
    assert f'fraud_feedback_paired_estimated_recall{{bound="upper",model_version="v1",reference="v2"}} {upper}' in text
    fired = [a for a in feedback_alerts(signals) if a["alert"] == "FraudPairedRecallLow"]
    # v1 flags a tenth of the rows at random: it catches about a tenth of what v2's calibration expects
    assert [a["model_version"] for a in fired] == ["v1"] and signals.paired["v2"].recall.upper >= 0.70


def test_sink_serve_takes_its_store_from_the_environment_else_refuses_naming_both(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if k != "PREDICTION_LOG_STORE_URL"}
    refused = subprocess.run([sys.executable, "-m", "fraud_rollout", "sink", "serve", "--port", "0"], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=120)
    assert (refused.returncode, refused.stderr.strip()) == (
        2, "fraud-rollout sink serve: error: no store: give --store URL or set PREDICTION_LOG_STORE_URL")
    bad = subprocess.run([sys.executable, "-m", "fraud_rollout", "sink", "serve", "--port", "0"], cwd=tmp_path,
                         env={**env, "PREDICTION_LOG_STORE_URL": "mysql://db/x"}, capture_output=True, text=True,
                         timeout=120)
    assert (bad.returncode, bad.stderr.strip()) == (2, "fraud-rollout sink serve: error: store URL 'mysql://db/x': use "
                                                       "a file path, sqlite:///PATH or postgresql://USER@HOST:PORT/DB")
