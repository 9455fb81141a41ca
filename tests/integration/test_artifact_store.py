"""Uploading a real exported model to the cluster's MinIO (tests/cluster_fixtures: a MinIO server
built from its Go module, on loopback; the `minio` client talks to it over the wire), no Docker.
Each test uses its own bucket: the session's MinIO is shared."""
from __future__ import annotations

import dataclasses
import secrets

import pytest
from fraud.artifact_store import S3Settings, artifact_prefix, missing_under, s3_client, upload_artifact
from minio.error import S3Error

pytestmark = pytest.mark.integration


@pytest.fixture
def bucket() -> str:
    return f"fraud-models-{secrets.token_hex(4)}"


def test_settings_come_from_the_secret_env_vars():
    with pytest.raises(ValueError, match="AWS_SECRET_ACCESS_KEY"):
        S3Settings.from_env({"S3_ENDPOINT": "minio-service.kubeflow:9000", "AWS_ACCESS_KEY_ID": "x"})
    settings = S3Settings.from_env({"S3_ENDPOINT": "http://minio-service.kubeflow:9000",
                                    "AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "s3cr3t-value"})
    assert (settings.endpoint, settings.secure) == ("minio-service.kubeflow:9000", False)
    assert "s3cr3t-value" not in repr(settings)
    assert S3Settings.from_env({"S3_ENDPOINT": "s3.example:443", "AWS_ACCESS_KEY_ID": "id",
                                "AWS_SECRET_ACCESS_KEY": "key", "S3_USE_HTTPS": "0"}).secure is False


def test_upload_artifact_to_s3_returns_its_uri(s3_settings, bucket, tiny_run, tmp_path):
    uri = upload_artifact(tiny_run.v2, bucket, settings=s3_settings)
    prefix = artifact_prefix(tiny_run.v2)
    assert uri == f"s3://{bucket}/{prefix}" and prefix.startswith("fraud-detector/v2-")
    assert upload_artifact(tiny_run.v2, bucket, settings=s3_settings) == uri  # same content, same URI

    s3 = s3_client(s3_settings)
    stored = sorted(o.object_name for o in s3.list_objects(bucket, prefix=prefix + "/", recursive=True))
    local = sorted(f"{prefix}/{p.relative_to(tiny_run.v2).as_posix()}" for p in tiny_run.v2.rglob("*") if p.is_file())
    assert stored == local
    assert f"{prefix}/fraud-detector/2/model.savedmodel/saved_model.pb" in stored
    assert f"{prefix}/feature_contract.json" in stored
    s3.fget_object(bucket, f"{prefix}/fraud-detector/2/metadata.json", str(tmp_path / "m.json"))
    assert (tmp_path / "m.json").read_bytes() == (tiny_run.v2 / "fraud-detector/2/metadata.json").read_bytes()
    assert artifact_prefix(tiny_run.v1) != prefix
    assert missing_under(uri, s3_settings) == ""


def test_missing_under_names_what_the_storage_initializer_would_fail_on(s3_settings, bucket, tiny_run):
    assert missing_under(f"s3://{bucket}/fraud-detector/v2", s3_settings) == (
        f"storage URI s3://{bucket}/fraud-detector/v2: NoSuchBucket (The specified bucket does not exist)")
    uri = upload_artifact(tiny_run.v1, bucket, settings=s3_settings)
    assert missing_under(f"s3://{bucket}/fraud-detector/v0", s3_settings) == (
        f"storage URI s3://{bucket}/fraud-detector/v0: no objects under it")
    # a prefix is a directory: the first characters of an existing prefix are not enough
    assert missing_under(uri[:-3], s3_settings) == f"storage URI {uri[:-3]}: no objects under it"
    assert missing_under("gs://models/v1", s3_settings) == "storage URI 'gs://models/v1' is not an s3:// URI"


def test_wrong_credentials_get_minios_own_errors(s3_settings, bucket, tiny_run):
    wrong_secret = dataclasses.replace(s3_settings, secret_key=secrets.token_hex(20))
    with pytest.raises(S3Error) as raised:
        upload_artifact(tiny_run.v1, bucket, settings=wrong_secret)
    assert raised.value.code == "SignatureDoesNotMatch"
    assert raised.value.message == ("The request signature we calculated does not match the signature you provided. "
                                    "Check your key and signing method.")
    unknown_key = dataclasses.replace(s3_settings, access_key=f"nobody-{secrets.token_hex(4)}")
    assert missing_under(f"s3://{bucket}/x", unknown_key) == (
        f"storage URI s3://{bucket}/x: InvalidAccessKeyId (The Access Key Id you provided does not exist in our records.)")
    assert not s3_client(s3_settings).bucket_exists(bucket)  # nothing was created with the wrong keys
