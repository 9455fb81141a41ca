"""The kustomize manifests as tests read them: rendered with the real `kubectl kustomize`, and the
shell commands their header comments give."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "manifests"
KUBECTL = shutil.which("kubectl")
PREDICTION_LOG = "prediction-log"
#: The Secret the sink's Deployment reads its store URL from, and the key.
STORE_SECRET, STORE_SECRET_KEY = "fraud-prediction-log-store", "url"


def render(kustomization: str) -> list[dict]:
    result = subprocess.run([KUBECTL or "kubectl", "kustomize", str(MANIFESTS / kustomization)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def commented_commands(kustomization: str) -> list[str]:
    """The shell commands in a kustomization.yaml's header: its comment lines indented by three or
    more spaces after `#`, with `\\` continuations joined."""
    commands, current = [], ""
    for line in (MANIFESTS / kustomization / "kustomization.yaml").read_text().splitlines():
        if not line.startswith("#   "):
            continue
        current += line[1:].strip()
        if current.endswith("\\"):
            current = current[:-1].rstrip() + " "
        else:
            commands.append(current)
            current = ""
    assert not current, f"{kustomization}: a command ends in a continuation"
    return commands
