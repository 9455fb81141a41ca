"""A predictor's v2 answer as the transformer reads it: the outputs and the version that answered.

Shared by the answer path (`transformer`) and the shadow path (`shadow`), so both name a version
the same way.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from fraud.export import registered_version
from fraud.protocol import decode_answer
from fraud.routes import Backend

from fraud_serving.metrics import UNKNOWN_VERSION

#: Response header naming the version whose failed call the transformer retried on the other
#: revision: the client got an answer, and the failure still counts against the version it was
#: routed to (the replay attributes the request there, so a dying canary's error rate stays visible).
RETRIED_FROM_HEADER = "fraud-retried-from"


@dataclass(frozen=True)
class PredictorAnswer:
    request_id: str
    model_version: str
    fraud_probability: np.ndarray
    is_fraud: np.ndarray


def read_answer(body: object, request_id: str, backend: Backend) -> PredictorAnswer:
    """The outputs of a predictor's v2 response body (`fraud.protocol.decode_answer`); ValueError
    when it is not one. Scores stay FP32 as the predictor sent them."""
    answer = decode_answer(body)
    version = registered_version(answer.model_version) or backend.model_version or UNKNOWN_VERSION
    return PredictorAnswer(request_id, version, answer.fraud_probability.astype(np.float32),
                           answer.is_fraud.astype(np.int32))
