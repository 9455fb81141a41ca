"""Uploading a real exported model to an S3-compatible server on loopback (moto's server mode:
a real S3 HTTP API, the `minio` client talks to it over the wire), no Docker."""
from __future__ import annotations

import secrets

import pytest
from fraud_control.artifact_store import S3Settings, artifact_prefix, upload_artifact

from tests.s3_server import moto_s3_server


@pytest.fixture(scope="module")
def s3_endpoint():
    with moto_s3_server() as endpoint:
        yield endpoint


def test_settings_come_from_the_secret_env_vars():
    with pytest.raises(ValueError, match="AWS_SECRET_ACCESS_KEY"):
        S3Settings.from_env({"S3_ENDPOINT": "minio-service.kubeflow:9000", "AWS_ACCESS_KEY_ID": "x"})
    settings = S3Settings.from_env({"S3_ENDPOINT": "http://minio-service.kubeflow:9000",
                                    "AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "s3cr3t-value"})
    assert (settings.endpoint, settings.secure) == ("minio-service.kubeflow:9000", False)
    assert "s3cr3t-value" not in repr(settings)
    assert S3Settings.from_env({"S3_ENDPOINT": "s3.example:443", "AWS_ACCESS_KEY_ID": "id",
                                "AWS_SECRET_ACCESS_KEY": "key", "S3_USE_HTTPS": "0"}).secure is False


@pytest.mark.integration
def test_upload_artifact_to_s3_returns_its_uri(s3_endpoint, tiny_run, tmp_path):
    from minio import Minio

    environ = {"S3_ENDPOINT": s3_endpoint, "S3_USE_HTTPS": "0", "AWS_REGION": "us-east-1",
               "AWS_ACCESS_KEY_ID": secrets.token_hex(8), "AWS_SECRET_ACCESS_KEY": secrets.token_hex(16)}
    settings = S3Settings.from_env(environ)
    uri = upload_artifact(tiny_run.v2, "fraud-models", settings=settings)
    prefix = artifact_prefix(tiny_run.v2)
    assert uri == f"s3://fraud-models/{prefix}" and prefix.startswith("fraud-detector/v2-")
    assert upload_artifact(tiny_run.v2, "fraud-models", settings=settings) == uri  # same content, same URI

    s3 = Minio(s3_endpoint, access_key=environ["AWS_ACCESS_KEY_ID"], secret_key=environ["AWS_SECRET_ACCESS_KEY"],
               secure=False, region="us-east-1")
    stored = sorted(o.object_name for o in s3.list_objects("fraud-models", prefix=prefix + "/", recursive=True))
    local = sorted(f"{prefix}/{p.relative_to(tiny_run.v2).as_posix()}" for p in tiny_run.v2.rglob("*") if p.is_file())
    assert stored == local
    assert f"{prefix}/fraud-detector/2/model.savedmodel/saved_model.pb" in stored
    assert f"{prefix}/feature_contract.json" in stored
    s3.fget_object("fraud-models", f"{prefix}/fraud-detector/2/metadata.json", str(tmp_path / "m.json"))
    assert (tmp_path / "m.json").read_bytes() == (tiny_run.v2 / "fraud-detector/2/metadata.json").read_bytes()
    assert artifact_prefix(tiny_run.v1) != prefix
