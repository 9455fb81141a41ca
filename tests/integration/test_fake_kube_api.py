"""The FAKE API server answers like the real one: REST verbs, resourceVersion and generation,
Status errors, and KServe's status timing. Driven through the real `kubernetes` client."""
from __future__ import annotations

import json
import time

import pytest
from kubernetes.client.exceptions import ApiException

from tests.fake_kube import FakeKServeController, FakeKubeApiServer
from tests.fake_kube.patches import PatchError, json_patch, merge_patch

pytestmark = pytest.mark.integration

G, V, P, NS = "serving.kserve.io", "v1beta1", "inferenceservices", "fraud"


def manifest(name="fraud-detector", uri="s3://m/v1", **annotations):
    return {"apiVersion": f"{G}/{V}", "kind": "InferenceService",
            "metadata": {"name": name, "annotations": {"serving.kserve.io/deploymentMode": "Knative", **annotations}},
            "spec": {"predictor": {"containers": [{"name": "kserve-container", "image": "i",
                                                   "env": [{"name": "STORAGE_URI", "value": uri}]}]}}}


@pytest.fixture
def fake():
    with FakeKubeApiServer(FakeKServeController(observe_delay=0.05, ready_delay=0.1)) as server:
        yield server


@pytest.fixture
def api(fake):
    with fake.custom_objects_api() as api:
        yield api


def status_of(error: ApiException) -> dict:
    return json.loads(error.body)


def test_create_get_list_delete_and_status_objects(api):
    created = api.create_namespaced_custom_object(G, V, NS, P, manifest())
    assert created["metadata"]["generation"] == 1 and created["metadata"]["uid"]
    assert "status" not in created or created["status"] == {}
    with pytest.raises(ApiException) as raised:
        api.create_namespaced_custom_object(G, V, NS, P, manifest())
    assert raised.value.status == 409
    assert status_of(raised.value) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'inferenceservices.serving.kserve.io "fraud-detector" already exists',
        "reason": "AlreadyExists", "details": {"name": "fraud-detector", "group": G, "kind": P}, "code": 409}

    listed = api.list_namespaced_custom_object(G, V, NS, P)
    assert listed["kind"] == "InferenceServiceList" and [i["metadata"]["name"] for i in listed["items"]] == ["fraud-detector"]
    assert api.list_namespaced_custom_object(G, V, "elsewhere", P)["items"] == []
    assert len(api.list_cluster_custom_object(G, V, P)["items"]) == 1

    deleted = api.delete_namespaced_custom_object(G, V, NS, P, "fraud-detector")
    assert deleted["status"] == "Success"
    with pytest.raises(ApiException) as raised:
        api.get_namespaced_custom_object(G, V, NS, P, "fraud-detector")
    assert raised.value.status == 404 and status_of(raised.value)["reason"] == "NotFound"
    assert status_of(raised.value)["message"] == 'inferenceservices.serving.kserve.io "fraud-detector" not found'


def test_invalid_objects_get_422(api):
    bad = manifest()
    bad["spec"]["predictor"]["canaryTrafficPercent"] = "20"
    with pytest.raises(ApiException) as raised:
        api.create_namespaced_custom_object(G, V, NS, P, bad)
    body = status_of(raised.value)
    assert (raised.value.status, body["reason"]) == (422, "Invalid")
    assert body["details"]["causes"][0]["field"] == "spec.predictor.canaryTrafficPercent"
    with pytest.raises(ApiException) as raised:
        api.create_namespaced_custom_object(G, V, NS, P, manifest(name="Fraud_Detector"))
    assert raised.value.status == 422


