"""Shadow pairs by decision cell and each version's score bucket, end to end through the counters:
the real `TransformerMetrics` on its own registry, its Prometheus text, `parse_metrics` and
`paired_scores` → the `PairedScores` paired CBPE reads."""
from __future__ import annotations

import math

import numpy as np
import pytest
from fraud.schema import PAIRED_SCORE_BOUNDS, DataError
from fraud_canary.paired_scores import CELLS, PairedScores
from fraud_control.rollout.evidence import delta, paired_decisions, paired_scores, parse_metrics
from fraud_serving.metrics import TransformerMetrics
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

BUCKETS = len(PAIRED_SCORE_BOUNDS) + 1
DECISION = {True: "fraud", False: "legit"}


def score_in(bucket: int) -> float:
    """A score inside bucket `bucket` (0: below the first bound, 81: above the last), halfway
    between its bounds in log-odds (the bounds are 0.3 apart from -12 to 12)."""
    return 1 / (1 + math.exp(-(-12 + 0.3 * bucket - 0.15)))


def scrape(registry: CollectorRegistry):
    return parse_metrics(generate_latest(registry).decode())


def samples(registry: CollectorRegistry, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(generate_latest(registry).decode())
            for s in family.samples if s.name == name}


@pytest.fixture
def window():
    """Three requests in a window (one before it), either version served; every row's decisions and
    score buckets known. Returns the registry, the window's counter deltas and the rows."""
    registry = CollectorRegistry()
    metrics = TransformerMetrics(registry)
    metrics.record_shadow("v1", "v2", np.array([1]), np.array([1]), np.array([0.9], np.float32),
                          np.array([0.9], np.float32))  # before the window: not counted
    start = scrape(registry)
    rng = np.random.default_rng(7)
    rows = []  # (served, shadow, served flag, served bucket, shadow flag, shadow bucket)
    for served, shadow, n in (("v1", "v2", 300), ("v2", "v1", 120), ("v1", "v2", 1)):
        served_flag, shadow_flag = rng.random(n) < 0.3, rng.random(n) < 0.4
        served_bucket, shadow_bucket = rng.integers(0, BUCKETS, n), rng.integers(0, BUCKETS, n)
        metrics.record_shadow(served, shadow, served_flag.astype(np.int32), shadow_flag.astype(np.int32),
                              np.array([score_in(k) for k in served_bucket], np.float32),
                              np.array([score_in(k) for k in shadow_bucket], np.float32))
        rows += [(served, shadow, *row) for row in zip(served_flag.tolist(), served_bucket.tolist(),
                                                       shadow_flag.tolist(), shadow_bucket.tolist())]
    metrics.record_shadow("v1", "v3", np.array([0]), np.array([1]), np.array([0.2], np.float32),
                          np.array([0.7], np.float32))  # another version pair: not v1/v2's evidence
    return registry, delta(scrape(registry), start), rows


def expected_scores(rows, baseline: str, canary: str) -> PairedScores:
    table = {v: [[0] * BUCKETS for _ in CELLS] for v in (baseline, canary)}
    for served, shadow, served_flag, served_bucket, shadow_flag, shadow_bucket in rows:
        flags = {served: served_flag, shadow: shadow_flag}
        cell = CELLS.index((flags[canary], flags[baseline]))
        table[served][cell][served_bucket] += 1
        table[shadow][cell][shadow_bucket] += 1
    return PairedScores(baseline, canary, {v: tuple(map(tuple, cells)) for v, cells in table.items()})


def test_each_version_scores_every_pair_in_its_cell_and_bucket_whoever_served(window):
    _, counts, rows = window
    scores = paired_scores(counts, "v1", "v2")
    assert scores == expected_scores(rows, "v1", "v2")
    assert scores.pairs == 421
    # swapping the roles re-orients the cells: (canary flags, baseline flags)
    swapped = paired_scores(counts, "v2", "v1")
    assert swapped == expected_scores(rows, "v2", "v1")
    assert swapped.rows["v1"][0] == scores.rows["v1"][1] and swapped.rows["v2"][3] == scores.rows["v2"][3]


