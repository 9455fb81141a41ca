"""The README's cluster path, verbatim, at full size: `make images REGISTRY=…`, `podman push` to a
real registry (CNCF Distribution on loopback), `pipeline compile --image` for the pushed tag, and
`pipeline run --local --runner docker` at the defaults (1,000,000 transactions, seed 7) with every
step in the components image. Each step's own log names the container it ran in (not the host), as
uid 1000, and the run's metrics are those of `make demo`'s pipeline (`full_run`), exactly: the same seed
in another process and another filesystem gives the same models."""
import json
import os
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml
from fraud_devcluster import images, registry, servers

from tests.docs import docs_text

pytestmark = pytest.mark.e2e

#: The holdout recalls the README's results table shows for the defaults.
README_RECALL = {"v1": 0.3611, "v2": 0.8272}
#: What a step logs first (fraud.container.STEP_FORMAT), read here without the product's parser.
STEP = re.compile(r"^fraud step: container ([0-9a-f]{64}|none) uid (\d+)$", re.MULTILINE)
#: The repository root as a user's checkout sees it (symlinked into the test's working directory).
CHECKOUT = ("Makefile", "pyproject.toml", "requirements.lock", "README.md", ".dockerignore", ".venv", "components",
            "control", "serving", "pipelines", "devcluster", "fraud_rollout")


def readme_block() -> list[str]:
    """The shell lines of the README's "Build the images, push them, and compile" block (On a cluster)."""
    section = docs_text().split("1. Build the images, push them, and compile for the pushed tag", 1)[1]
    return [line.strip() for line in section.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()]


@pytest.fixture(scope="module")
def cluster_path(tmp_path_factory):
    """The block run in one shell from a checkout, with REGISTRY (its first line, the user's own) set
    to a registry on loopback; the run's report, the shell's variables and the registry's address."""
    root = tmp_path_factory.mktemp("cluster-path")
    checkout = root / "checkout"
    checkout.mkdir()
    for name in CHECKOUT:
        (checkout / name).symlink_to(images.REPO / name)
    lines = readme_block()
    assert lines[0].startswith("REGISTRY=") and lines[1] == "make images REGISTRY=$REGISTRY", lines
    recorded = images.BUILT.read_bytes()  # the block records its own tags: the suite's are put back after
    started, address = registry.start(root / "registry")
    try:
        # a user's shell: none of this test process's MLflow settings (an in-process run's
        # mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI to the environment)
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}, "REGISTRY": f"{address}/team",
               "CONTAINERS_REGISTRIES_CONF": str(registry.registries_conf(root / "registry"))}
        script = "\n".join([*lines[1:], 'echo "COMPONENTS=$COMPONENTS"', 'echo "SERVING=$SERVING"'])
        done = subprocess.run(["bash", "-ec", script], cwd=checkout, env=env, capture_output=True, text=True,
                              timeout=2400, check=False)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        shown = dict(line.split("=", 1) for line in done.stdout.splitlines()[-2:])
        catalog = {repo: json.loads(urllib.request.urlopen(f"http://{address}/v2/team/{repo}/tags/list").read())
                   for repo in ("components", "serving")}
    finally:
        servers.stop(started.pid)
        images.BUILT.write_bytes(recorded)
        for tag in images.podman("images", "--format", "{{.Repository}}:{{.Tag}}").split():
            if tag.startswith(f"{address}/"):  # this registry is gone: its names would only pile up
                images.podman("untag", tag, tag)  # only this name (alone, untag drops every name of the image)
    report = json.loads((checkout / ".fraud-rollout" / "run" / "report.json").read_text())
    return {"report": report, "stdout": done.stdout, "checkout": checkout, "address": address, "catalog": catalog,
            **shown}


def _tasks(pipeline_yaml: Path) -> set[str]:
    """Every task of the compiled pipeline, the promoted branch's included."""
    spec = next(yaml.safe_load_all(pipeline_yaml.read_text()))
    dags = [spec["root"]["dag"], *(c["dag"] for c in spec["components"].values() if "dag" in c)]
    return {task for dag in dags for task, body in dag["tasks"].items() if "componentRef" in body
            and not body["componentRef"]["name"].startswith("comp-condition")}


def test_the_images_are_pushed_and_the_pipeline_compiled_for_the_pushed_tag(cluster_path):
    components, serving = cluster_path["COMPONENTS"], cluster_path["SERVING"]
    for name, tag in (("components", components), ("serving", serving)):
        assert tag.startswith(f"{cluster_path['address']}/team/{name}:0.1.0-"), tag
        assert cluster_path["catalog"][name] == {"name": f"team/{name}", "tags": [tag.rsplit(":", 1)[1]]}
    compiled = (cluster_path["checkout"] / "fraud_rollout_pipeline.yaml").read_text()
    assert compiled.startswith("# PIPELINE DEFINITION")  # no "not published" note: the image is pushed
    assert compiled.count(f"image: {components}") == 7 and "ghcr.io" not in compiled  # no unpublished image
    assert f"defaultValue: {serving}" in compiled  # the serving_image parameter's default


def test_every_step_ran_in_its_own_container_of_the_components_image(cluster_path):
    report, stdout = cluster_path["report"], cluster_path["stdout"]
    assert report["run"]["runner"] == "docker"
    assert report["containers"]["image"] == cluster_path["COMPONENTS"]
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


def test_the_metrics_are_the_in_process_runs_exactly(cluster_path, full_run):
    report = cluster_path["report"]
    for name, recall in README_RECALL.items():
        assert round(report["models"][name]["holdout"]["recall"], 4) == recall, (name, report["models"][name]["holdout"])
        for key in ("threshold", "holdout", "pre_drift", "epochs_run"):
            assert report["models"][name][key] == full_run["models"][name][key], (name, key)
    assert report["mcnemar"] == full_run["mcnemar"] and report["data"]["windows"] == full_run["data"]["windows"]
    assert report["gate"]["decision"] == "promote", report["gate"]["reasons"]
