"""Every pipeline step inside the components image: kfp.local's `DockerRunner` against podman's
Docker API (rootful podman, no Docker daemon), each step started exactly as KFP's launcher starts it
(the compiled command and executor input, artifacts through the bind-mounted pipeline root), as
the image's user (uid 1000), with host networking.

kfp 2.17's DockerRunner auto-removes each container, and podman removes it before kfp streams its
logs: a step that fails fast shows no log and is reported SUCCESS (kfp assumes success when the
container is gone, `docker_task_handler.run_docker_container`). So this module keeps each step's
log itself (podman's k8s-file log driver, one file per task) and, after each task, checks what the
compiled pipeline says the task outputs and the container id the step logged (`fraud.container`);
the first task that fails either check fails the run, naming the task and its log.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml
from fraud.container import STEP_LINE, container_id
from fraud.processes import die_with_parent, stop_process
from fraud.waiting import poll

from fraud_pipelines.console import ANSI, ERROR

#: The components image's user (components/Dockerfile `USER 1000`, the manifests' runAsUser).
COMPONENTS_UID = 1000
SOCKET_NAME = "podman.sock"
SERVICE_READY_SECONDS = 30.0
#: How long a failed step's log may take to get its last (error) line after kfp saw the step end.
LOG_SETTLE_S = 15.0
#: Output artifacts that hold only metadata (kfp writes them into executor_output.json, no file).
METADATA_ONLY = {"system.Metrics", "system.ClassificationMetrics"}
_START = re.compile(r"Executing task '([^']+)'")
_END = re.compile(r"Task '([^']+)' finished with status (\w+)")
_LOG_LINE = re.compile(r"^\S+ (?:stdout|stderr) [FP] ", re.MULTILINE)  # k8s-file: time, stream, tag


class ContainersUnavailable(ValueError):
    """podman or the image is missing; the message says what to do (the CLI exits 2 with it)."""


class StepUnproven(RuntimeError):
    """A task's outputs are missing or its log does not show it ran in a container."""


@dataclass(frozen=True)
class ComponentsImage:
    """The image every step runs in, and the environment podman runs with on this machine
    (`fraud_devcluster.images.podman_env()`: runc, cgroupfs, no default ulimits)."""

    image: str
    podman_env: Mapping[str, str]


def check_image(components: ComponentsImage) -> None:
    """ContainersUnavailable when podman is not installed or the image is not in its store."""
    if shutil.which("podman") is None:
        raise ContainersUnavailable("--runner docker needs podman, which is not installed: run `make images` "
                                    "(it installs podman and builds the components image)")
    found = subprocess.run(["podman", "image", "exists", components.image], env=dict(components.podman_env),
                           capture_output=True, check=False)
    if found.returncode != 0:
        raise ContainersUnavailable(f"image {components.image} is not in podman's store: build the components "
                                    "image with `make images` (or pass --image with one podman has)")


@contextmanager
def podman_service(socket_path: Path, podman_env: Mapping[str, str], log_path: Path) -> Iterator[str]:
    """`podman system service` on `socket_path` for the length of the block; yields its DOCKER_HOST URL.
    Ready when the socket accepts a connection (polled), stopped (SIGTERM) at the end."""
    socket_path.unlink(missing_ok=True)
    url = f"unix://{socket_path}"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(["podman", "system", "service", "--time=0", url], stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=dict(podman_env),
                                   preexec_fn=die_with_parent)
    try:
        def exited() -> None:
            if process.poll() is not None:
                raise ContainersUnavailable(f"podman system service exited with {process.returncode}; "
                                            f"its log: {log_path}")

        if not poll(lambda: _accepts(socket_path), timeout_s=SERVICE_READY_SECONDS, poll_s=0.05, give_up=exited):
            raise ContainersUnavailable(f"podman system service not ready after {SERVICE_READY_SECONDS:.0f} s; "
                                        f"its log: {log_path}")
        yield url
    finally:
        stop_process(process, 15.0)
        socket_path.unlink(missing_ok=True)


def _accepts(socket_path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(socket_path))
        except OSError:
            return False
    return True


def grant(path: Path, *, recursive: bool) -> None:
    """Make `path` (and, if `recursive`, everything under it) the components user's: the steps write
    there as uid 1000 through the bind mount. Root on the host keeps full access."""
    if not path.exists():
        return
    os.chown(path, COMPONENTS_UID, COMPONENTS_UID)
    if recursive and path.is_dir():
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                os.chown(os.path.join(root, name), COMPONENTS_UID, COMPONENTS_UID, follow_symlinks=False)


