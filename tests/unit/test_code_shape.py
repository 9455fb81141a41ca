"""No function in the core, the canary statistics or the control plane is longer than 60 lines
(issue #8): a long function there is several steps that want names. Every offender is listed,
file:line, so one run shows all the work left."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = (REPO / "components" / "fraud", REPO / "components" / "fraud_canary", REPO / "control" / "fraud_control")
MAX_LINES = 60


def long_functions(path: Path, root: Path = REPO, limit: int = MAX_LINES) -> list[str]:
    """`file:line name (N lines)` for every function or method in `path` longer than `limit`,
    counted from its `def` (decorators excluded) to its last line, docstring included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > limit:
                found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_every_long_function_and_method_is_named(tmp_path):
    body = "\n".join(f"        x{i} = {i}" for i in range(59))
    (tmp_path / "m.py").write_text(f"def short():\n    return 1\n\n\nclass C:\n    async def long(self):\n{body}\n"
                                   f"        return 0\n\n    def fits(self):\n{body}\n")
    assert long_functions(tmp_path / "m.py", root=tmp_path) == ["m.py:6 long (61 lines)"]


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_no_function_is_longer_than_60_lines(package):
    modules = sorted(package.rglob("*.py"))
    assert modules, f"no modules under {package}"
    offenders = [offender for module in modules for offender in long_functions(module)]
    assert not offenders, f"{len(offenders)} functions longer than {MAX_LINES} lines:\n" + "\n".join(offenders)


def test_no_module_imports_itself_through_others():
    """No import cycle between any two modules of the project (import-linter's contracts check
    packages and siblings; this checks every module, function-level imports included)."""
    import grimp

    packages = ("fraud", "fraud_canary", "fraud_control", "fraud_serving", "fraud_kfp", "fraud_pipelines", "fraud_ops", "fraud_rollout")
    graph = grimp.build_graph(*packages, cache_dir=None)
    ours = {m for m in graph.modules if m.split(".")[0] in packages}
    cycles = []
    for module in sorted(ours):
        for imported in graph.find_modules_directly_imported_by(module) & ours:
            if graph.chain_exists(imported=module, importer=imported):
                cycles.append(f"{module} -> {imported} -> ... -> {module}")
    assert not cycles, "\n".join(cycles)
