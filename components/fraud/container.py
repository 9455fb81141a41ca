"""Which container this process runs in: every pipeline step logs it first, so a run (and a test)
can prove from the step's own log that the step ran in its image and not on the host.

The id comes from `/run/.containerenv` (`id=`; rootful podman fills it only for `--privileged`
containers, it is empty otherwise) or else from `/proc/self/cgroup`, whose paths end in the
container's 64-hex id under podman (`libpod-<id>`), Docker (`docker/<id>`) and containerd
(`cri-containerd-<id>.scope`) with cgroups v1. A host process has none.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

CONTAINER_ENV = Path("/run/.containerenv")
CGROUP = Path("/proc/self/cgroup")
_ID = re.compile(r"(?<![0-9a-f])([0-9a-f]{64})(?![0-9a-f])")
#: The line a step logs at start; `STEP_LINE` reads it back from the log.
STEP_FORMAT = "fraud step: container {container} uid {uid}"
STEP_LINE = re.compile(r"fraud step: container (?P<container>[0-9a-f]{64}|none) uid (?P<uid>\d+)")


def container_id(container_env: Path = CONTAINER_ENV, cgroup: Path = CGROUP) -> str | None:
    """The 64-hex id of the container this process runs in, None on a host."""
    for path, pattern in ((container_env, re.compile(r"^id=\"?([0-9a-f]{64})\"?$", re.MULTILINE)), (cgroup, _ID)):
        try:
            found = pattern.search(path.read_text())
        except OSError:
            continue
        if found:
            return found.group(1)
    return None


def announce_step() -> str | None:
    """Print the step line (container id or `none`, and the uid) and return the id."""
    found = container_id()
    print(STEP_FORMAT.format(container=found or "none", uid=os.getuid()), flush=True)
    return found
