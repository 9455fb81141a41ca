"""One container of a Kubernetes pod spec run with podman as the kubelet would start it: the same
argv and environment (`tests.pod_command`), the same user, capabilities, privilege-escalation and
seccomp settings and root-filesystem mode, the pod's volumes mounted where the container mounts
them, on the host's network (DESIGN "Checked on this machine kind": rootful podman, runc, cgroupfs,
`--network host`).

Mapping (effective context = the container's `securityContext` over the pod's, as the kubelet merges
them in the kubelet: kubernetes `pkg/securitycontext/util.go` DetermineEffectiveSecurityContext):

- `runAsUser` / `runAsGroup` → `--user UID[:GID]`; `runAsNonRoot` with uid 0 is refused, as the
  kubelet refuses to start it (`verifyRunAsNonRoot`);
- `capabilities.drop` / `.add` → `--cap-drop` / `--cap-add`;
- `allowPrivilegeEscalation: false` → `--security-opt no-new-privileges`;
- `seccompProfile: RuntimeDefault` → podman's default profile (no flag), `Unconfined` →
  `seccomp=unconfined`;
- `readOnlyRootFilesystem: true` → `--read-only --read-only-tmpfs=false`: podman would otherwise
  put a tmpfs on /tmp, /var/tmp and /run, which a pod does not get; its only writable places are
  its volumes, so a tmpfs goes only where the pod mounts an `emptyDir` that the caller does not fill;
- `resources.limits` cpu and memory → `--cpus` / `--memory`;
- `ports`: nothing (the host's network: the process listens where its args say).

Any other securityContext field, the pod's or the container's, is an error, not silently dropped.
"""
from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fraud.processes import die_with_parent
from fraud_devcluster import images

from tests.pod_command import command_line

CONTAINER_ONLY = ("allowPrivilegeEscalation", "capabilities", "readOnlyRootFilesystem", "privileged")
POD_AND_CONTAINER = ("runAsUser", "runAsGroup", "runAsNonRoot", "seccompProfile")
#: Byte multipliers of Kubernetes quantities (k8s.io/apimachinery pkg/api/resource/suffix.go).
QUANTITY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def effective_security_context(container: Mapping, pod_spec: Mapping) -> dict:
    """The container's securityContext over the pod-level fields the pod's own context may set."""
    pod = pod_spec.get("securityContext") or {}
    container_context = container.get("securityContext") or {}
    unknown = sorted({*(set(pod) - set(POD_AND_CONTAINER)), *(set(container_context) - {*CONTAINER_ONLY,
                                                                                        *POD_AND_CONTAINER})})
    if unknown:  # fsGroup, supplementalGroups, sysctls, seLinuxOptions, …
        raise ValueError(f"securityContext fields not mapped to podman: {unknown}")
    return {**pod, **container_context}


def security_args(context: Mapping) -> list[str]:
    """podman flags for an effective security context (see the module docstring)."""
    args: list[str] = []
    if context.get("privileged"):
        raise ValueError("privileged containers are not run here")
    if "runAsUser" in context:
        user = str(context["runAsUser"])
        args += ["--user", f"{user}:{context['runAsGroup']}" if "runAsGroup" in context else user]
    if context.get("runAsNonRoot") and context.get("runAsUser") == 0:
        raise ValueError("runAsNonRoot with runAsUser 0: the kubelet would not start this container")
    capabilities = context.get("capabilities") or {}
    args += [flag for capability in capabilities.get("drop", []) for flag in ("--cap-drop", capability)]
    args += [flag for capability in capabilities.get("add", []) for flag in ("--cap-add", capability)]
    if context.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    seccomp = (context.get("seccompProfile") or {}).get("type", "RuntimeDefault")
    if seccomp == "Unconfined":
        args += ["--security-opt", "seccomp=unconfined"]
    elif seccomp != "RuntimeDefault":
        raise ValueError(f"seccompProfile {seccomp}: only RuntimeDefault and Unconfined are mapped")
    if context.get("readOnlyRootFilesystem"):
        args += ["--read-only", "--read-only-tmpfs=false"]
    return args


def quantity_bytes(text: str) -> int:
    for suffix, factor in QUANTITY.items():
        if text.endswith(suffix):
            return int(float(text[:-len(suffix)]) * factor)
    return int(float(text))


def cpus(text: str) -> str:
    return f"{int(text[:-1]) / 1000:g}" if text.endswith("m") else text


def resource_args(container: Mapping) -> list[str]:
    limits = (container.get("resources") or {}).get("limits") or {}
    args: list[str] = []
    if "cpu" in limits:
        args += ["--cpus", cpus(str(limits["cpu"]))]
    if "memory" in limits:
        args += ["--memory", str(quantity_bytes(str(limits["memory"])))]
    return args


