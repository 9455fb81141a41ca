"""The rollout controller against the REAL control plane (kube-apiserver, KServe's controller), as
the pipeline's ServiceAccount: the canaryTrafficPercent sequence KServe saw (audit log), the
Events on the InferenceService, the state in the ConfigMap, abort from another process, the 403
path, and the analysis endpoint's codes. A good candidate is promoted on real evidence: a real
transformer's counters through a real Prometheus, its split following the cluster's patches
(`MirroredSplit`); the other paths take evidence prepared per step (test data through the
`EvidenceSource` seam). Every API call is real."""
from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from fraud.settings import Settings
from fraud_canary.analysis import offline_metrics
from fraud_canary.metrics import Confusion, VersionMetrics
from fraud_canary.policy import OfflineMetrics
from fraud_canary.progressive import RolloutPolicy
from fraud_control.canary import operations as canary
from fraud_control.inferenceservice.kube_store import KubeStore
from fraud_control.inferenceservice.local_store import LocalStore
from fraud_control.rollout.analysis_endpoint import AnalysisEndpoint
from fraud_control.rollout.controller import Controller, Evidence, RolloutAborted, RolloutConfig, Window, now_iso
from fraud_control.rollout.evidence import AfterLocalApply, MetricsWindow, PrometheusWindow, WindowSpec
from fraud_control.rollout.record import KubeEvents
from fraud_control.rollout.run import score_profiles
from fraud_control.rollout.state import ConfigMapRolloutState
from kubernetes import client

from fraud_rollout.cli import main
from tests.cluster_fixtures import admin_client
from tests.http_json import get_json
from tests.integration.kube_fixtures import kubeconfig_for
from tests.integration.serving_fixtures import start_local_runtime
from tests.integration.test_canary_analysis import pipeline_report  # noqa: F401
from tests.integration.test_rollout_local import live_traffic
from tests.prometheus_server import prometheus_scraping

pytestmark = pytest.mark.integration
OFFLINE = {"v1": OfflineMetrics(precision=0.889, recall=0.8, flag_rate=0.009),
           "v2": OfflineMetrics(precision=0.889, recall=0.8, flag_rate=0.009)}


@pytest.fixture(autouse=True)
def outside_the_checkout(tmp_path, monkeypatch):
    """The CLI runs in-process here: from a directory of its own, so that a developer's `.fraud-rollout`
    (after `make demo`) is not the default it finds and says it uses."""
    monkeypatch.chdir(tmp_path)


def _metrics(version: str, requests: int, share: float, errors: int = 0) -> VersionMetrics:
    """1 % fraud, recall 0.8, 0.1 % false flags of the answered rows, labelled."""
    answered = requests - errors
    frauds, false_flags = answered // 100, answered // 1000
    caught = frauds * 4 // 5
    return VersionMetrics(version, requests, errors, caught + false_flags, share, 10.0, 30.0, 40.0,
                          Confusion(tp=caught, fp=false_flags, fn=frauds - caught, tn=answered - frauds - false_flags))


class PreparedEvidence:
    """Labelled windows of 200,000 requests split at the step's percent; the canary fails
    `canary_error_share` of its requests. Records the percents it was asked for."""

    def __init__(self, canary_error_share: float = 0.0, wait_for_abort: threading.Event | None = None) -> None:
        self.canary_error_share, self.asked = canary_error_share, []
        self.wait_for_abort = wait_for_abort

    def window(self, percent: int, stop: Callable[[], bool]) -> Evidence:
        self.asked.append(percent)
        if self.wait_for_abort is not None:  # a window that fills only after an abort: poll like a live one
            self.wait_for_abort.set()
            while not stop():
                threading.Event().wait(0.05)
            raise RolloutAborted("abort requested while the window filled")
        total = 200_000
        canary = total * percent // 100
        online = {"v1": _metrics("v1", total - canary, 1 - percent / 100),
                  "v2": _metrics("v2", canary, percent / 100, errors=int(canary * self.canary_error_share))}
        return Evidence(online, Window(now_iso(), now_iso(), 0.0, total), source="prepared")