def test_generation_moves_only_on_spec_changes_and_resource_version_on_every_write(api, fake):
    fake.controller.observe_delay = 60.0  # no status writes by the controller in between
    created = api.create_namespaced_custom_object(G, V, NS, P, manifest())
    labelled = api.patch_namespaced_custom_object(G, V, NS, P, "fraud-detector", {"metadata": {"labels": {"a": "b"}}})
    assert labelled["metadata"]["generation"] == 1
    assert int(labelled["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    same = api.patch_namespaced_custom_object(G, V, NS, P, "fraud-detector", {"metadata": {"labels": {"a": "b"}}})
    assert same["metadata"]["resourceVersion"] == labelled["metadata"]["resourceVersion"]
    # status in a request body is ignored (status subresource)
    moved = api.patch_namespaced_custom_object(G, V, NS, P, "fraud-detector",
                                               {"spec": {"predictor": {"canaryTrafficPercent": 10}},
                                                "status": {"observedGeneration": 99}})
    assert moved["metadata"]["generation"] == 2 and moved["status"].get("observedGeneration") != 99


def test_replace_needs_the_current_resource_version(api):
    created = api.create_namespaced_custom_object(G, V, NS, P, manifest())
    body = manifest(uri="s3://m/v2")
    with pytest.raises(ApiException) as raised:
        api.replace_namespaced_custom_object(G, V, NS, P, "fraud-detector", body)
    assert raised.value.status == 422
    body["metadata"]["resourceVersion"] = "1"
    with pytest.raises(ApiException) as raised:
        api.replace_namespaced_custom_object(G, V, NS, P, "fraud-detector", body)
    assert (raised.value.status, status_of(raised.value)["reason"]) == (409, "Conflict")
    current = api.get_namespaced_custom_object(G, V, NS, P, "fraud-detector")
    body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    replaced = api.replace_namespaced_custom_object(G, V, NS, P, "fraud-detector", body)
    assert replaced["metadata"]["generation"] == 2 and replaced["metadata"]["uid"] == created["metadata"]["uid"]


def test_patch_media_types(api, fake):
    api.create_namespaced_custom_object(G, V, NS, P, manifest())
    # A JSON patch removing a missing field: 422 from the patch machinery.
    code, body = fake.handle("PATCH", f"/apis/{G}/{V}/namespaces/{NS}/{P}/fraud-detector",
                             "application/json-patch+json",
                             b'[{"op": "remove", "path": "/spec/predictor/canaryTrafficPercent"}]')
    assert (code, body["reason"]) == (422, "Invalid") and "nonexistent" in body["message"]
    code, body = fake.handle("PATCH", f"/apis/{G}/{V}/namespaces/{NS}/{P}/fraud-detector",
                             "application/strategic-merge-patch+json", b'{"spec": {}}')
    assert (code, body["reason"]) == (415, "UnsupportedMediaType")


def test_status_is_stale_until_the_controller_observes_the_new_generation(api, fake):
    """The window in which KServeClient.wait_isvc_ready without expected_generation is fooled."""
    api.create_namespaced_custom_object(G, V, NS, P, manifest())
    deadline = time.monotonic() + 5
    while not any(c["type"] == "Ready" and c["status"] == "True"
                  for c in api.get_namespaced_custom_object(G, V, NS, P, "fraud-detector").get("status", {}).get("conditions", [])):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    fake.controller.ready_delay = 2.0  # a wide window between observed and ready for the next revision
    patched = api.patch_namespaced_custom_object(G, V, NS, P, "fraud-detector", {"spec": {"predictor": {
        "canaryTrafficPercent": 20, "containers": [{"name": "kserve-container", "image": "i2"}]}}})
    assert patched["metadata"]["generation"] == 2
    assert patched["status"]["observedGeneration"] == 1
    assert {"type": "Ready", "status": "True"}.items() <= next(c for c in patched["status"]["conditions"] if c["type"] == "Ready").items()
    seen = patched["status"]
    while seen["observedGeneration"] < 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
        seen = api.get_namespaced_custom_object(G, V, NS, P, "fraud-detector")["status"]
    assert next(c for c in seen["conditions"] if c["type"] == "Ready")["status"] == "Unknown"
    assert seen["components"]["predictor"]["latestCreatedRevision"] == "fraud-detector-predictor-00002"
    assert seen["components"]["predictor"]["latestReadyRevision"] == "fraud-detector-predictor-00001"


def test_rfc_patches():
    assert merge_patch({"a": {"b": 1, "c": 2}}, {"a": {"b": None, "d": [1]}}) == {"a": {"c": 2, "d": [1]}}
    assert json_patch({"a": [1, 2]}, [{"op": "add", "path": "/a/-", "value": 3},
                                      {"op": "replace", "path": "/a/0", "value": 0},
                                      {"op": "move", "from": "/a", "path": "/b"}]) == {"b": [0, 2, 3]}
    with pytest.raises(PatchError):
        json_patch({"a": 1}, [{"op": "test", "path": "/a", "value": 2}])


def test_watch_streams_the_controllers_status_writes(api):
    from kubernetes import watch

    api.create_namespaced_custom_object(G, V, NS, P, manifest())
    seen = []
    stream = watch.Watch()
    for event in stream.stream(api.list_namespaced_custom_object, G, V, NS, P,
                               field_selector="metadata.name=fraud-detector", timeout_seconds=5):
        conditions = event["object"].get("status", {}).get("conditions", [])
        seen.append((event["type"], next((c["status"] for c in conditions if c["type"] == "Ready"), None)))
        if seen[-1][1] == "True":
            stream.stop()
    assert seen[0] == ("ADDED", None) and seen[-1] == ("MODIFIED", "True")
    assert ("MODIFIED", "Unknown") in seen  # observed, revision not ready yet
