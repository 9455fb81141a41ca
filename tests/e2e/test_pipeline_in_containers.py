"""The full-size story with every step in the components image: `fraud-rollout pipeline run --local
--runner docker` at the defaults (1,000,000 transactions, seed 7). Each step's own log names the
container it ran in (not the host), as uid 1000, and the holdout metrics are the in-process run's."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fraud_devcluster import images

pytestmark = pytest.mark.e2e

#: The in-process run's holdout recalls at the defaults (`fraud-rollout pipeline run --local`).
IN_PROCESS_RECALL = {"v1": 0.3611, "v2": 0.8272}
#: What a step logs first (fraud.container.STEP_FORMAT), read here without the product's parser.
STEP = re.compile(r"^fraud step: container ([0-9a-f]{64}|none) uid (\d+)$", re.MULTILINE)


@pytest.fixture(scope="module")
def container_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("containers")
    done = subprocess.run([sys.executable, "-m", "fraud_rollout", "pipeline", "run", "--local", "--runner", "docker",
                           "--out", str(root / "out"), "--serving-state-dir", str(root / "serving"),
                           "--mlflow-tracking-uri", f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"],
                          capture_output=True, text=True, timeout=1800, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads((root / "out" / "report.json").read_text()), done.stdout


def _tasks(pipeline_yaml: Path) -> set[str]:
    """Every task of the compiled pipeline, the promoted branch's included."""
    spec = next(yaml.safe_load_all(pipeline_yaml.read_text()))
    dags = [spec["root"]["dag"], *(c["dag"] for c in spec["components"].values() if "dag" in c)]
    return {task for dag in dags for task, body in dag["tasks"].items() if "componentRef" in body
            and not body["componentRef"]["name"].startswith("comp-condition")}


def test_every_step_ran_in_its_own_container_of_the_components_image(container_run):
    report, stdout = container_run
    assert report["run"]["runner"] == "docker"
    assert report["containers"]["image"] == images.built_image("components")
    steps = report["containers"]["tasks"]
    assert set(steps) == _tasks(Path(report["run"]["pipeline_yaml"])) and len(steps) == 7, sorted(steps)
    host_cgroup = Path("/proc/self/cgroup").read_text()
    seen = set()
    for task, step in steps.items():
        logged = STEP.findall(Path(step["log"]).read_text())
        assert len(logged) == 1, (task, step["log"])  # one step, one container, one line
        container, uid = logged[0]
        assert container != "none" and container not in host_cgroup, (task, container)
        assert uid == "1000", (task, uid)
        assert container == step["container_id"] and container not in seen, task
        seen.add(container)
        assert step["problem"] == "" and all(Path(p).exists() for p in step["outputs"]), (task, step)
    assert f"each step in {report['containers']['image']}" in stdout


def test_the_holdout_metrics_are_the_in_process_runs(container_run):
    report, _ = container_run
    for name, recall in IN_PROCESS_RECALL.items():
        assert round(report["models"][name]["holdout"]["recall"], 4) == recall, (name, report["models"][name]["holdout"])
    assert report["gate"]["decision"] == "promote", report["gate"]["reasons"]
