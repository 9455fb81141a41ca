"""One InferenceService store interface, so every canary operation is written once.

Two implementations: the Kubernetes API (`kube_store.KubeStore`) and the local state dir
(`local_store.LocalStore`). Each is bound to one InferenceService; `where` names it in messages.
"""
from __future__ import annotations

from typing import Protocol


class RolloutError(RuntimeError):
    """The canary operation did not happen; the message says why and what to do."""


class RolloutRefused(RolloutError):
    """Refused before changing anything: the InferenceService's state does not allow this operation."""


class RolloutTimeout(RolloutError):
    """The InferenceService did not become Ready at the expected generation in time."""

    def __init__(self, message: str, conditions: list[dict]) -> None:
        super().__init__(message)
        self.conditions = conditions


class NotDeployed(RolloutError):
    """There is no InferenceService to operate on (a user error: nothing was deployed there)."""


class TargetUnavailable(ValueError):
    """The target cannot be reached as given (no kubeconfig, a bad context): a user error."""


class InferenceServiceStore(Protocol):
    """Where one InferenceService lives, with the API server's four calls."""

    #: e.g. "kubeflow-user-example-com/fraud-detector" or "fraud-detector in .fraud-rollout/serving"
    where: str
    #: True when a write's status is final at once (the local state dir reconciles in the write),
    #: so a wait checks once instead of polling until the timeout.
    reconciles_on_write: bool

    def get(self) -> dict | None:
        """The object with its status, or None if it does not exist."""
        ...

    def create(self, manifest: dict) -> dict: ...

    def merge_patch(self, patch: dict) -> dict:
        """RFC 7386 (`kubectl patch --type merge`)."""
        ...

    def json_patch(self, operations: list[dict]) -> dict:
        """RFC 6902 (`kubectl patch --type json`)."""
        ...


def require(store: InferenceServiceStore) -> dict:
    """The InferenceService, or NotDeployed naming where it was looked for."""
    obj = store.get()
    if obj is None:
        raise NotDeployed(f"InferenceService {store.where} does not exist (deploy it first: the pipeline's "
                          "deploy step or `fraud-rollout serve --baseline … --candidate …`)")
    return obj