def _controller(cluster, source, **config) -> Controller:
    ns = cluster.ns
    api = cluster.namespace.token_api()
    store = KubeStore(api, ns)
    uid = store.get()["metadata"]["uid"]
    return Controller(store, source, ConfigMapRolloutState(api.api_client, ns, "fraud-detector"),
                      RolloutConfig("v1", "v2", OFFLINE, policy=RolloutPolicy(), detectable=0.12, poll_s=0.05,
                                    timeout_s=60, **config),
                      [KubeEvents(api.api_client, ns, "fraud-detector", uid)])


def percent_writes(cluster) -> list:
    """canaryTrafficPercent of each patch after the deploy (None: removed, the promotion's JSON patch)."""
    out = []
    for write in cluster.namespace.writes()[2:]:  # create with v1, canary patch with v2 at 20 %
        body = write["body"]
        out.append(body["spec"]["predictor"]["canaryTrafficPercent"] if isinstance(body, dict) else
                   [op["op"] for op in body])
    return out


def events(cluster) -> list[tuple[str, str]]:
    listed = client.CoreV1Api(admin_client(cluster.namespace.kube)).list_namespaced_event(cluster.ns)
    ordered = sorted(listed.items, key=lambda e: int(e.metadata.resource_version))  # timestamps are in seconds
    return [(e.reason, e.message) for e in ordered if e.involved_object.kind == "InferenceService"
            and e.involved_object.name == "fraud-detector" and e.source.component == "fraud-rollout"]


def test_a_good_candidate_steps_5_20_50_and_is_promoted(canary_cluster):
    source = PreparedEvidence()
    state = _controller(canary_cluster, source).run()
    assert source.asked == [5, 20, 50]
    assert [(s["percent"], s["decision"]) for s in state["steps"]] == [(5, "advance"), (20, "advance"),
                                                                        (50, "promote")]
    assert state["status"] == "promoted" and state["result"]["action"] == "promoted v2 to 100 %"
    assert percent_writes(canary_cluster) == [5, 20, 50, ["remove"]]
    assert [r for r, _ in events(canary_cluster)] == ["RolloutStep", "RolloutStep", "RolloutPromote"]
    assert events(canary_cluster)[0][1] == ("advance at 5 %, 200000 requests in 0 s: no rollback test rejected and "
                                            "every hold check passed at 5 %: advance to 20 %")
    assert state["steps"][-1]["reasons"][2].startswith("PASS canary.recall_non_inferior: recall ≥ 0.7")
    stored = ConfigMapRolloutState(admin_client(canary_cluster.namespace.kube), canary_cluster.ns,
                                   "fraud-detector").read()
    assert stored["status"] == "promoted" and [s["percent"] for s in stored["steps"]] == [5, 20, 50]


def test_a_failing_candidate_is_rolled_back_at_the_first_step(canary_cluster):
    state = _controller(canary_cluster, PreparedEvidence(canary_error_share=0.1)).run()
    assert [(s["percent"], s["decision"]) for s in state["steps"]] == [(5, "rollback")]
    reasons = state["steps"][0]["reasons"]
    assert len(reasons) == 1 and reasons[0].startswith("FAIL canary.error_rate: e-value "), reasons
    assert reasons[0].endswith(" (threshold 140, null 0.01, 1 looks) → rollback"), reasons
    assert state["status"] == "rolled_back"
    assert percent_writes(canary_cluster) == [5, 0]
    assert [r for r, _ in events(canary_cluster)] == ["RolloutRollback"]


