"""Shadow scoring's pure parts: the pair join of the replay, tag hosts, the transformer's flags."""
from __future__ import annotations

import numpy as np
import pytest
from fraud_canary.paired import paired_outcomes
from fraud_ops.replay_pairs import paired_from_log
from fraud_serving.__main__ import main
from fraud_serving.routing import TagHosts


def record(request_id, served_version, shadow_version, served, shadow):
    return {"id": request_id, "served_version": served_version, "shadow_version": shadow_version,
            "served_is_fraud": served, "shadow_is_fraud": shadow}


def test_pairs_are_joined_on_id_and_oriented_by_baseline_and_canary():
    labels = {"r-0": np.array([True, False]), "r-1": np.array([True, True]), "r-2": np.array([False])}
    records = [record("r-0", "v1", "v2", [0, 1], [1, 1]),  # served by the baseline
               record("r-1", "v2", "v1", [1, 0], [0, 0]),  # served by the canary: swapped back
               record("r-2", "v1", "v3", [0], [1]),  # another version pair: left out
               record("other-9", "v1", "v2", [1], [0]),  # not this replay's request: left out
               record("r-2", "v1", "v2", [0, 0], [0, 0])]  # two decisions for one row: left out
    paired = paired_from_log(records, labels, baseline_version="v1", canary_version="v2")
    expected = paired_outcomes(np.array([0, 1, 0, 0], bool), np.array([1, 1, 1, 0], bool), baseline_version="v1",
                               canary_version="v2", labels=np.array([1, 0, 1, 1], bool))
    assert paired == expected
    assert (paired.frauds.canary_only, paired.frauds.baseline_only, paired.frauds.pairs) == (2, 0, 3)
    assert paired.to_dict()["v2_only_right"] == 2


def test_no_matching_pair_is_none_not_an_empty_table():
    assert paired_from_log([record("x", "v1", "v2", [1], [1])], {"r-0": np.array([True])},
                           baseline_version="v1", canary_version="v2") is None


def test_tag_hosts_ask_the_host_serving_the_other_version_once_learned():
    hosts = TagHosts.parse("latest=http://latest-fraud-detector-predictor.ns, prev=prev-fraud-detector-predictor.ns")
    assert hosts.other_than("v1").url == "http://latest-fraud-detector-predictor.ns"  # nothing learned: the first
    hosts.learn("http://latest-fraud-detector-predictor.ns", "v1")
    assert hosts.other_than("v1").url == "http://prev-fraud-detector-predictor.ns"  # not heard from yet
    hosts.learn("http://prev-fraud-detector-predictor.ns", "v2")
    other = hosts.other_than("v1")
    assert (other.url, other.revision, other.model_version) == ("http://prev-fraud-detector-predictor.ns", "prev", "v2")
    assert hosts.other_than("v2").url == "http://latest-fraud-detector-predictor.ns"


def test_a_failed_call_of_unknown_version_is_retried_on_prev_the_rolled_out_revision():
    """Through the one --predictor_host the failed revision is unknown: prev, learned or not."""
    hosts = TagHosts.parse("latest=http://latest-fraud-detector-predictor.ns,prev=http://prev-fraud-detector-predictor.ns")
    retry = hosts.retry_target("")
    assert (retry.url, retry.revision, retry.model_version) == ("http://prev-fraud-detector-predictor.ns", "prev", "")
    hosts.learn("http://prev-fraud-detector-predictor.ns", "v1")
    hosts.learn("http://latest-fraud-detector-predictor.ns", "v2")
    assert hosts.retry_target("").model_version == "v1"


def test_a_failed_call_of_known_version_is_retried_where_another_version_answered():
    hosts = TagHosts.parse("latest=http://latest-fraud-detector-predictor.ns,prev=http://prev-fraud-detector-predictor.ns")
    assert hosts.retry_target("v1").revision == "prev"  # nothing learned yet: the rolled-out one
    hosts.learn("http://prev-fraud-detector-predictor.ns", "v1")
    hosts.learn("http://latest-fraud-detector-predictor.ns", "v2")
    retry = hosts.retry_target("v1")  # e.g. after a rollback the failing v1 is what prev serves
    assert (retry.revision, retry.model_version) == ("latest", "v2")
    assert TagHosts.parse("latest=http://l").retry_target("") is None  # no prev route: no retry


@pytest.mark.parametrize("text", ["latest", "latest=,prev=x", "=http://x"])
def test_tag_hosts_name_a_malformed_part(text):
    with pytest.raises(ValueError, match="is not TAG=URL"):
        TagHosts.parse(text)


@pytest.mark.parametrize(("flags", "message"), [
    (["--shadow_percent", "150"], "--shadow_percent 150: must be within 0..100 (0 turns shadow scoring off)"),
    (["--shadow_percent", "-1"], "--shadow_percent -1: must be within 0..100 (0 turns shadow scoring off)"),
    (["--shadow_max_in_flight", "0"], "--shadow_max_in_flight 0: must be at least 1"),
    (["--shadow_hosts", "latest"], "--shadow_hosts latest: 'latest' is not TAG=URL "
                                   "(e.g. latest=http://latest-fraud-detector-predictor.ns)"),
    (["--pairs_log", "/no/such/dir/pairs.jsonl"], "--pairs_log /no/such/dir/pairs.jsonl: not a file in an existing "
                                                  "directory; give a path like <state_dir>/shadow-pairs.jsonl"),
])
def test_transformer_shadow_flags_exit_2_with_one_line(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["transformer", "--model_name", "fraud-detector", "--predictor_protocol", "v2",
              "--predictor_host", "127.0.0.1:1", *flags])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines() == [f"python -m fraud_serving transformer: error: {message}"]


def test_a_split_seed_that_is_not_an_integer_exits_2_with_one_line(monkeypatch, capsys):
    monkeypatch.setenv("FRAUD_ROLLOUT_SPLIT_SEED", "seven")
    with pytest.raises(SystemExit) as exit_:
        main(["transformer", "--model_name", "fraud-detector", "--predictor_protocol", "v2",
              "--predictor_host", "127.0.0.1:1"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "python -m fraud_serving transformer: error: FRAUD_ROLLOUT_SPLIT_SEED=seven: not an integer; unset it, "
        "or give e.g. 7"]
