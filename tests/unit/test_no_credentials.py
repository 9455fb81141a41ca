"""No committed file holds a credential: Yelp's detect-secrets (its default plugins and filters)
scans every file `git ls-files` lists.

What it flags that is not a secret is audited in `.secrets.baseline` (every entry `is_secret:
false`; a baseline rather than `# pragma: allowlist secret` comments because the compiled pipeline
is compared with its compiler's output and the docs are read by people): the names of Secret
objects and of their keys (`fraud-detector-s3`, `secretKey: AWS_SECRET_ACCESS_KEY`, `url`), the
S3 Secret template's `REPLACE-WITH-…` placeholder, the docs' `USER:PASSWORD@HOST` example, made-up
values in tests (a fake S3 key `key`, `postgres:secret@127.0.0.1` for a test's own loopback
server, `sink:s3cret@db.example`) and the tests' fixed contract id `3f6c2a1b9d0e4f57`. An entry
matches on file, plugin type and the secret's hash, not the line. After a change:

    .venv/bin/detect-secrets scan --baseline .secrets.baseline   # adds new findings, drops gone ones
    .venv/bin/detect-secrets audit .secrets.baseline             # answer each new one (n: not a secret)
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from detect_secrets import SecretsCollection
from detect_secrets.settings import default_settings

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ".secrets.baseline"

Finding = tuple[str, int, str, str]  # file, line, the plugin's secret type, the secret's hash


def committed_files() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: nothing committed to scan")
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60).stdout
    # the baseline holds only hashes of what it lists (hex strings detect-secrets would flag itself)
    return [name for name in listed.decode().split("\0") if name and name != BASELINE and (ROOT / name).is_file()]


def scan(root: Path, names: list[str]) -> list[Finding]:
    """detect-secrets with every plugin it ships and its default filters, file by file."""
    with default_settings():
        secrets = SecretsCollection(root=str(root))
        for name in names:
            secrets.scan_file(name)
    return sorted((name, secret.line_number, secret.type, secret.secret_hash) for name, secret in secrets)


def baseline_entries() -> list[tuple[str, dict]]:
    results = json.loads((ROOT / BASELINE).read_text())["results"]
    return [(name, entry) for name, entries in results.items() for entry in entries]


def audited() -> set[tuple[str, str, str]]:
    return {(name, entry["type"], entry["hashed_secret"]) for name, entry in baseline_entries()}


def test_no_committed_file_contains_a_credential():
    unaudited = [f"{name}:{entry['line_number']}: {entry['type']}" for name, entry in baseline_entries()
                 if entry.get("is_secret") is not False]
    assert not unaudited, f"{BASELINE} lists findings nobody audited as not a secret:\n" + "\n".join(unaudited)
    found, exempt = scan(ROOT, committed_files()), audited()
    new = [f"{name}:{line}: {kind}" for name, line, kind, hashed in found if (name, kind, hashed) not in exempt]
    assert not new, ("detect-secrets finds credentials in committed files (remove them; a false positive goes "
                     f"into {BASELINE}, see this module's docstring):\n" + "\n".join(new))
    gone = sorted(exempt - {(name, kind, hashed) for name, _, kind, hashed in found})
    assert not gone, f"{BASELINE} lists findings no committed file has any more (rescan it):\n" + "\n".join(
        f"{name}: {kind}" for name, kind, _ in gone)


def test_the_scanner_finds_what_it_looks_for(tmp_path):
    """Planted literals, written here in pieces so that this file holds none of them."""
    (tmp_path / "leak.yaml").write_text("\n".join([
        "aws_access_key_id: AKIA" + "IOSFODNN7EXAMPLE",
        "password: " + "hunter2hunter2x9",
        "password: " + "Secret123",  # a word that starts like a reference is still a literal
        "MINIO_ROOT_PASSWORD=minio" + "123",
        "-----BEGIN RSA " + "PRIVATE KEY-----",
        "slack: xoxb-" + "1234567890-abcdefghij",
        "github: ghp_" + "aB3dE6gH9jK2" + "mN5pQ8sT1vW4" + "yZ7bC0eF3hJ6",
    ]))
    assert [(line, kind) for _, line, kind, _ in scan(tmp_path, ["leak.yaml"])] == [
        (1, "AWS Access Key"), (2, "Secret Keyword"), (3, "Secret Keyword"), (4, "Secret Keyword"),
        (5, "Private Key"), (6, "Slack Token"), (7, "GitHub Token")]


def test_a_planted_credential_in_a_committed_kind_of_file_is_not_in_the_baseline(tmp_path):
    """The baseline exempts exact (file, type, hash) findings only: the same kind of line with another
    value, in a file the baseline names, is still reported."""
    (tmp_path / "manifests" / "base").mkdir(parents=True)
    template = tmp_path / "manifests" / "base" / "s3-secret.template.yaml"
    template.write_text("AWS_SECRET_ACCESS_KEY: " + "wJalrXUtnFE" + "MI/K7MDENG/" + "bPxRfiCYEX" + "AMPLEKEY\n")
    found, exempt = scan(tmp_path, ["manifests/base/s3-secret.template.yaml"]), audited()
    assert [(line, kind) for _, line, kind, _ in found] == [
        (1, "AWS Access Key"), (1, "Base64 High Entropy String"), (1, "Secret Keyword")]
    assert all((name, kind, hashed) not in exempt for name, _, kind, hashed in found), found
