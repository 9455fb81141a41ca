"""Logged v2 bodies into prediction-log rows: only the contract's features, ids, scores and decisions."""
import numpy as np
import pandas as pd
import pytest
from fraud.inference_log import LoggedResponse, pair_body, parse_pair, parse_request, parse_response
from fraud.labels import check_labels
from fraud.protocol import RequestRefused
from fraud.schema import DataError

from tests.prediction_log import features, request_body, response_body


def test_ids_come_from_the_transaction_id_input_else_a_one_row_requests_id():
    assert parse_request(request_body(features(2), ["a", "b"], request_id="r")).transaction_ids == ("a", "b")
    assert parse_request(request_body(features(1), request_id="r")).transaction_ids == ("r",)
    assert parse_request(request_body(features(2), request_id="r")).transaction_ids == (None, None)
    columns = parse_request(request_body(features(3), columns=True))
    assert columns.features.tolist() == features(3).tolist()


@pytest.mark.parametrize("change, reason, message", [
    (lambda b: b["inputs"][0]["data"][0].__setitem__(3, True), "element_type",
     "input 'transactions': FP64 data must be numbers; found a boolean at element 3"),
    (lambda b: b["inputs"][0].__setitem__("shape", [2, 29]), "shape",
     "input 'transactions': shape [2, 29] is not [N, 30] (columns in contract order: Time, V1 … Amount)"),
    (lambda b: b["inputs"].append({"name": "email", "datatype": "BYTES", "shape": [2], "data": ["x", "y"]}),
     "unknown_column", "unknown inputs: transactions, email (send one [N, 30] input or one [N] input per feature)"),
    (lambda b: b["inputs"].append({"name": "transaction_id", "datatype": "BYTES", "shape": [1], "data": ["x"]}),
     "transaction_id", "input 'transaction_id': shape [1] is not [2] (one id per row)"),
    # the transformer answers 400 to these, so no response follows: the log keeps no rows of them
    (lambda b: b["inputs"][0]["data"][1].__setitem__(29, -1.0), "negative_value",
     "Amount must not be negative (row 1: -1.0)"),
    (lambda b: b["inputs"][0]["data"][0].__setitem__(5, 1e309), "nan", "NaN or infinite values in V5"),
])
def test_the_log_refuses_what_the_transformer_refuses_in_its_words(change, reason, message):
    body = request_body(features(2))
    change(body)
    with pytest.raises(RequestRefused) as error:
        parse_request(body)
    assert (error.value.reason, str(error.value)) == (reason, message)


def test_a_response_names_the_registered_version_and_checks_its_outputs():
    answer = parse_response(response_body([0.2, 0.9], version="2"))
    assert (answer.model_version, answer.fraud_probability.tolist(), answer.is_fraud.tolist()) == ("v2", [0.2, 0.9], [0, 1])
    body = response_body([0.2])
    body["outputs"][1]["data"] = [2]
    with pytest.raises(ValueError, match="output is_fraud must hold 0 or 1"):
        parse_response(body)


@pytest.mark.parametrize("column, values, message", [
    ("label", [0, "yes"], "labels: row 1: label 'yes' is not 0 or 1"),
    ("label_time", ["2025-01-01", "soon"], "labels: row 1: label_time 'soon' is not a time (ISO 8601, e.g. 2025-03-01T12:00:00Z)"),
    ("transaction_id", ["a", "a"], "labels: transaction_id 'a' appears more than once"),
])
def test_bad_labels_are_refused_naming_the_value(column, values, message):
    frame = pd.DataFrame({"transaction_id": ["a", "b"], "label": [0, 1], "label_time": ["2025-01-01", "2025-01-02"]})
    frame[column] = values
    with pytest.raises(DataError) as error:
        check_labels(frame)
    assert str(error.value) == message


def pair(**change) -> dict:
    body = {"served_version": "2", "shadow_version": "v1", "served_fraud_probability": [0.9, 0.2],
            "shadow_fraud_probability": [0.3, 0.1], "served_is_fraud": [1, 0], "shadow_is_fraud": [0, 0],
            "transaction_id": ["t-0", None]}
    return {**body, **change}


def test_a_shadow_pair_keeps_both_answers_and_the_rows_ids():
    logged = parse_pair(pair_body(LoggedResponse("v2", np.array([0.9, 0.2]), np.array([1, 0])),
                                  LoggedResponse("v1", np.array([0.3, 0.1]), np.array([0, 0])), ("t-0", None)))
    assert (logged.served.model_version, logged.shadow.model_version) == ("v2", "v1")
    assert parse_pair(pair()).served.model_version == "v2"  # "2" is registered version 2
    assert (logged.served.is_fraud.tolist(), logged.shadow.is_fraud.tolist(), logged.transaction_ids) == (
        [1, 0], [0, 0], ("t-0", None))
    assert (logged.served.fraud_probability.tolist(), logged.shadow.fraud_probability.tolist()) == ([0.9, 0.2], [0.3, 0.1])


@pytest.mark.parametrize("change, message", [
    ({"shadow_version": ""}, "the pair needs 'shadow_version' (the version that answered)"),
    ({"shadow_version": "2"}, "the pair's two answers come from one version, 'v2'"),
    ({"shadow_is_fraud": [1]}, "shadow_fraud_probability and shadow_is_fraud must hold one value per row (2), got 2 and 1"),
    ({"served_is_fraud": [2, 0]}, "served_is_fraud must hold 0 or 1"),
    ({"served_fraud_probability": [1.5, 0]}, "served_fraud_probability must lie in [0, 1]"),
    ({"transaction_id": []}, "the pair needs 'transaction_id': a list of one id (or null) per row"),
    ({"transaction_id": ["", None]}, "transaction_id element 0: '' is not a transaction id (a string of 1 to 128 characters)"),
])
def test_a_bad_shadow_pair_is_refused_naming_it(change, message):
    with pytest.raises(ValueError) as error:
        parse_pair(pair(**change))
    assert str(error.value) == message
