"""Bad command-line input: a message naming the value, a non-zero exit, nothing that looks like a result."""
import subprocess
import sys

import numpy as np
import pytest
from fraud import simulate


def fraud_rollout(*args, cwd):
    return subprocess.run([sys.executable, "-m", "fraud_rollout", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("option, value, message", [
    ("--n-transactions", "0", "'0' must be at least 1"),
    ("--n-transactions", "-5", "'-5' must be at least 1"),
    ("--n-transactions", "1.5", "'1.5' is not a whole number"),
    ("--n-transactions", "abc", "'abc' is not a whole number"),
    ("--seed", "-1", "'-1' must not be negative"),
    ("--epochs", "0", "'0' must be at least 1"),
    ("--fraud-rate", "0.7", "'0.7' must be between 0 and 0.5"),
    ("--fraud-rate", "x", "'x' is not a number"),
])
def test_bad_numbers_are_named(tmp_path, option, value, message):
    result = fraud_rollout("pipeline", "run", "--local", option, value, "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2
    assert option in result.stderr and message in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("mutate, message", [
    (lambda f: f.drop(columns=["V12"]), "missing columns ['V12']"),
    (lambda f: f.assign(Amount=np.where(np.arange(len(f)) == 7, np.nan, f["Amount"])), "Amount has 1 NaN/Inf values (first at row 7)"),
    (lambda f: f.assign(V3="oops"), "V3 is not numeric"),
])
def test_bad_source_csv_is_refused_before_any_work(tmp_path, mutate, message):
    csv = tmp_path / "creditcard.csv"
    mutate(simulate.generate(500, 1)).to_csv(csv, index=False)
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("{}")  # a stale report from an earlier run
    result = fraud_rollout("pipeline", "run", "--local", "--source-csv", str(csv), "--out", str(out), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "--source-csv" in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr


def test_unreadable_csv_is_named(tmp_path):
    result = fraud_rollout("pipeline", "run", "--local", "--source-csv", str(tmp_path / "nope.csv"), cwd=tmp_path)
    assert result.returncode == 2 and "nope.csv" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("action", ["status", "promote"])
def test_kserve_target_without_a_kubeconfig_is_one_line(tmp_path, action):
    import os

    missing = tmp_path / "no-kubeconfig"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}  # not in a pod
    env["KUBECONFIG"] = str(missing)
    result = subprocess.run([sys.executable, "-m", "fraud_rollout", "canary", action, "--target", "kserve",
                             "--namespace", "fraud"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr == (f"fraud-rollout canary: error: --target kserve: no usable kubeconfig ({missing}: "
                             "no such file); pass --kubeconfig FILE (and --context) or run inside the cluster\n")
    assert result.stdout == ""


@pytest.mark.parametrize("n, rate, expected", [
    ("10", "0.0017", "--n-transactions 10 is too small: at fraud rate 0.0017 its holdout holds about 0 frauds and the "
                     "gate needs 140; use at least --n-transactions 492,913"),
    ("1000", "0.0017", "--n-transactions 1,000 is too small: at fraud rate 0.0017 its holdout holds about 0 frauds and "
                       "the gate needs 140; use at least --n-transactions 492,913"),
    ("60000", "0.0017", "--n-transactions 60,000 is too small: at fraud rate 0.0017 its holdout holds about 20 frauds "
                        "and the gate needs 140; use at least --n-transactions 492,913"),
    ("10", "0.4", "--n-transactions 10 is too small: at fraud rate 0.4 its holdout holds about 1 frauds and the gate "
                  "needs 140; use at least --n-transactions 2,095"),
])
def test_too_small_a_run_is_refused_up_front_with_the_minimum(tmp_path, n, rate, expected):
    result = fraud_rollout("pipeline", "run", "--local", "--n-transactions", n, "--fraud-rate", rate,
                           "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"fraud-rollout pipeline: error: {expected}\n"
    assert not (tmp_path / "out").exists()


def test_demo_refuses_too_small_a_run_too(tmp_path):
    result = fraud_rollout("demo", "--n-transactions", "10", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("fraud-rollout demo: error: --n-transactions 10 is too small")
    assert len(result.stderr.splitlines()) == 1


def test_a_gate_rejection_says_nothing_was_deployed_each_failed_rule_and_the_size_needed():
    from fraud.gate import GatePolicy, decide

    from fraud_rollout.pipeline_cli import gate_rejection

    candidate = {"precision": 0.86, "recall": 0.81, "f1": 0.83, "pr_auc": 0.8, "tp": 13, "fn": 3}
    result = decide({**candidate, "recall": 0.4}, candidate, 0.02, "c", "c")
    windows = {"reference": {"rows": 28_000, "fraud": 48}, "pre_drift": {"rows": 4_000, "fraud": 7},
               "recent": {"rows": 16_000, "fraud": 27}, "holdout": {"rows": 12_000, "fraud": 16}}
    report = {"data": {"n_transactions": 60_000, "windows": windows},
              "gate": {**result.to_dict(), "policy": GatePolicy().__dict__}}
    assert gate_rejection(report).splitlines() == [
        "",
        "The gate rejected v2: nothing was deployed (2 of 9 rules failed)",
        "  FAIL holdout frauds ≥ 140: 16 frauds in the holdout",
        "  FAIL McNemar p < 0.01: p = 0.02",
        # 16 holdout frauds where 140 are needed: 60,000 × 140 / 16 (more than the expected minimum, 513,032)
        "  Enough evidence (140 holdout frauds at this fraud rate, 0.00163): --n-transactions 525,000 or more",
    ]
    enough = {**candidate, "tp": 160, "fn": 40}
    report["gate"] = {**decide({**enough, "recall": 0.4}, enough, 0.02, "c", "c").to_dict(), "policy": GatePolicy().__dict__}
    assert gate_rejection(report).splitlines()[-2:] == [
        "  FAIL McNemar p < 0.01: p = 0.02",
        "  The evidence was enough (≥ 140 holdout frauds): the candidate itself fell short"]


def exported_layout(root, version=1):
    """The directory layout and metadata.json of an exported model (no SavedModel: every check
    below refuses before one would be read)."""
    import json

    version_dir = root / "fraud-detector" / str(version)
    version_dir.mkdir(parents=True)
    (version_dir / "metadata.json").write_text(json.dumps({"model_version": f"v{version}", "contract_id": "c1"}))
    return root


@pytest.mark.parametrize("arguments, message", [
    (["--baseline", "missing", "--candidate", "v2"],
     "fraud-rollout deploy: error: --baseline missing: no such directory (pass an exported model: a train step's "
     "model dir)\n"),
    (["--baseline", "v1", "--candidate", "empty"],
     "fraud-rollout deploy: error: --candidate empty: not an exported model (expected fraud-detector/<version>/"
     "metadata.json with model_version and contract_id; empty: expected one version directory under "
     "fraud-detector/, found none)\n"),
    (["--baseline", "v1", "--candidate", "v2", "--target", "kserve"],
     "fraud-rollout deploy: error: --namespace is required with --target kserve\n"),
])
def test_deploy_refuses_bad_artifacts_in_one_line(tmp_path, arguments, message):
    exported_layout(tmp_path / "v1")
    exported_layout(tmp_path / "v2", 2)
    (tmp_path / "empty").mkdir()
    result = fraud_rollout("deploy", "--state-dir", "serving", *arguments, cwd=tmp_path)
    assert (result.returncode, result.stderr, result.stdout) == (2, message, "")
    assert not (tmp_path / "serving").exists()


@pytest.mark.parametrize("percent, message", [
    ("0", "'0' must be between 1 and 99 (0 is `fraud-rollout canary rollback`, 100 `fraud-rollout canary promote`)"),
    ("100", "'100' must be between 1 and 99 (0 is `fraud-rollout canary rollback`, 100 `fraud-rollout canary promote`)"),
    ("twenty", "'twenty' is not a whole number"),
])
def test_deploy_refuses_a_bad_canary_percent(tmp_path, percent, message):
    exported_layout(tmp_path / "v1")
    exported_layout(tmp_path / "v2", 2)
    result = fraud_rollout("deploy", "--baseline", "v1", "--candidate", "v2", "--canary-percent", percent, cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines()[-1] == f"fraud-rollout deploy: error: argument --canary-percent: {message}"


def test_deploy_to_kserve_without_a_kubeconfig_fails_before_uploading(tmp_path):
    """No S3 settings in the environment either: the kubeconfig is checked first, so the message
    is about it and nothing reached S3."""
    import os

    exported_layout(tmp_path / "v1")
    exported_layout(tmp_path / "v2", 2)
    missing = tmp_path / "no-kubeconfig"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "S3_", "AWS_"))}
    env["KUBECONFIG"] = str(missing)
    result = subprocess.run([sys.executable, "-m", "fraud_rollout", "deploy", "--target", "kserve", "--namespace",
                             "fraud", "--baseline", "v1", "--candidate", "v2"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (f"fraud-rollout deploy: error: --target kserve: no usable kubeconfig ({missing}: "
                             "no such file); pass --kubeconfig FILE (and --context) or run inside the cluster\n")


def test_deploy_to_kserve_without_s3_settings_names_them(tmp_path):
    import os

    import yaml

    exported_layout(tmp_path / "v1")
    exported_layout(tmp_path / "v2", 2)
    kubeconfig = tmp_path / "kubeconfig"  # usable; never contacted, the S3 settings are missing first
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}], "users": [{"name": "u", "user": {}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "S3_", "AWS_", "KUBECONFIG"))}
    result = subprocess.run([sys.executable, "-m", "fraud_rollout", "deploy", "--target", "kserve", "--namespace",
                             "fraud", "--kubeconfig", str(kubeconfig), "--baseline", "v1", "--candidate", "v2"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == ("fraud-rollout deploy: error: S3 settings missing from the environment: S3_ENDPOINT, "
                             "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (set them from the Secret with "
                             "kfp.kubernetes.use_secret_as_env, see fraud.artifact_store)\n")
