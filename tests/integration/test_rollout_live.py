"""Live traffic, no labels, real servers: `fraud-rollout serve` with the tiny v1 rolled out and a
candidate at 20 %, holdout features sent without their labels by a plain HTTP client (not the
replay), and `rollout start` judging the transformer's counters, read from its /metrics or through
a real Prometheus scraping it. The label-free evidence (paired CBPE of the recall difference over
the shadow pairs, each version's calibration judging the rows it alone flags) is what may promote.

Every request is shadow-scored (`--shadow-percent 100`): the tiny holdout has 2 % fraud, and a few
thousand pairs give the lower bound room inside the 0.10 margin within the allowed holds (a few
hundred do not: the bound is about the traffic, not the pairs at hand). The policy is the default."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from fraud.export import find_version_dir

from tests.integration.serving_fixtures import start_local_runtime
from tests.integration.test_canary_analysis import pipeline_report  # noqa: F401
from tests.integration.test_rollout_local import live_traffic, rollout
from tests.prometheus_server import prometheus_scraping

pytestmark = pytest.mark.integration
WINDOW = ("--window", "3", "--min-requests", "300", "--poll", "0.2")


def _start(runtime, pipeline_report, *source: str) -> dict:  # noqa: F811
    controller = rollout(runtime, "start", *WINDOW, *source, "--report", str(pipeline_report), "--json")
    out, err = controller.communicate(timeout=600)
    state = json.loads(out)["rollout"] if out else {}
    # rollout start's exit code says how it ended: 0 promoted, 4 inconclusive (3 rolled back, 5 aborted)
    assert controller.returncode == {"promoted": 0, "inconclusive": 4}.get(state.get("status")), err
    return state


def _assert_promoted_without_labels(state: dict, runtime) -> None:
    steps = state["steps"]
    moves = [(s["percent"], s["decision"]) for s in steps if s["decision"] != "hold"]
    assert moves == [(5, "advance"), (20, "advance"), (50, "promote")], [(s["decision"], s["reasons"]) for s in steps]
    assert all(v["frauds"] is None for s in steps for v in s["evidence"]["versions"].values())  # no labels anywhere
    promoted = steps[-1]["reasons"]
    line = next(r for r in promoted if "paired.recall_estimate" in r)
    assert line.startswith("PASS paired.recall_estimate: recall v2 − v1 on "), promoted
    assert "each version's calibration on the rows it alone flags: " in line
    assert state["status"] == "promoted"
    assert runtime.service.get()["spec"]["predictor"].get("canaryTrafficPercent") is None


@pytest.fixture
def candidate_runtime(tiny_run, tmp_path):
    with start_local_runtime(tmp_path / "state", tiny_run.v1, tiny_run.v2, 20, tmp_path / "logs",
                             shadow_percent=100) as handle:
        yield handle


def test_label_free_evidence_promotes_a_better_candidate_from_the_transformers_metrics(
        candidate_runtime, tiny_run, pipeline_report):  # noqa: F811
    with live_traffic(candidate_runtime, tiny_run):
        state = _start(candidate_runtime, pipeline_report, "--metrics-url", f"{candidate_runtime.url}/metrics")
    _assert_promoted_without_labels(state, candidate_runtime)


def test_label_free_evidence_promotes_through_a_real_prometheus(candidate_runtime, tiny_run, pipeline_report,
                                                                tmp_path):  # noqa: F811
    with prometheus_scraping(candidate_runtime.url, tmp_path / "prometheus") as prometheus, \
            live_traffic(candidate_runtime, tiny_run):
        state = _start(candidate_runtime, pipeline_report, "--prometheus", prometheus)
    _assert_promoted_without_labels(state, candidate_runtime)
    assert state["steps"][0]["evidence"]["source"] == f"prometheus {prometheus}"


@pytest.fixture
def v1_again(tiny_run, tmp_path) -> Path:
    """v1's artifact as version 2: a candidate that decides exactly as the baseline."""
    root = tmp_path / "v1-as-v2"
    shutil.copytree(tiny_run.v1, root)
    version_dir = find_version_dir(root)
    moved = version_dir.rename(version_dir.parent / "2")
    metadata = json.loads((moved / "metadata.json").read_text())
    metadata.update(version=2, model_version="v2")
    (moved / "metadata.json").write_text(json.dumps(metadata))
    return root


