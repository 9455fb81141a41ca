"""tests/podman_pod.py: a Kubernetes container spec to `podman run` arguments (the integration test
tests/integration/test_serving_image_kserve.py reads the result back from podman and the kernel)."""
from __future__ import annotations

import json

import pytest
from fraud_control.inferenceservice.isvc import POD_SECURITY_CONTEXT, SECURITY_CONTEXT

from tests.podman_pod import effective_security_context, run_args, security_args, volume_args, with_flag

POD = {"securityContext": POD_SECURITY_CONTEXT}


def test_the_inference_services_context_maps_to_user_cap_drop_and_no_new_privileges():
    context = effective_security_context({"securityContext": SECURITY_CONTEXT}, POD)
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}  # the pod's, kept: podman's default profile
    assert security_args(context) == ["--user", "1000", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]


def test_the_containers_fields_win_over_the_pods():
    pod = {"securityContext": {"runAsUser": 2000, "runAsGroup": 3000}}
    context = effective_security_context({"securityContext": {"runAsUser": 1000}}, pod)
    assert context == {"runAsUser": 1000, "runAsGroup": 3000}
    assert security_args(context) == ["--user", "1000:3000"]


@pytest.mark.parametrize(("context", "message"), [
    ({"runAsNonRoot": True, "runAsUser": 0}, "the kubelet would not start"),
    ({"privileged": True}, "privileged"),
    ({"seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}}, "only RuntimeDefault and Unconfined"),
])
def test_what_cannot_be_run_as_declared_is_an_error(context, message):
    with pytest.raises(ValueError, match=message):
        security_args(context)


def test_an_unmapped_field_is_an_error_not_dropped():
    with pytest.raises(ValueError, match=r"not mapped to podman: \['fsGroup', 'seLinuxOptions'\]"):
        effective_security_context({"securityContext": {"seLinuxOptions": {"level": "s0"}}},
                                   {"securityContext": {"fsGroup": 9}})
    with pytest.raises(ValueError, match=r"not mapped to podman: \['readOnlyRootFilesystem'\]"):  # container-only
        effective_security_context({}, {"securityContext": {"readOnlyRootFilesystem": True}})


def test_a_read_only_root_gets_no_tmpfs_of_podmans_own_and_one_per_unfilled_empty_dir(tmp_path):
    assert security_args({"readOnlyRootFilesystem": True, "seccompProfile": {"type": "Unconfined"}}) == [
        "--security-opt", "seccomp=unconfined", "--read-only", "--read-only-tmpfs=false"]
    pod = {"volumes": [{"name": "models", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}},
                       {"name": "config", "configMap": {"name": "c"}}]}
    container = {"volumeMounts": [{"name": "models", "mountPath": "/mnt/models", "readOnly": True},
                                  {"name": "tmp", "mountPath": "/tmp"}]}
    assert volume_args(container, pod, {"models": tmp_path}) == ["-v", f"{tmp_path}:/mnt/models:ro",
                                                                 "--tmpfs", "/tmp:rw"]
    with pytest.raises(ValueError, match="volume config .* give its host directory"):
        volume_args({"volumeMounts": [{"name": "config", "mountPath": "/etc/c"}]}, pod, {})
    with pytest.raises(ValueError, match="subPath"):
        volume_args({"volumeMounts": [{"name": "tmp", "mountPath": "/x", "subPath": "a"}]}, pod, {})


def test_run_args_expand_env_and_command_and_map_limits():
    container = {"name": "c", "image": "ignored", "command": ["python", "-m", "$(MODULE)"], "args": ["--x", "$(X)"],
                 "env": [{"name": "MODULE", "value": "m"}, {"name": "X", "valueFrom": {"secretKeyRef": {
                     "name": "s", "key": "k"}}}],
                 "resources": {"limits": {"cpu": "500m", "memory": "2Gi"}}, "workingDir": "/w"}
    args = run_args(container, {}, image="img:1", name="n", secrets={"s": {"k": "v"}})
    assert args == ["--name", "n", "--network", "host", "--cpus", "0.5", "--memory", str(2 * 2**30),
                    "--env", "MODULE=m", "--env", "X=v", "--workdir", "/w",
                    "--entrypoint", json.dumps(["python", "-m", "m"]), "img:1", "--x", "v"]
    # args given instead of the spec's; no command: the image's entrypoint stays
    assert run_args({"args": ["a"]}, {}, image="img:1", name="n", argv=["b"])[-2:] == ["img:1", "b"]


def test_with_flag_replaces_a_value_or_appends_the_flag():
    assert with_flag(["r", "--http_port", "8080"], "--http_port", "1") == ["r", "--http_port", "1"]
    assert with_flag(["r"], "--grpc_port", "2") == ["r", "--grpc_port", "2"]
