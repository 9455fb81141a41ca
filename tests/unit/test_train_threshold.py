import numpy as np
import pandas as pd
import pytest
from fraud.train import split_time_ordered, tune_threshold


def test_threshold_maximises_recall_within_precision_floor():
    labels = np.array([1, 1, 0, 1, 0, 0, 1, 0, 0, 0])
    scores = np.array([.95, .9, .85, .8, .7, .6, .5, .4, .3, .2])
    choice = tune_threshold(labels, scores, min_precision=0.75)
    # Flagging the top 4 gives precision 3/4 and recall 3/4; any lower cut drops below 0.75.
    assert choice.value == pytest.approx(0.8)
    assert choice.precision == pytest.approx(0.75) and choice.recall == pytest.approx(0.75)
    assert choice.policy_met


def test_threshold_falls_back_to_best_f1_and_says_so():
    labels = np.array([0, 1, 0, 1, 0, 1])
    scores = np.array([.9, .8, .7, .6, .5, .4])
    choice = tune_threshold(labels, scores, min_precision=0.9)
    assert not choice.policy_met
    assert choice.value == pytest.approx(0.4)  # flag all: precision .5, recall 1, F1 .667 (best)


def test_ties_are_one_cut():
    labels = np.array([1, 0, 1, 0])
    scores = np.array([.5, .5, .5, .5])
    choice = tune_threshold(labels, scores, min_precision=0.4)
    assert choice.value == .5 and choice.precision == .5 and choice.recall == 1


def test_validation_split_is_the_latest_rows():
    frame = pd.DataFrame({"Time": np.random.default_rng(0).permutation(100).astype(float), "Class": 0})
    train, validation = split_time_ordered(frame, 0.2)
    assert len(validation) == 20 and train["Time"].max() < validation["Time"].min()
