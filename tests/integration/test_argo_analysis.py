"""Argo Rollouts' real analysis controller (v1.10.2, built from its Go module) judges our real
analysis endpoint through AnalysisRuns whose metric is README.md's AnalysisTemplate, read out of the
README, not copied: each verdict ends in the run phase the README promises.

What decides the phase, in argo-rollouts v1.10.2:
- `metricproviders/webmetric/webmetric.go`, `Provider.Run`: a non-2xx answer is
  `metricutil.MarkMeasurementError` (the body unread); a 2xx body goes through `parseResponse` (the
  jsonPath's value) to `EvaluateResult` in `utils/evaluate/evaluate.go`: successCondition true →
  Successful, failureCondition true → Failed, neither → Inconclusive.
- `analysis/analysis.go`: `runMeasurements` counts them (an Error adds to `ConsecutiveError`, not to
  `Count`; any other phase resets it); `assessMetricStatus` ends the metric through
  `assessMetricFailureInconclusiveOrError` (Failed > failureLimit, Inconclusive > inconclusiveLimit,
  ConsecutiveError > consecutiveErrorLimit), then `consecutiveSuccessLimit`; `assessRunStatus` gives
  the run its worst metric's phase. `generateMetricTasks` retries an errored measurement after
  `DefaultErrorRetryInterval` (10 s), not after `interval`.
"""
from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from fraud_control.rollout.analysis_endpoint import AnalysisEndpoint
from fraud_devcluster import argo, servers
from kubernetes import client

from tests.cluster_fixtures import admin_client
from tests.docs import docs_text

pytestmark = pytest.mark.integration

GROUP, VERSION = "argoproj.io", "v1alpha1"
#: The README's interval is the rollout's window (1m); the phases do not depend on it, the test's time does.
TEST_INTERVAL = "1s"


def readme_template() -> dict:
    """The one fenced yaml block of README.md that is an AnalysisTemplate."""
    blocks = [yaml.safe_load(b) for b in re.findall(r"^```yaml\n(.*?)^```", docs_text(), re.M | re.S)]
    templates = [b for b in blocks if isinstance(b, dict) and b.get("kind") == "AnalysisTemplate"]
    assert len(templates) == 1, f"README.md has {len(templates)} AnalysisTemplate blocks, not 1"
    return templates[0]


@dataclass(frozen=True)
class Argo:
    namespace: str
    controller: servers.Started
    api: client.CustomObjectsApi

    def get(self, plural: str, name: str) -> dict:
        return self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, name)


@pytest.fixture(scope="module")
def argo_controller(kube_cluster, tmp_path_factory) -> Iterator[Argo]:
    """The analysis CRDs on the session's cluster; the controller on a namespace of its own."""
    kubeconfig = Path(kube_cluster.kubeconfig)
    argo.install(kubeconfig)
    namespace = f"t-{secrets.token_hex(4)}"
    client.CoreV1Api(admin_client(kube_cluster)).create_namespace({"metadata": {"name": namespace}})
    controller = argo.start_controller(tmp_path_factory.mktemp("argo"), kubeconfig, namespace)
    try:
        yield Argo(namespace, controller, client.CustomObjectsApi(admin_client(kube_cluster)))
    finally:
        servers.stop(controller.pid)


def test_the_readme_template_is_an_analysis_template_as_written(argo_controller):
    """Created on Argo's CRD and read back unchanged: no field of it is unknown (pruned) or invalid."""
    template = readme_template()
    argo_controller.api.create_namespaced_custom_object(GROUP, VERSION, argo_controller.namespace,
                                                       "analysistemplates", template)
    stored = argo_controller.get("analysistemplates", template["metadata"]["name"])
    assert stored["spec"] == template["spec"]


# verdict, run phase, measurement phases, the run's message (Argo's own words)
CASES = {
    "advance": ("Successful", ["Successful"], None),
    "promote": ("Successful", ["Successful"], None),
    "rollback": ("Failed", ["Failed"], 'Metric "fraud-analysis" assessed Failed due to failed (1) > failureLimit (0)'),
    "abort": ("Failed", ["Failed"], 'Metric "fraud-analysis" assessed Failed due to failed (1) > failureLimit (0)'),
    "hold": ("Inconclusive", ["Inconclusive"] * 4,
             'Metric "fraud-analysis" assessed Inconclusive due to inconclusive (4) > inconclusiveLimit (3)'),
    "inconclusive": ("Inconclusive", ["Inconclusive"] * 4,
                     'Metric "fraud-analysis" assessed Inconclusive due to inconclusive (4) > inconclusiveLimit (3)'),
    "error": ("Error", ["Error"] * 8,
              'Metric "fraud-analysis" assessed Error due to consecutiveErrors (8) > consecutiveErrorLimit (7): '
              '"Error Message: received non 2xx response code: 503"'),
}


@pytest.mark.parametrize("verdict", list(CASES))
def test_argo_judges_each_verdict_from_the_body(argo_controller, verdict):
    run_phase, measurement_phases, message = CASES[verdict]
    endpoint = AnalysisEndpoint(0)
    try:
        endpoint.update({"decision": verdict, "percent": 20, "next_percent": 50, "reasons": [verdict]}, None)
        metric = readme_template()["spec"]["metrics"][0]
        metric["provider"]["web"]["url"] = endpoint.url
        metric["interval"] = TEST_INTERVAL
        name = f"fraud-analysis-{verdict}"
        argo_controller.api.create_namespaced_custom_object(GROUP, VERSION, argo_controller.namespace, "analysisruns", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "AnalysisRun", "metadata": {"name": name},
            "spec": {"metrics": [metric]}})

        def finished() -> bool:
            phase = argo_controller.get("analysisruns", name).get("status", {}).get("phase")
            return phase in ("Successful", "Failed", "Inconclusive", "Error")

        # 8 errors, 10 s apart, are the longest case
        servers.wait_until(argo_controller.controller, finished, timeout_s=150)
        status = argo_controller.get("analysisruns", name)["status"]
        [result] = status["metricResults"]
        assert status["phase"] == run_phase
        assert status.get("message") == message
        assert [m["phase"] for m in result["measurements"]] == measurement_phases
        if verdict != "error":
            assert {m["value"] for m in result["measurements"]} == {f'"{verdict}"'}  # the jsonPath's value, as JSON
        else:
            assert {m["message"] for m in result["measurements"]} == {"received non 2xx response code: 503"}
    finally:
        endpoint.close()
