"""The InferenceService store on the local state dir (`local_state.LocalInferenceService`), with
the API server's answers: None for a missing object (404), RolloutError for a refused write."""
from __future__ import annotations

from pathlib import Path

from fraud_control.inferenceservice.isvc import NAME
from fraud_control.inferenceservice.local_state import DEFAULT_STATE_DIR, LocalInferenceService, StateError
from fraud_control.inferenceservice.store import RolloutError


class LocalStore:
    """The InferenceService `name` in `state_dir` (a state dir holds one; another name is absent)."""

    reconciles_on_write = True  # the write reconciles the status: nothing changes by waiting

    def __init__(self, state_dir: str | Path = DEFAULT_STATE_DIR, name: str = NAME) -> None:
        self.service = LocalInferenceService(state_dir)
        self.name = name
        self.where = f"{name} in {self.service.state_dir}"

    def get(self) -> dict | None:
        if not self.service.exists():
            return None
        obj = self.service.get()
        return obj if obj["metadata"]["name"] == self.name else None

    def create(self, manifest: dict) -> dict:
        return self._write("create", lambda: self.service.create(manifest))

    def merge_patch(self, patch: dict) -> dict:
        return self._write("patch", lambda: self.service.patch_merge(patch))

    def json_patch(self, operations: list[dict]) -> dict:
        return self._write("patch", lambda: self.service.patch_json(operations))

    def _write(self, verb: str, write) -> dict:
        try:
            return write()
        except StateError as error:
            raise RolloutError(f"{verb} InferenceService {self.where} failed: {error}") from None
