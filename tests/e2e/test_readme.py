"""The README and docs/ as a script: every shell block that can run here, verbatim and in reading
order, in one bash session (as a user's terminal carries `NS`, `TO` and the cluster's env from one
block to the next) in a fresh clone after `make demo`, on `make cluster`. A block that cannot run here
says why in the Markdown (`<!-- not run here: … -->`); the numbers the README and the pipeline page
state are checked against what that `make demo` measured."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import pytest

from tests.docs import SHELL, Block, blocks

pytestmark = pytest.mark.e2e

KINDS = SHELL | {"text", "yaml"}
SCRIPT_TIMEOUT_S = 1800
STOP_TIMEOUT_S = 60
MARK = "::block "


def runnable(found: list[Block]) -> list[Block]:
    return [b for b in found if b.kind in SHELL and b.not_run is None]


def script(found: list[Block]) -> str:
    """One bash script: each block behind a marker that names it, stopping at the first failure."""
    lines = ["set -eo pipefail"]
    for block in runnable(found):
        # a newline first: a block's output may not end with one (kubectl's jsonpath)
        lines += [f"printf '\\n{MARK}{block.where}\\n'", f"printf '\\n{MARK}{block.where}\\n' >&2", block.text]
    return "\n".join(lines) + "\n"


def by_block(output: str) -> dict[str, str]:
    parts = re.split(rf"^{MARK}(\S+)\n", output, flags=re.MULTILINE)
    return {where: text.strip("\n") for where, text in zip(parts[1::2], parts[2::2], strict=True)}


def stop_group(pgid: int) -> None:
    """Stop what the blocks left running in the background (`serve &`, `sink serve &`), as Ctrl-C would."""
    for sig, wait in ((signal.SIGINT, STOP_TIMEOUT_S), (signal.SIGKILL, 10)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def test_every_block_names_its_kind_and_every_shell_block_runs_or_says_why():
    found = blocks()
    assert [b.where for b in found if b.kind not in KINDS] == []
    assert [b.where for b in found if b.not_run is not None and b.kind not in SHELL] == []
    assert [b.where for b in found if b.kind in SHELL and "[--" in b.text] == []  # a synopsis is `text`


def test_the_documentation_runs_as_written(fresh_clone, tmp_path):
    found = blocks(fresh_clone.root)
    path = tmp_path / "docs.sh"
    path.write_text(script(found))
    env = {**fresh_clone.env, "PREDICTION_LOG_STORE_URL": "postgresql://fraud@127.0.0.1:5432/fraud"}
    # Output to files, not pipes: what a block leaves running (`serve &`) holds its stdout open.
    with open(tmp_path / "out", "w") as out_file, open(tmp_path / "err", "w") as err_file:
        process = subprocess.Popen(["bash", str(path)], cwd=fresh_clone.root, env=env, stdout=out_file,
                                   stderr=err_file, text=True, start_new_session=True)
    try:
        process.wait(timeout=SCRIPT_TIMEOUT_S)
    finally:  # the cluster first: a script's jobs share its process group, the cluster's servers too
        down = subprocess.run(["make", "cluster-down"], cwd=fresh_clone.root, env=fresh_clone.env,
                              capture_output=True, text=True, timeout=300)
        stop_group(process.pid)
    out, err = (tmp_path / "out").read_text(), (tmp_path / "err").read_text()
    ran = by_block(out)
    last = list(ran)[-1] if ran else "(none)"
    assert process.returncode == 0, f"block {last} failed:\n{ran.get(last, '')[-2000:]}\n{err[-4000:]}"
    assert list(ran) == [b.where for b in runnable(found)]
    assert "stopped etcd, kube-apiserver, minio, kserve-controller-manager, knative-standin" in down.stdout

    # the README's blocks: serve, make cluster, kubectl status, rollback, promote, rollback again, the CLI
    serve_out, cluster_out, kubectl, rollback, promote, after_promote, cli = (
        ran[b.where] for b in runnable(found) if b.page == "README.md")
    # Serve it: the demo's state, a prediction per row of its sample, then a rollback and a promote
    serve = serve_out.splitlines()  # serve's own lines (its start, what it serves) come in between
    at = serve.index("model_version v2")
    assert serve[at + 1].split() == ["row", "fraud_probability", "is_fraud"]
    assert [line.split()[0] for line in serve[at + 2:at + 7]] == ["0", "1", "2", "3", "4"]
    assert "rolled back: canary v2 at 0 %" in serve and "promoted v2 to 100 %" in serve
    assert "MLflow: champion = version 2, challenger cleared" in serve
    # the kserve target: the deploy as KServe's controller split it
    cluster = cluster_out.splitlines()
    assert "kubeflow-user-example-com/fraud-detector: created with v1; canary v2 at 20 %" in cluster
    assert [(t["revisionName"], t["percent"]) for t in json.loads(cluster[-1])] == [
        ("fraud-detector-predictor-00002", 20), ("fraud-detector-predictor-00001", 80)]
    # the kubectl blocks in order: rolled back, promoted, rolled back again; the CLI then promotes
    assert "fraud-detector-predictor-00002\tlatest\t20" in kubectl and "fraud-detector-predictor-00001\tprev\t80" in kubectl
    assert all("inferenceservice.serving.kserve.io/fraud-detector" in o for o in (rollback, promote, after_promote))
    assert "promoted v2 to 100 %" in cli
    # the feedback loop on the demo's log: its labels delivered again, then the analysis says what it said
    loop = next(b for b in runnable(found) if "labels ingest" in b.text)
    stated = [line.removeprefix("# ") for line in loop.text.splitlines() if line.startswith("# ")]
    shown = ran[loop.where].splitlines()
    assert shown[0] == stated[0] and stated[1] == "… RECOMMENDATION: PROMOTE" and shown[-1] == "RECOMMENDATION: PROMOTE"
    # the sink on this machine: the feedback and feature metrics of both models
    sink = ran[next(w for w in ran if "sink serve" in _text(found, w))].splitlines()
    assert sink[0].startswith("prediction sink on http://127.0.0.1:8091/ → .fraud-rollout/demo/prediction-log.sqlite")
    versions = {m.group(1) for line in sink[1:] if (m := re.match(r'fraud_feedback_rows\{model_version="(v\d)"\}', line))}
    assert versions == {"v1", "v2"} and all(line.startswith(("fraud_feedback_", "fraud_feature_")) for line in sink[1:])
    # the v2 request of the serving page, answered by the v2 the CLI promoted
    answer = json.loads(ran[next(w for w in ran if w.startswith("docs/serving.md"))])
    assert answer["model_name"] == "fraud-detector" and answer["model_version"] == "v2"
    assert [o["name"] for o in answer["outputs"]] == ["fraud_probability", "is_fraud"]


def _text(found: list[Block], where: str) -> str:
    return next(b.text for b in found if b.where == where)


def test_the_readmes_numbers_are_what_make_demo_measured(fresh_clone, full_run, full_demo):
    readme = " ".join((fresh_clone.root / "README.md").read_text().split())
    assert f"the pipeline on {full_run['data']['n_transactions']:,} simulated transactions" in readme
    plan = full_demo["rollout"]["plan"]
    assert "stepping the canary " + " → ".join(str(p) for p in plan) + " %" in readme
    assert [s["percent"] for s in full_demo["rollout"]["steps"]] == plan[:-1] and full_demo["rollout"]["status"] == "promoted"
    replay = full_demo["replay"]
    assert f"v2 as a {replay['subject']['canary_percent']} % canary" in readme
    # shadow scoring at 100 %: every answered request was also scored on the other version
    assert "(shadow scoring at 100 %)" in readme and replay["paired"]["pairs"] == replay["totals"]["answered_rows"]
    written_mb = sum(f.stat().st_size for f in fresh_clone.demo_out.rglob("*") if f.is_file()) / 1e6
    stated_mb = int(re.search(r"It writes about (\d+) MB there", readme).group(1))
    assert abs(written_mb - stated_mb) <= 0.1 * stated_mb, written_mb


def test_the_pipeline_pages_results_are_what_make_demo_measured(fresh_clone, full_run):
    page = (fresh_clone.root / "docs" / "pipeline.md").read_text()
    rows = re.findall(r"^\| (v[12]) \| (pre-drift|holdout) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", page,
                      flags=re.MULTILINE)
    assert len(rows) == 4
    for model, part, *stated in rows:
        measured = full_run["models"][model][part.replace("-", "_")]
        assert [float(v) for v in stated] == [round(measured[m], 3) for m in ("precision", "recall", "f1", "pr_auc")]
    v1 = full_run["models"]["v1"]
    lost = round(100 * (1 - v1["holdout"]["recall"] / v1["pre_drift"]["recall"]))
    mcnemar = full_run["mcnemar"]
    exponent = int(f"{mcnemar['p_value']:.0e}".split("e")[1])
    mantissa = round(mcnemar["p_value"] / 10 ** exponent)
    assert (f"v1 loses {lost} % of its recall under drift; v2 passes every gate rule (McNemar: "
            f"{mcnemar['b_only']} holdout rows\nonly v2 got right, {mcnemar['a_only']} only v1, "
            f"p = {mantissa}·10⁻{''.join('⁰¹²³⁴⁵⁶⁷⁸⁹'[int(d)] for d in str(-exponent))})") in page
