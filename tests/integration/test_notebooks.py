"""Notebooks are executed headless, as a user would run them, on small data."""
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.integration
NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def execute(name: str, tmp_path: Path, env: dict[str, str]):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    saved = dict(os.environ)
    os.environ.update(env)  # the kernel inherits the environment
    try:
        NotebookClient(notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return "\n".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                     for output in cell.get("outputs", []))


def test_submit_notebook_runs_locally(tmp_path):
    """Started where JupyterLab starts it (notebooks/ of a checkout), it writes under the checkout's
    root, beside the CLI's state; it once wrote a second tree, notebooks/.fraud-rollout."""
    checkout = tmp_path / "checkout"
    (checkout / "notebooks").mkdir(parents=True)
    (checkout / "pyproject.toml").write_text((NOTEBOOKS.parent / "pyproject.toml").read_text())
    out = checkout / ".fraud-rollout" / "notebook"
    text = execute("01_submit_pipeline.ipynb", checkout / "notebooks", {
        "FRAUD_ROLLOUT_RUN_LOCALLY": "1",
        "FRAUD_ROLLOUT_N_TRANSACTIONS": "40000", "FRAUD_ROLLOUT_FRAUD_RATE": "0.02", "FRAUD_ROLLOUT_EPOCHS": "2",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "FRAUD_ROLLOUT_SERVING_IMAGE": "registry.example/fraud-rollout/serving:test"})
    assert (out / "fraud_rollout_pipeline.yaml").exists() and (out / "run" / "report.json").exists()
    assert sorted(p.name for p in (checkout / "notebooks").iterdir()) == []
    assert "compiled" in text and "Gate:" in text and "McNemar p" in text
    # what a cluster run would be given: the pushed serving image as a parameter, the run's account
    assert ("cluster runs: serving image registry.example/fraud-rollout/serving:test, service account "
            "fraud-rollout-pipeline") in text
    assert "9 arguments, all pipeline parameters" in text
