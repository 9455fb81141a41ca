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