@dataclass
class StepRecord:
    """One task as it ran: its container, its log and what it output."""

    task: str
    log: str
    container_id: str | None = None
    uid: int | None = None
    outputs: list[str] = field(default_factory=list)
    problem: str = ""


class StepContainers(logging.Filter):
    """The DockerRunner for one run, and a filter on kfp.local's log records that gives each task its
    own log file (at "Executing task") and checks it (at "finished with status"), raising
    StepUnproven there, which stops the run: a logging filter's exception reaches kfp.local's caller
    (its sequential DAG runner catches none; its ParallelFor executor would, and we have no ParallelFor).

    kfp.local copies the runner's `container_run_args` shallowly for each task, after which it logs
    "Executing task"; the log driver's options dict is shared, so setting its path then names the
    file the next container logs to. The check after the task catches any change to that (no log,
    no container id: the task fails)."""

    def __init__(self, pipeline_yaml: Path, pipeline_root: Path, log_dir: Path, mounts: list[Path],
                 read_only: Sequence[Path] = ()) -> None:
        super().__init__()
        self.pipeline_root, self.log_dir = pipeline_root, log_dir
        self.outputs = _expected_outputs(next(yaml.safe_load_all(pipeline_yaml.read_text())))  # then the platform spec
        self.host_id = container_id()
        self.records: dict[str, StepRecord] = {}
        self._log_options: dict[str, str] = {}
        self._mounts = [(p, False) for p in mounts] + [(p, True) for p in read_only]

    def runner(self):
        from docker.types import Mount
        from kfp import local

        return local.DockerRunner(
            network_mode="host", user=str(COMPONENTS_UID),
            log_config={"type": "k8s-file", "config": self._log_options},
            mounts=[Mount(target=str(p), source=str(p), type="bind", read_only=ro) for p, ro in self._mounts])

    def filter(self, record: logging.LogRecord) -> bool:
        message = ANSI.sub("", record.getMessage())  # kfp.local colours task names
        if match := _START.search(message):
            task = match.group(1)
            log = self.log_dir / f"{task}.log"
            log.unlink(missing_ok=True)
            self._log_options["path"] = str(log)
            self.records[task] = StepRecord(task, str(log))
        elif (match := _END.search(message)) and match.group(1) in self.records:
            step = self.records[match.group(1)]
            self._check(step)
            if step.problem:  # stop here: kfp would run the next tasks (a deploy "succeeded" → register)
                raise StepUnproven(self.failure())
        return True

    def _check(self, step: StepRecord) -> None:
        log = Path(step.log)
        text = self._read_log(log, step.task)
        if log.is_file():  # the k8s-file framing dropped: the step's own lines, readable
            log.write_text(text)
        if found := STEP_LINE.search(text):
            step.container_id = None if found["container"] == "none" else found["container"]
            step.uid = int(found["uid"])
        task_roots = list(self.pipeline_root.glob(f"*/{step.task}"))
        root = task_roots[0] if len(task_roots) == 1 else None
        missing = [] if root else ["its task directory"]
        if root:
            expected = ["executor_output.json", *self.outputs.get(step.task, [])]
            missing = [name for name in expected if not (root / name).exists()]
            step.outputs = [str(root / name) for name in expected if (root / name).exists()]
        if missing:
            errors = [f"{m.group(1).rsplit('.', 1)[-1]}: {m.group(2).strip()}: " for line in text.splitlines()
                      if (m := ERROR.match(line))]
            step.problem = f"{errors[-1] if errors else ''}outputs missing: {', '.join(missing)}"
        elif step.container_id is None:
            step.problem = "its log names no container (did it run in the image?)"
        elif step.container_id == self.host_id:
            step.problem = f"it logged the host's own container id {step.container_id}"

    def _read_log(self, log: Path, task: str) -> str:
        """The step's log without the k8s-file framing. A step whose outputs are missing failed, and
        its error line is its log's last: podman's conmon may still be writing it when kfp reports
        the end (seen on a loaded machine), so wait for that line, at most LOG_SETTLE_S."""
        def settled() -> tuple[str] | None:
            text = _LOG_LINE.sub("", log.read_text(errors="replace")) if log.is_file() else ""
            failed = not all((root / "executor_output.json").exists() for root in self.pipeline_root.glob(f"*/{task}"))
            return (text,) if not failed or any(ERROR.match(line) for line in text.splitlines()) else None

        found = poll(settled, timeout_s=LOG_SETTLE_S, poll_s=0.1)  # between reads of the log conmon is finishing
        return found[0] if found else _LOG_LINE.sub("", log.read_text(errors="replace")) if log.is_file() else ""

    def failure(self) -> str | None:
        """The first task (in run order) that failed a check, named with its problem and log."""
        if not self.records:
            return "no task was seen starting: kfp.local's log lines changed? (nothing was checked)"
        for step in self.records.values():
            if step.problem:
                return f"task {step.task} failed in its container: {step.problem}; its log: {step.log}"
        return None

    def report(self) -> dict[str, dict]:
        return {task: asdict(step) for task, step in self.records.items()}


