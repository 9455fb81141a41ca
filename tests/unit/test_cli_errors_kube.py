"""Issue 19, the API server unreachable (VPN down, an expired context): exit 2 and one line naming the
server and what to check, never a traceback. A kubeconfig pointing at a closed loopback port stands in
for it: no cluster needed."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from fraud.processes import free_port

from tests.unit.test_cli_errors_exits import fraud_rollout, one_error_line


def closed_port_kubeconfig(path: Path) -> tuple[Path, str]:
    """A usable kubeconfig whose server is a loopback port nothing listens on (no cluster needed)."""
    server = f"https://127.0.0.1:{free_port()}"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    return path, server


@pytest.mark.parametrize("command", [
    ["canary", "status"], ["canary", "promote"], ["canary", "rollback"], ["rollout", "status"], ["rollout", "abort"]])
def test_an_unreachable_api_server_is_one_line_naming_it(tmp_path, command):
    kubeconfig, server = closed_port_kubeconfig(tmp_path / "kubeconfig")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "KUBECONFIG"))}
    waits = ["--timeout", "5"] if command[1] in ("promote", "rollback", "abort") else []  # status has no --timeout
    result = fraud_rollout(*command, "--target", "kserve", "--namespace", "fraud", "--kubeconfig", str(kubeconfig),
                           *waits, cwd=tmp_path, env=env)
    line = one_error_line(result)
    assert line.startswith(f"fraud-rollout {command[0]}: error: --target kserve: cannot reach the Kubernetes API "
                           f"server at {server} ("), line
    assert "Connection refused" in line
    assert line.endswith("check the kubeconfig's context (--context), that the VPN is up, and that "
                         "`kubectl cluster-info` answers"), line
    assert result.stdout == ""
