"""serving/Dockerfile read as data: its instructions, and its build context laid out the way its COPY
steps lay it out (so a venv can install the image's package set exactly as the image does)."""
from __future__ import annotations

import shlex
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "serving" / "Dockerfile"
LOCK = REPO / "serving" / "requirements.lock"


def instructions(dockerfile: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(KEYWORD, rest) per instruction, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for line in dockerfile.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            keyword, _, rest = current.strip().partition(" ")
            lines.append((keyword.upper(), rest))
            current = ""
    return lines


def copies(dockerfile: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(source in the repository, destination in the image's WORKDIR) of every COPY."""
    pairs = []
    for keyword, rest in instructions(dockerfile):
        if keyword == "COPY" and not rest.startswith("--from"):  # not a copy from an earlier stage
            *sources, destination = shlex.split(rest)
            pairs += [(source, destination) for source in sources]
    return pairs


def stage_build_directory(target: Path) -> Path:
    """`target` laid out as the image's WORKDIR after its COPY steps."""
    for source, destination in copies():
        path = REPO / source
        into = target / destination
        if destination.endswith("/"):
            into = into / path.name
        if path.is_dir():
            shutil.copytree(path, into, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
        else:
            into.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, into)
    return target
