"""The user's documentation as the tests read it: README.md, then docs/*.md in name order. A test
finds its block by heading or text wherever it lives, so moving a section between them needs no
test change.

Every fenced block names its kind: `sh` or `bash` is a shell block, which tests/e2e/test_readme.py
runs verbatim and in order, unless the line before it is `<!-- not run here: why -->`; `text` is a
synopsis with placeholders, a diagram or a listing, `yaml` a resource to read."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def pages(root: Path = REPO) -> list[Path]:
    """README.md, then docs/*.md in name order: the order a reader and the README test take."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]

SHELL = frozenset({"sh", "bash"})
NOT_RUN = re.compile(r"^\s*<!-- not run here: (.+) -->\s*$")
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")


def docs_text() -> str:
    return "\n".join(page.read_text() for page in pages())


@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository
    line: int  # of the opening fence, 1-based
    kind: str  # the fence's info string
    text: str  # dedented as the user copies it
    not_run: str | None  # why it cannot run here, from its marker

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def blocks(root: Path = REPO) -> list[Block]:
    """Every fenced block of the documentation under `root`, in reading order."""
    found: list[Block] = []
    for page in pages(root):
        lines = page.read_text().splitlines()
        index = 0
        while index < len(lines):
            opening = FENCE.match(lines[index])
            if opening is None:
                index += 1
                continue
            indent, kind = opening.groups()
            end = next(i for i in range(index + 1, len(lines)) if lines[i].strip() == "```")
            body = [line.removeprefix(indent) for line in lines[index + 1:end]]
            marker = NOT_RUN.match(lines[index - 1]) if index else None
            found.append(Block(str(page.relative_to(root)), index + 1, kind, "\n".join(body),
                               marker.group(1) if marker else None))
            index = end + 1
    return found