def _expected_outputs(spec: dict) -> dict[str, list[str]]:
    """Per task, the output artifacts that are files (`comp-<task>` in the compiled pipeline)."""
    outputs = {}
    for name, component in spec.get("components", {}).items():
        artifacts = component.get("outputDefinitions", {}).get("artifacts", {})
        outputs[name.removeprefix("comp-")] = [
            key for key, a in artifacts.items() if a.get("artifactType", {}).get("schemaTitle") not in METADATA_ONLY]
    return outputs


def write_records(path: Path, records: dict[str, dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=2) + "\n")


@dataclass(frozen=True)
class HostPaths:
    """The host paths a pipeline's steps use besides the pipeline root, from its arguments."""

    #: Serving state dirs: the deploy and rollout steps write all of them.
    state_dirs: list[Path]
    #: Directories of SQLite MLflow stores: the steps write the database, its journal and `mlartifacts/`.
    mlflow_dirs: list[Path]
    #: Read only: a source CSV.
    read_only: list[Path]

    @classmethod
    def of(cls, arguments: Mapping[str, object]) -> HostPaths:
        state_dirs = [Path(str(arguments["local_state_dir"])).resolve()] if arguments.get("local_state_dir") else []
        uris = [str(arguments.get(key) or "") for key in ("mlflow_tracking_uri", "tracking_uri")]
        mlflow_dirs = [Path(uri.removeprefix("sqlite:///")).resolve().parent for uri in uris
                       if uri.startswith("sqlite:///")]
        read_only = [Path(str(arguments["source_csv"])).resolve()] if arguments.get("source_csv") else []
        return cls(state_dirs, mlflow_dirs, read_only)

    def make_writable(self) -> None:
        """Each becomes the components user's (the state dirs wholly; of an MLflow directory only
        the directory itself, for SQLite's journal, the database and its artifacts)."""
        for path in self.state_dirs + self.mlflow_dirs:
            path.mkdir(parents=True, exist_ok=True)
        for path in self.state_dirs:
            grant(path, recursive=True)
        for path in self.mlflow_dirs:
            grant(path, recursive=False)
            grant(path / "mlflow.db", recursive=False)
            grant(path / "mlartifacts", recursive=True)


def _mount_points(paths: list[Path], pipeline_root: Path) -> list[Path]:
    """Each path once, none that is the pipeline root (kfp mounts it) or already under another."""
    unique = sorted(set(paths) - {pipeline_root}, key=lambda p: len(p.parts))
    return [p for i, p in enumerate(unique) if not any(p.is_relative_to(q) for q in unique[:i])]


@contextmanager
def steps_in_containers(components: ComponentsImage | None, pipeline_yaml: Path, pipeline_root: Path, out_dir: Path,
                        log_dir: Path, arguments: Mapping[str, object]) -> Iterator[StepContainers | None]:
    """For the length of the block: podman's Docker API on `out_dir/podman.sock` (DOCKER_HOST, which
    kfp's docker client reads), the paths the steps write made the components user's and mounted at
    the same paths, and a `StepContainers` on the root logger; its `runner()` goes to `local.init`.
    Without `components` (in-process steps) it does nothing and yields None."""
    if components is None:
        yield None
        return
    socket_path = out_dir / SOCKET_NAME
    if len(str(socket_path).encode()) > 107:
        raise ContainersUnavailable(f"{out_dir}: too long a path for podman's socket (a Unix socket path has "
                                    "at most 107 bytes): use a shorter output directory")
    paths = HostPaths.of(arguments)
    paths.make_writable()
    pipeline_root.mkdir(parents=True, exist_ok=True)
    grant(pipeline_root, recursive=True)
    writable = paths.state_dirs + paths.mlflow_dirs
    steps = StepContainers(pipeline_yaml, pipeline_root, log_dir, _mount_points(writable, pipeline_root),
                           [p for p in paths.read_only if not any(p.is_relative_to(w) for w in writable)])
    root = logging.getLogger()
    earlier = os.environ.get("DOCKER_HOST")
    with podman_service(socket_path, components.podman_env, log_dir / "podman-service.log") as url:
        os.environ["DOCKER_HOST"] = url
        root.addFilter(steps)
        try:
            yield steps
        finally:
            root.removeFilter(steps)
            if earlier is None:
                os.environ.pop("DOCKER_HOST", None)
            else:
                os.environ["DOCKER_HOST"] = earlier
