"""serving/Dockerfile cannot be built here; check what can be checked without a daemon."""
from __future__ import annotations

import shlex
from pathlib import Path

from fraud_control import isvc
from fraud_serving.__main__ import build_parser

REPO = Path(__file__).resolve().parents[2]


def instructions() -> list[tuple[str, str]]:
    lines, current = [], ""
    for line in (REPO / "serving" / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            keyword, _, rest = current.strip().partition(" ")
            lines.append((keyword.upper(), rest))
            current = ""
    return lines


def test_image_runs_the_entry_point_as_the_manifests_user():
    steps = instructions()
    assert steps[0] == ("FROM", "python:3.11-slim")
    users = [rest for keyword, rest in steps if keyword == "USER"]
    assert users == [str(isvc.SECURITY_CONTEXT["runAsUser"])]
    entrypoint = [rest for keyword, rest in steps if keyword == "ENTRYPOINT"]
    assert entrypoint == ['["python", "-m", "fraud_serving"]']
    for keyword, rest in steps:
        if keyword == "COPY":
            for source in shlex.split(rest)[:-1]:
                assert (REPO / source).exists(), source
    # the lock is installed before the project, the project without dependencies
    runs = [rest for keyword, rest in steps if keyword == "RUN"]
    assert runs[0] == "pip install -r requirements.lock"
    assert runs[1].startswith("pip install --no-deps .")


def test_container_args_in_the_manifest_select_a_role():
    manifest = isvc.inference_service(isvc.IsvcSpec(storage_uri="s3://m/v1", model_version="v1", contract_id="c"))
    for component in ("predictor", "transformer"):
        args = manifest["spec"][component]["containers"][0]["args"]
        assert build_parser().parse_args(args).role == component
