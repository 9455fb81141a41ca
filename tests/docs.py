"""The user's documentation as the tests read it: README.md, then docs/*.md in name order. A test
finds its block by heading or text wherever it lives, so moving a section between them needs no
test change."""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def docs_text() -> str:
    return "\n".join(page.read_text() for page in PAGES)
