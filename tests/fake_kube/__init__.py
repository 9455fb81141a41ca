"""A FAKE Kubernetes API server for KServe InferenceServices, for tests only.

It replaces the one thing that cannot run here (a cluster with KServe and Knative): the real
`kubernetes` client talks HTTP to it on a loopback port, and its fake controller writes `status`
with KServe's Knative-mode canary semantics. Nothing in it is imported by production code, and
it imports no production code.
"""
from tests.fake_kube.controller import FakeKServeController
from tests.fake_kube.server import FakeKubeApiServer

__all__ = ["FakeKServeController", "FakeKubeApiServer"]
