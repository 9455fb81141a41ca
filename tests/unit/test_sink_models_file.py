"""The sink's `--models-file`: the models it reports feedback signals on, re-read in place when the
local runtime rewrites the file (a promote or a rollback no longer restarts the sink), and the
feedback cache recomputed at once when they change."""
from __future__ import annotations

import asyncio

from fraud.contract import fit_contract
from fraud.files import write_json
from fraud.profile import fit_feature_profile
from fraud_canary.feedback import FeedbackSignals
from fraud_control.prediction_log.sink import FeedbackCache, ModelsFile, SinkMetrics

from tests.unit.test_sink_feedback import model_root, reference_frame


def test_the_models_file_is_reread_only_when_it_changes_and_a_bad_one_means_no_models(tmp_path):
    reference = reference_frame()
    profile = fit_feature_profile(reference, fit_contract(reference))
    v1 = model_root(tmp_path / "v1", 1, profile.contract_id, profile=profile)
    v2 = model_root(tmp_path / "v2", 2, profile.contract_id, profile=profile)
    path = tmp_path / "sink-models.json"
    models = ModelsFile(path)
    assert models.current() is None and models.stamp() is None  # no file yet: no models
    write_json(path, [str(v1), str(v2)])
    first = models.current()
    assert first is not None and first.versions == ("v1", "v2")
    assert models.current() is first  # unchanged: not read again
    write_json(path, [str(v2), str(v1)])  # a promote: the rolled-out model first
    assert models.current().versions == ("v2", "v1")
    write_json(path, [])
    assert models.current() is None
    for bad in ({"roots": [str(v1)]}, [str(tmp_path / "missing")]):
        write_json(path, bad)
        assert models.current() is None
    path.write_text("not json")
    assert models.current() is None


def test_the_cache_recomputes_at_once_when_the_models_change():
    stamp, calls = ["a"], []

    def compute():
        calls.append(stamp[0])
        return FeedbackSignals((), ())

    cache = FeedbackCache(compute, SinkMetrics(), ttl_s=10.0, clock=lambda: 0.0, models_stamp=lambda: stamp[0])

    async def scrapes() -> None:
        await cache.refresh()
        await cache.refresh()
        assert calls == ["a"]  # within the period, same models: one computation
        stamp[0] = "b"
        await cache.refresh()
        assert calls == ["a", "b"]

    asyncio.run(scrapes())
