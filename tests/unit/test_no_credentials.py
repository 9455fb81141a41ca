"""No committed file holds a credential: only placeholders, env var names and Secret references."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_BYTES = 2_000_000

# Each pattern is written so that this file does not match it.
CREDENTIALS = {
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "AWS secret access key": re.compile(
        r"(?i)aws_secret_access_key[\"']?\s*[:=]\s*[\"']?(?![\"']?REPLACE)[A-Za-z0-9/+]{40}\b"),
    "private key": re.compile("-----BEGIN (?:[A-Z]+ )?" + "PRIVATE KEY-----"),
    "MinIO default credential": re.compile(r"\b(?:minio" r"123|minio" r"admin)\b", re.IGNORECASE),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36}\b"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
}
#: `password: value`, `secret_key = "value"`, ... whose value is not a placeholder or a reference.
ASSIGNED_SECRET = re.compile(
    r"(?i)\b(password|passwd|secret[_-]?key|access[_-]?key|api[_-]?key|token)[\"']?\s*[:=]\s*[\"']?([^\s\"',)}]+)")
PLACEHOLDER = re.compile(
    r"^(?i:REPLACE|CHANGE|<|\$|\{|\*|xxx|none|null|true|false|str|bytes|os\.|environ|settings\.|env\.|"
    r"secrets?\.|\.\.\.|self\.|kwargs|\[)|^[A-Z][A-Z0-9_]*$|\($")  # placeholders, references, ENV_VAR names


def committed_files() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: nothing committed to scan")
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60).stdout
    return [ROOT / name for name in listed.decode().split("\0") if name]


def findings(path: Path, root: Path = ROOT) -> list[str]:
    try:
        if path.stat().st_size > MAX_BYTES:
            return []
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
        return []
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for what, pattern in CREDENTIALS.items():
            if pattern.search(line):
                found.append(f"{path.relative_to(root)}:{number}: {what}")
        for match in ASSIGNED_SECRET.finditer(line):
            value = match.group(2)
            if len(value) >= 8 and not PLACEHOLDER.search(value) and re.search(r"[0-9]", value) and re.search(r"[A-Za-z]", value):
                found.append(f"{path.relative_to(root)}:{number}: {match.group(1)} with a literal value")
    return found


def test_no_committed_file_contains_a_credential():
    problems = [finding for path in committed_files() if path.is_file() for finding in findings(path)]
    assert not problems, "credentials in committed files:\n" + "\n".join(problems)


def test_the_scanner_finds_what_it_looks_for(tmp_path):
    leaked = tmp_path / "leak.yaml"
    leaked.write_text("\n".join([
        "aws_access_key_id: AKIA" + "IOSFODNN7EXAMPLE",
        "password: " + "hunter2hunter2x9",
        "password: " + "Secret123",  # a word that starts like a reference is still a literal
        "MINIO_ROOT_PASSWORD=minio" + "123",
        "-----BEGIN RSA " + "PRIVATE KEY-----",
        "password: REPLACE-WITH-PASSWORD",
        "secret_key=settings.secret_key",
    ]))
    assert [f.split(": ", 1)[1] for f in findings(leaked, tmp_path)] == [
        "AWS access key id", "password with a literal value", "password with a literal value", "MinIO default credential",
        "private key"]