def test_abort_from_another_process_rolls_back_within_one_poll(canary_cluster, capsys):
    filling = threading.Event()
    controller = _controller(canary_cluster, PreparedEvidence(wait_for_abort=filling))
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(state=controller.run()))
    thread.start()
    assert filling.wait(60)
    kubeconfig = str(canary_cluster.kubeconfig)
    target = ["--target", "kserve", "--namespace", canary_cluster.ns, "--kubeconfig", kubeconfig]
    assert main(["rollout", "start", *target, "--metrics-url", "http://127.0.0.1:9/metrics"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is already running; abort it with `fraud-rollout rollout abort`" in err[0]
    assert f"rollout of v2 on {canary_cluster.ns}/fraud-detector (running" in err[0]
    assert main(["rollout", "status", *target, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["status"], status["percent"], status["controller_running"]) == ("running", 5, True)
    assert main(["rollout", "abort", *target, "--reason", "test abort"]) == 0
    thread.join(60)
    assert outcome["state"]["status"] == "aborted"
    assert outcome["state"]["steps"][-1]["decision"] == "abort"
    assert outcome["state"]["steps"][-1]["reasons"][0].startswith("abort requested: test abort (asked at ")
    assert percent_writes(canary_cluster) == [5, 0]
    assert [r for r, _ in events(canary_cluster)] == ["RolloutRollback"]
    # nothing runs now and the canary is at 0 %: nothing to abort
    assert main(["rollout", "abort", *target]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"fraud-rollout rollout: error: rollout abort: nothing to abort on {canary_cluster.ns}/"
                   "fraud-detector: no rollout controller runs and no canary is in progress (canaryTrafficPercent 0)"]


def test_abort_with_no_controller_rolls_back_directly(canary_cluster, capsys):
    target = ["--target", "kserve", "--namespace", canary_cluster.ns, "--kubeconfig", str(canary_cluster.kubeconfig)]
    assert main(["rollout", "abort", *target]) == 0
    assert capsys.readouterr().out.startswith(f"no rollout controller runs on {canary_cluster.ns}/fraud-detector: "
                                              "rolled back directly: rolled back: canary v2 at 0 %")
    assert percent_writes(canary_cluster) == [0]


def test_a_missing_configmap_permission_is_one_line(canary_cluster, tmp_path, capsys):
    from fraud.processes import free_port
    from prometheus_client import start_http_server

    canary_cluster.namespace.apply_pipeline_rbac(drop_verb="patch")  # the state's first write is a patch
    kubeconfig = kubeconfig_for(canary_cluster.namespace, tmp_path / "pipeline", canary_cluster.namespace.token())
    # a /metrics that answers (the start reads the live source before it claims the rollout)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1")
    try:
        code = main(["rollout", "start", "--target", "kserve", "--namespace", canary_cluster.ns, "--kubeconfig",
                     str(kubeconfig), "--metrics-url", f"http://127.0.0.1:{port}/metrics"])
    finally:
        server.shutdown()
        thread.join()
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        f"fraud-rollout rollout start: missing RBAC permission: verb 'patch' on resource 'configmaps' (apiGroup '') "
        f"in namespace '{canary_cluster.ns}'")
    assert percent_writes(canary_cluster) == []  # refused before any traffic moved


def test_no_inferenceservice_exits_2(namespace, tmp_path, capsys):
    kubeconfig = kubeconfig_for(namespace, tmp_path / "kubeconfig")
    assert main(["rollout", "start", "--target", "kserve", "--namespace", namespace.name, "--kubeconfig",
                 str(kubeconfig), "--metrics-url", "http://127.0.0.1:9/metrics"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"fraud-rollout rollout: error: InferenceService {namespace.name}/fraud-detector does not exist "
                   "(deploy it first: the pipeline's deploy step or `fraud-rollout serve --baseline … --candidate …`)"]


def test_the_analysis_endpoint_answers_each_decision_with_its_code(canary_cluster):
    endpoint = AnalysisEndpoint(0)
    seen: list[tuple[str, str, int, str]] = []
    try:
        assert get_json(endpoint.url) == (200, {"verdict": "hold", "decision": "hold", "percent": None,
                                                "next_percent": None, "reasons": ["no step analysed yet"],
                                                "analysis": None})

        def on_step(step, analysis):
            endpoint.update(step, analysis)
            code, body = get_json(endpoint.url)
            seen.append((body["verdict"], body["decision"], code, body["analysis"]["action"]))

        controller = _controller(canary_cluster, PreparedEvidence())
        controller.on_step = on_step
        controller.run()
        assert seen == [("advance", "advance", 200, "advance"), ("advance", "advance", 200, "advance"),
                        ("promote", "promote", 200, "promote")]
    finally:
        endpoint.close()


class MirroredSplit:
    """Knative's routing, played (no pods run here): before each window, the local runtime serving
    the tiny models gets the cluster's `canaryTrafficPercent` by the same patch, and the window
    starts once `serve` has applied it. The evidence is then what a cluster's would be: the real
    transformer's counters, scraped by a real Prometheus."""

    def __init__(self, cluster: KubeStore, state_dir, source) -> None:
        self.cluster, self.state_dir, self.source = cluster, state_dir, source

    def window(self, percent: int, stop: Callable[[], bool]) -> Evidence:
        wanted = self.cluster.get()["spec"]["predictor"].get("canaryTrafficPercent")
        assert wanted == percent  # the controller patched the cluster first
        canary.set_canary_percent(LocalStore(self.state_dir), wanted, timeout_s=60, poll_s=0.05)
        return self.source.window(percent, stop)


def test_a_good_candidate_is_promoted_on_a_real_transformers_counters_through_prometheus(
        canary_cluster, tiny_run, pipeline_report, tmp_path):  # noqa: F811
    ns = canary_cluster.ns
    api = canary_cluster.namespace.token_api()
    store = KubeStore(api, ns)
    report = json.loads(Path(pipeline_report).read_text())
    profiles, problems = score_profiles({"v1": str(tiny_run.v1), "v2": str(tiny_run.v2)}, Settings())
    assert problems == []
    spec = WindowSpec(seconds=3, min_requests=300, poll_s=0.2)
    with start_local_runtime(tmp_path / "state", tiny_run.v1, tiny_run.v2, 20, tmp_path / "logs",
                             shadow_percent=100) as runtime, \
            prometheus_scraping(runtime.url, tmp_path / "prometheus") as prometheus, live_traffic(runtime, tiny_run):
        source = MirroredSplit(store, runtime.state_dir,
                               AfterLocalApply(PrometheusWindow(prometheus, spec, "v1", "v2"), runtime.state_dir))
        config = RolloutConfig("v1", "v2", offline_metrics(report, with_flag_rate=True), poll_s=0.05, timeout_s=60,
                               profiles=profiles)
        state = Controller(store, source, ConfigMapRolloutState(api.api_client, ns, "fraud-detector"), config,
                           [KubeEvents(api.api_client, ns, "fraud-detector", store.get()["metadata"]["uid"])]).run()
    steps = state["steps"]
    assert [(s["percent"], s["decision"]) for s in steps if s["decision"] != "hold"] == [
        (5, "advance"), (20, "advance"), (50, "promote")], [(s["decision"], s["reasons"][:3]) for s in steps]
    assert all(s["evidence"]["source"] == f"prometheus {prometheus}" for s in steps)
    assert all(v["frauds"] is None for s in steps for v in s["evidence"]["versions"].values())  # no labels
    assert any(r.startswith("PASS paired.recall_estimate: ") for r in steps[-1]["reasons"]), steps[-1]["reasons"]
    assert state["status"] == "promoted"
    assert percent_writes(canary_cluster) == [5, 20, 50, ["remove"]]
    assert [r for r, _ in events(canary_cluster) if r != "RolloutHold"] == ["RolloutStep", "RolloutStep",
                                                                            "RolloutPromote"]


def test_unreadable_evidence_is_an_error_verdict_and_only_four_in_a_row_roll_back(canary_cluster):
    """A dead metrics URL (nothing listens on port 9): each window is an error verdict, recorded and
    retried; the fourth in a row rolls back. Error is never a statistical verdict: no test looked."""
    dead = MetricsWindow("http://127.0.0.1:9/metrics", WindowSpec(seconds=0, poll_s=0.05), "v1", "v2")
    state = _controller(canary_cluster, dead, error_backoff_s=0.05).run()
    steps = state["steps"]
    assert [(s["percent"], s["decision"]) for s in steps] == [(5, "error")] * 3 + [(5, "rollback")]
    assert [s["reasons"][0] for s in steps[:3]] == [
        f"evidence unreadable ({n} of 4 in a row allowed): --metrics-url http://127.0.0.1:9/metrics: cannot scrape "
        "the transformer ([Errno 111] Connection refused)" for n in (1, 2, 3)]
    assert steps[-1]["reasons"][0] == "evidence unreadable 4 windows in a row: stop and roll back"
    assert all(s["tests"] is None and s["evidence"] is None for s in steps)
    assert state["status"] == "rolled_back"
    assert percent_writes(canary_cluster) == [5, 0]
    assert [r for r, _ in events(canary_cluster)] == ["RolloutEvidenceError"] * 3 + ["RolloutRollback"]
