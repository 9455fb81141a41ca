"""Every test module of tests/integration and tests/e2e carries its marker for the whole module, so
`pytest -m "not integration"` runs the fast checks alone (three modules once ran with none)."""
from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_integration_and_e2e_module_is_marked():
    unmarked = [str(path.relative_to(TESTS)) for marker in ("integration", "e2e")
                for path in sorted((TESTS / marker).glob("test_*.py"))
                if f"pytestmark = pytest.mark.{marker}\n" not in path.read_text()]
    assert unmarked == []
