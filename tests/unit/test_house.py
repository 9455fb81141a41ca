"""One way each, counted over the product packages (issue 20's "Must show"): a second way of doing
one of these things fails here, naming where it crept in."""
from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("components", "control", "serving", "pipelines", "devcluster", "ops", "fraud_rollout")


def product_modules() -> dict[str, ast.Module]:
    modules = {}
    for top in PRODUCT:
        for path in sorted((ROOT / top).rglob("*.py")):
            modules[str(path.relative_to(ROOT))] = ast.parse(path.read_text(), str(path))
    return modules


MODULES = product_modules()


@pytest.mark.parametrize("name", ["fraud_probability", "is_fraud"])
def test_the_v2_names_are_written_once_in_the_protocol(name):
    where = sorted({path for path, tree in MODULES.items() for node in ast.walk(tree)
                    if isinstance(node, ast.Constant) and node.value == name})
    assert where == ["components/fraud/protocol.py"]


def test_the_v2_request_is_decoded_in_one_module():
    """Whoever reads a request's `inputs` list does so through fraud.protocol (the serving route
    turns the body into KServe's InferRequest with the protocol's own field checks)."""
    readers = sorted({path for path, tree in MODULES.items() for node in ast.walk(tree)
                      if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                      and node.func.attr == "get" and node.args
                      and isinstance(node.args[0], ast.Constant) and node.args[0].value == "inputs"})
    assert readers == ["components/fraud/protocol.py", "serving/fraud_serving/fast_route.py"]


#: The entry points: each builds the Settings once and passes them down.
ENTRY_POINTS = {
    ("fraud_rollout/cli.py", "run"),
    ("serving/fraud_serving/__main__.py", "main"),
    ("control/fraud_control/prediction_log/sink.py", "main"),
    ("devcluster/fraud_devcluster/knative.py", "main"),
}


def test_settings_are_built_only_at_entry_points():
    built = set()
    for path, tree in MODULES.items():
        for function in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            for node in ast.walk(function):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Settings":
                    built.add((path, function.name))
    kfp_components = {(path, name) for path, name in built if path == "components/fraud_kfp/components.py"}
    assert built - kfp_components == ENTRY_POINTS  # a KFP component body is its pod's entry point


def test_a_canary_percent_is_checked_in_one_place():
    """The range 1..99 (0 < p < 100) of a canary is written only in fraud.canary_percent."""
    pattern = re.compile(r"0 < [\w.\[\]\"']*percent[\w.\[\]\"']* < 100|1 <= [\w.]*percent[\w.]* <= 99")
    where = sorted(path for path in MODULES if pattern.search((ROOT / path).read_text()))
    assert where == []


def _resolves(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def test_every_import_of_the_project_resolves_also_inside_functions():
    """Imports inside functions (kept lazy for start-up time) run only when called: a module moved
    without them updated would fail first in a user's hands."""
    unresolved = sorted({f"{path}:{node.lineno} {node.module}" for path, tree in MODULES.items()
                         for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
                         and node.module.split(".")[0].startswith("fraud") and not _resolves(node.module)})
    assert unresolved == []


def test_every_python_dash_m_names_a_module_that_exists():
    """A module run with `python -m`, in commands the code starts, manifests, Dockerfiles and docs."""
    texts = [path for top in (*PRODUCT, "manifests", "docs", "tests") for path in (ROOT / top).rglob("*")
             if path.is_file() and path.suffix in {".py", ".md", ".yaml", ""} and "__pycache__" not in path.parts]
    named = re.compile(r"""-m["']?,?\s*["']?(fraud[a-z_.]*[a-z_])""")
    missing = sorted({f"{path.relative_to(ROOT)}: {module}" for path in [*texts, ROOT / "README.md"]
                      for module in named.findall(path.read_text(errors="replace")) if not _resolves(module)})
    assert missing == []


#: Loops that sleep and are not waits for a condition: each says what it is instead.
NOT_WAITS = {
    "components/fraud/waiting.py": "the one wait helper",
    "control/fraud_control/local_runtime/runtime.py": "the runtime's watch loop, for as long as it serves",
    "devcluster/fraud_devcluster/knative.py": "the stand-in controller's reconcile loop",
    "serving/fraud_serving/payload_log.py": "the logger's batching and backoff on the event loop",
    "ops/fraud_ops/replay_load.py": "the replay's pacing at a rate",
    "ops/fraud_ops/bench_sink.py": "the benchmark's scrapes, measured",
}


def test_waits_for_a_condition_go_through_the_one_helper():
    sleeping = sorted({path for path, tree in MODULES.items() for node in ast.walk(tree)
                       if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                       and node.func.attr == "sleep"})
    assert sleeping == sorted(NOT_WAITS)