def test_a_candidate_equal_to_the_baseline_is_never_rolled_back(tiny_run, v1_again, pipeline_report,
                                                               tmp_path):  # noqa: F811
    with start_local_runtime(tmp_path / "state", tiny_run.v1, v1_again, 20, tmp_path / "logs",
                             shadow_percent=100) as runtime, live_traffic(runtime, tiny_run):
        state = _start(runtime, pipeline_report, "--metrics-url", f"{runtime.url}/metrics")
    assert state["status"] in {"promoted", "inconclusive"}, state["steps"]
    assert "rollback" not in [s["decision"] for s in state["steps"]]
    paired = [s["evidence"]["paired"] for s in state["steps"]]
    assert all(p["canary_only_flagged"] == p["baseline_only_flagged"] == 0 for p in paired if p), paired


LABELLED = ("PASS paired.recall_better", "PASS canary.recall_non_inferior")


def test_late_labels_from_the_prediction_store_add_to_a_live_rollout(tiny_run, pipeline_report,
                                                                     tmp_path):  # noqa: F811
    """At the default shadow share, the labels the store holds for the transactions served (joined
    on the ids the client sends) reach the labelled tests: each matured label is counted once, at
    the first look after it matured, and the step records say how many."""
    holdout = tiny_run.windows["holdout"]
    store = tmp_path / "prediction-log.sqlite"
    labels = pd.DataFrame({"transaction_id": holdout["transaction_id"].astype(str), "label": holdout["Class"],
                           "label_time": pd.Timestamp.now(tz="UTC")})
    labels.to_csv(tmp_path / "labels.csv", index=False)
    with start_local_runtime(tmp_path / "state", tiny_run.v1, tiny_run.v2, 20, tmp_path / "logs",
                             prediction_log=store) as runtime:
        ingested = runtime.cli("labels", "ingest", str(tmp_path / "labels.csv"), "--store", str(store),
                               state_dir=False)
        assert ingested.returncode == 0, ingested.stderr
        with live_traffic(runtime, tiny_run, with_ids=True):
            state = _start(runtime, pipeline_report, "--metrics-url", f"{runtime.url}/metrics",
                           "--labels-from", str(store))
    steps = state["steps"]
    assert state["status"] == "promoted", [(s["decision"], s["reasons"]) for s in steps]
    late = [s["evidence"]["late_labels"] for s in steps]
    assert sum(x["canary_frauds"] for x in late) > 0 and sum(x["paired_frauds"] for x in late) > 0, late
    # each transaction once: no more labelled canary rows than distinct transactions in the holdout
    assert sum(x["canary_labelled"] for x in late) <= holdout["transaction_id"].nunique()
    # the labelled tests took them (counters alone carry no labels: these would have no looks)
    assert steps[-1]["tests"]["paired.recall"]["looks"] > 0 and steps[-1]["tests"]["canary.recall_vs_offline"]["looks"] > 0
    # what promoted: the labelled evidence, or the label-free rule where it decided first (both may hold)
    assert any(line.startswith((*LABELLED, "PASS paired.recall_estimate")) for line in steps[-1]["reasons"]), \
        steps[-1]["reasons"]


def test_labels_from_a_store_that_is_not_one_exits_2_before_any_step(candidate_runtime, tmp_path):
    missing = tmp_path / "nowhere.sqlite"
    result = candidate_runtime.cli("rollout", "start", "--labels-from", str(missing), "--window", "1")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fraud-rollout rollout: error: rollout start --labels-from {missing}: "), lines
    assert f"no prediction store at '{missing}'" in lines[0] and "--prediction-log default" in lines[0]
    assert candidate_runtime.service.get()["spec"]["predictor"]["canaryTrafficPercent"] == 20  # nothing moved