def test_a_score_on_a_bound_counts_in_that_bound_bucket():
    registry = CollectorRegistry()
    TransformerMetrics(registry).record_shadow("v1", "v2", np.array([0]), np.array([1]), np.array([0.5], np.float32),
                                               np.array([1.0], np.float32))
    scores = paired_scores(scrape(registry), "v1", "v2")
    assert PAIRED_SCORE_BOUNDS[40] == 0.5
    assert [k for k, n in enumerate(scores.rows["v1"][CELLS.index((True, False))]) if n] == [40]
    assert [k for k, n in enumerate(scores.rows["v2"][CELLS.index((True, False))]) if n] == [BUCKETS - 1]


def test_the_buckets_of_a_cell_add_up_to_its_shadow_rows(window):
    registry, counts, _ = window
    scores = paired_scores(counts, "v1", "v2")
    decisions = paired_decisions(counts, "v1", "v2")
    cells = {cell: 0.0 for cell in CELLS}
    for (name, labels), value in counts.items():
        label = dict(labels)
        if name == "fraud_shadow_rows_total" and {label["served_version"], label["shadow_version"]} == {"v1", "v2"}:
            flags = {label["served_version"]: label["served_decision"] == "fraud",
                     label["shadow_version"]: label["shadow_decision"] == "fraud"}
            cells[(flags["v2"], flags["v1"])] += value
    for version in ("v1", "v2"):
        assert [sum(cell) for cell in scores.rows[version]] == [cells[cell] for cell in CELLS]
    assert scores.pairs == decisions.pairs
    assert sum(scores.rows["v2"][CELLS.index((True, False))]) == decisions.decisions.canary_only
    assert sum(scores.rows["v2"][CELLS.index((False, True))]) == decisions.decisions.baseline_only
    # and on the transformer itself (window or not): every series' _count is its cell of the table
    rows_total, score_count = samples(registry, "fraud_shadow_rows_total"), samples(registry, "fraud_shadow_score_count")
    assert len(score_count) == 2 * len(rows_total)
    for labels, value in score_count.items():
        label = dict(labels)
        assert label["scored_version"] in (label["served_version"], label["shadow_version"])
        del label["scored_version"]
        assert value == rows_total[tuple(sorted(label.items()))]


def test_no_pairs_of_the_version_pair_is_no_evidence(window):
    _, counts, _ = window
    assert paired_scores(counts, "v2", "v3") is None
    assert paired_scores({}, "v1", "v2") is None
    nothing_new = delta(scrape(window[0]), scrape(window[0]))
    assert paired_scores(nothing_new, "v1", "v2") is None


def test_prometheus_increases_are_rounded(window):
    _, counts, rows = window
    extrapolated = {key: value * 1.0004 for key, value in counts.items()}  # increase() extrapolates to the window
    assert paired_scores(extrapolated, "v1", "v2") == expected_scores(rows, "v1", "v2")


def test_a_version_paired_with_itself_has_rows_but_no_scores():
    registry = CollectorRegistry()
    TransformerMetrics(registry).record_shadow("v1", "v1", np.array([1, 0]), np.array([1, 0]),
                                               np.array([0.9, 0.1], np.float32), np.array([0.9, 0.1], np.float32))
    assert sum(samples(registry, "fraud_shadow_rows_total").values()) == 2
    assert samples(registry, "fraud_shadow_score_count") == {}


def test_buckets_other_than_the_rollouts_are_an_error():
    labels = {"served_version": "v1", "shadow_version": "v2", "served_decision": "legit", "shadow_decision": "legit",
              "scored_version": "v1"}
    counts = {("fraud_shadow_score_bucket", tuple(sorted({**labels, "le": le}.items()))): 3.0
              for le in ("0.25", "+Inf")}
    with pytest.raises(DataError, match="PAIRED_SCORE_BOUNDS"):
        paired_scores(counts, "v1", "v2")
