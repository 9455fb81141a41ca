"""The predictor: a KServe model that scores contract-scaled features with an exported artifact.

Open Inference Protocol v2 in (`scaled_features`, FP32 `[N, 30]`), `fraud_probability` (FP32 `[N]`)
and `is_fraud` (INT32 `[N]`) out, with the response's `model_version` from the artifact's
metadata. Clients never call it directly in production: the transformer does the scaling.
"""
from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import numpy as np
from fraud.export import INPUT_NAME
from fraud.protocol import FRAUD_PROBABILITY, IS_FRAUD, output_types
from fraud.schema import FEATURES
from kserve import Model
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from fraud_serving.fast_route import DEFAULT_MAX_ROWS, body_limit
from fraud_serving.scoring import LoadedArtifact, load_artifact

#: Above this many rows the matrix products leave the event loop for a worker thread; below it the
#: hand-off costs more than the work (one row ≈ 0.02 ms).
INLINE_ROWS = 256
ACCEPTED_DATATYPES = {"FP32": np.float32, "FP64": np.float64}


def resolve_model_dir(model_dir: str | None, storage_uri: str = "") -> Path:
    """`--model_dir`, else `storage_uri` (the STORAGE_URI setting) when it is a local path (KServe's
    storage initializer downloads remote URIs into /mnt/models, which the container passes as --model_dir)."""
    candidate = model_dir or storage_uri
    if candidate.startswith("file://"):
        candidate = candidate[len("file://"):]
    if not candidate or "://" in candidate:
        raise ValueError(f"no local model directory: --model_dir {model_dir!r}, STORAGE_URI {storage_uri!r}; "
                         "pass --model_dir")
    return Path(candidate)


class FraudPredictor(Model):
    """Scores `scaled_features` with the artifact's NumPy weights (checked against its signature)."""

    def __init__(self, name: str, model_dir: str | Path, max_rows: int = DEFAULT_MAX_ROWS) -> None:
        super().__init__(name)
        self.model_dir = Path(model_dir)
        self.max_rows = max_rows
        self.artifact: LoadedArtifact | None = None

    @property
    def max_body_bytes(self) -> int:
        """The transformer's limit: it sends at most `max_rows` rows, binary above 256 (4 bytes a value)."""
        return body_limit(self.max_rows, self.artifact.n_features if self.artifact else len(FEATURES))

    def load(self) -> bool:
        self.artifact = load_artifact(self.model_dir)
        self.ready = True
        return self.ready

    @property
    def model_version(self) -> str:
        return self.artifact.model_version if self.artifact else ""

    def get_input_types(self) -> list[dict]:
        return [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, self.artifact.n_features]}]

    def get_output_types(self) -> list[dict]:
        return output_types()

    def scaled_features(self, request: InferRequest) -> np.ndarray:
        if len(request.inputs) != 1:
            raise InvalidInput(f"expected one input {INPUT_NAME!r}, got {len(request.inputs)}")
        tensor = request.inputs[0]
        if tensor.name != INPUT_NAME:
            raise InvalidInput(f"unknown input {tensor.name!r}; expected {INPUT_NAME!r}")
        n_features = self.artifact.n_features
        if tensor.datatype not in ACCEPTED_DATATYPES:
            raise InvalidInput(f"input {INPUT_NAME!r}: datatype {tensor.datatype} not accepted; use FP32")
        shape = list(tensor.shape)
        if len(shape) != 2 or shape[1] != n_features or shape[0] < 1:
            raise InvalidInput(f"input {INPUT_NAME!r}: shape {shape} is not [N, {n_features}] with N ≥ 1")
        try:
            values = tensor.as_numpy()
        except (ValueError, TypeError) as error:
            raise InvalidInput(f"input {INPUT_NAME!r}: data does not match shape {shape} "
                               f"and datatype {tensor.datatype}: {error}") from None
        if not np.isfinite(values).all():
            raise InvalidInput(f"input {INPUT_NAME!r}: NaN or infinite values")
        return np.ascontiguousarray(values, dtype=np.float32)

    async def predict(self, payload: InferRequest, headers: dict | None = None,
                      response_headers: dict | None = None) -> InferResponse:
        if not isinstance(payload, InferRequest):
            raise InvalidInput("the predictor speaks Open Inference Protocol v2 only (/v2/models/<name>/infer)")
        scaled = self.scaled_features(payload)
        if len(scaled) > INLINE_ROWS:
            scores = await asyncio.get_running_loop().run_in_executor(None, self.artifact.score, scaled)
        else:
            scores = self.artifact.score(scaled)
        n = len(scaled)
        return InferResponse(
            response_id=payload.id or str(uuid.uuid4()),
            model_name=self.name,
            model_version=self.model_version,
            infer_outputs=[InferOutput(FRAUD_PROBABILITY, [n], "FP32", scores.fraud_probability),
                           InferOutput(IS_FRAUD, [n], "INT32", scores.is_fraud)],
            use_binary_outputs=payload.use_binary_outputs,
        )
