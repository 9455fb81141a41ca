"""promtool's rule tests over the deployed rule file, for tests that make their own input series:
the expected alerts with their annotations as Prometheus templates print them."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "manifests" / "monitoring" / "rules" / "fraud-detector.rules.yaml"


def go_float(value: float) -> str:
    """`{{ $value }}` as Prometheus' templates print it (Go's %v: shortest, 1e-05 style, 0 not 0.0)."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def alert_rule(name: str) -> dict:
    """The alerting rule `name` of the deployed rule file."""
    return next(r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if r.get("alert") == name)


def expected_alert(rule: dict, labels: dict[str, str], value: float) -> dict:
    """promtool's `exp_alerts` entry of `rule` firing on a series with `labels` at `value`."""
    def expand(text: str) -> str:
        for key, label in labels.items():
            text = text.replace(f"{{{{ $labels.{key} }}}}", label)
        return text.replace("{{ $value }}", go_float(value)).strip()

    return {"exp_labels": {**rule.get("labels", {}), **labels},
            "exp_annotations": {key: expand(text) for key, text in rule["annotations"].items()}}


def run_rule_test(spec: dict, path: Path) -> subprocess.CompletedProcess:
    """`promtool test rules` on `spec` (its `rule_files` default to the deployed one), written to `path`."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: install the Debian package `prometheus` (`make test` does)"
    path.write_text(yaml.safe_dump({"rule_files": [str(RULES)], "evaluation_interval": "1m", **spec},
                                   width=1_000_000))
    return subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=120)