def volume_args(container: Mapping, pod_spec: Mapping, host_paths: Mapping[str, Path]) -> list[str]:
    """`-v` per volumeMount whose volume the caller provides as a host directory (`host_paths`: volume
    name → path), `--tmpfs` for an emptyDir it does not; any other volume is an error."""
    volumes = {volume["name"]: volume for volume in pod_spec.get("volumes", [])}
    args: list[str] = []
    for mount in container.get("volumeMounts", []):
        if "subPath" in mount or "subPathExpr" in mount:
            raise ValueError(f"volumeMount {mount['name']}: subPath is not mapped")
        name, path = mount["name"], mount["mountPath"]
        if name in host_paths:
            args += ["-v", f"{Path(host_paths[name]).resolve()}:{path}:{'ro' if mount.get('readOnly') else 'rw'}"]
        elif "emptyDir" in volumes.get(name, {}):
            args += ["--tmpfs", f"{path}:rw"]
        else:
            raise ValueError(f"volume {name} (mounted at {path}): give its host directory")
    return args


def run_args(container: Mapping, pod_spec: Mapping, *, image: str, name: str,
             secrets: Mapping[str, Mapping[str, str]] | None = None, host_paths: Mapping[str, Path] | None = None,
             argv: Sequence[str] | None = None) -> list[str]:
    """`podman run` arguments (after `run`) for `container` of `pod_spec`, named `name`, with `image`
    instead of the spec's. `argv`: the args to pass instead of the spec's own (a caller
    that rewrites some says which and why); the spec's `command`, if any, becomes the entrypoint."""
    expanded, env = command_line(container, secrets or {})
    command = expanded[:len(container.get("command", []))]
    args = list(expanded[len(command):] if argv is None else argv)
    flags = ["--name", name, "--network", "host",
             *security_args(effective_security_context(container, pod_spec)), *resource_args(container),
             *volume_args(container, pod_spec, host_paths or {})]
    flags += [flag for key, value in env.items() for flag in ("--env", f"{key}={value}")]
    if container.get("workingDir"):
        flags += ["--workdir", container["workingDir"]]
    if command:
        flags += ["--entrypoint", json.dumps(command)]
    return [*flags, image, *args]


def with_flag(args: Sequence[str], flag: str, value: str) -> list[str]:
    """`args` with the value after `flag` replaced (or `flag value` appended when absent)."""
    out = list(args)
    if flag in out:
        out[out.index(flag) + 1] = value
        return out
    return [*out, flag, value]


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`podman ARGS` with the machine's containers.conf (images.podman_env); not checked."""
    return subprocess.run(["podman", *args], capture_output=True, text=True, env=images.podman_env(),
                          timeout=timeout, check=False)


@dataclass(frozen=True)
class Container:
    """A container this process runs in the foreground (`podman run`, its output in a log file), so
    `fraud.processes.ServerProcess` waits on it and stops it (podman passes the SIGTERM on)."""

    name: str
    process: subprocess.Popen

    @classmethod
    def start(cls, args: Sequence[str], log_path: Path) -> Container:
        """`podman run ARGS` (from `run_args`); does not wait."""
        with log_path.open("ab") as log:
            process = subprocess.Popen(["podman", "run", *args], stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env=images.podman_env(), preexec_fn=die_with_parent)
        return cls(args[list(args).index("--name") + 1], process)

    def inspect(self) -> dict:
        inspected = podman("inspect", self.name)
        assert inspected.returncode == 0, inspected.stderr
        return json.loads(inspected.stdout)[0]

    def running(self) -> bool:
        return bool(self.inspect()["State"]["Running"])

    def top(self, *descriptors: str) -> dict[str, str]:
        """`podman top` of the container's first process: descriptor → value (psgo's descriptors
        only: the image has no ps(1), which podman runs in the container for the others, `uid`
        among them; only the last descriptor's value may hold spaces, e.g. `args`)."""
        listed = podman("top", self.name, *descriptors)
        assert listed.returncode == 0, listed.stderr
        first = listed.stdout.splitlines()[1]
        return dict(zip(descriptors, first.split(None, len(descriptors) - 1), strict=True))

    def process_status(self) -> dict[str, str]:
        """/proc/<pid>/status of the container's first process as the host kernel reports it."""
        pid = self.inspect()["State"]["Pid"]
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}

    def remove(self) -> None:
        """Stop and remove it, whatever state it is in."""
        podman("rm", "-f", "-t", "10", self.name)
        self.process.wait(30)
