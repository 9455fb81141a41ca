"""Model artifacts to S3-compatible storage (MinIO), where KServe's storage initializer pulls them.

The deploy step uploads the exported artifact root (`<root>/fraud-detector/<n>/model.savedmodel`,
`config.pbtxt`, `metadata.json`, `feature_contract.json`) and uses the returned `s3://` URI as
the predictor's and transformer's `storageUri`.

Settings come from environment variables, named as KServe's storage initializer names them, so
one Kubernetes Secret (manifests/base/s3-secret.template.yaml) serves both the pipeline step
(`kfp.kubernetes.use_secret_as_env(task, secret_name="fraud-detector-s3",
secret_key_to_env={k: k for k in S3_ENV_VARS})`) and KServe (through its annotations):

    S3_ENDPOINT            host:port of the S3 API (a scheme, if given, decides https)   required
    AWS_ACCESS_KEY_ID      access key                                                   required
    AWS_SECRET_ACCESS_KEY  secret key                                                   required
    S3_USE_HTTPS           "1"/"0" (default "1"; "0" for an in-cluster MinIO on :9000)
    S3_VERIFY_SSL          "1"/"0" (default "1")
    AWS_REGION             bucket region (optional; MinIO ignores it)
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fraud.export import MODEL_NAME, read_metadata

S3_ENV_VARS = ("S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "S3_USE_HTTPS",
               "S3_VERIFY_SSL", "AWS_REGION")
REQUIRED_ENV_VARS = S3_ENV_VARS[:3]
IO_TIMEOUT_S = 60.0


def _flag(text: str, default: bool) -> bool:
    return default if text == "" else text.strip().lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class S3Settings:
    endpoint: str  # host:port, no scheme
    access_key: str
    secret_key: str = field(repr=False)
    secure: bool = True
    verify_tls: bool = True
    region: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> S3Settings:
        """From the variables above (an entry point's `Settings().model_dump()`); ValueError names
        any that are missing."""
        missing = [name for name in REQUIRED_ENV_VARS if not environ.get(name)]
        if missing:
            raise ValueError(f"S3 settings missing from the environment: {', '.join(missing)} (set them from the "
                             f"Secret with kfp.kubernetes.use_secret_as_env, see fraud.artifact_store)")
        endpoint = environ["S3_ENDPOINT"].strip().rstrip("/")
        secure = _flag(environ.get("S3_USE_HTTPS", ""), True)
        if "://" in endpoint:
            scheme, endpoint = endpoint.split("://", 1)
            secure = scheme == "https"
        return cls(endpoint=endpoint, access_key=environ["AWS_ACCESS_KEY_ID"],
                   secret_key=environ["AWS_SECRET_ACCESS_KEY"], secure=secure,
                   verify_tls=_flag(environ.get("S3_VERIFY_SSL", ""), True),
                   region=environ.get("AWS_REGION") or None)


def s3_client(settings: S3Settings):
    import urllib3
    from minio import Minio

    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=10.0, read=IO_TIMEOUT_S),
        retries=urllib3.Retry(total=3, backoff_factor=0.5, status_forcelist=(500, 502, 503, 504)),
        cert_reqs="CERT_REQUIRED" if settings.verify_tls else "CERT_NONE")
    return Minio(settings.endpoint, access_key=settings.access_key, secret_key=settings.secret_key,
                 secure=settings.secure, region=settings.region, http_client=http)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def artifact_prefix(root: str | Path, model_name: str = MODEL_NAME) -> str:
    """`<model>/<version>-<digest>`: the same content always gets the same prefix, so a rerun of the
    pipeline with the same candidate yields the same storageUri (and the deploy step changes nothing)."""
    root = Path(root)
    digest = hashlib.sha256()
    for path in _files(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return f"{model_name}/{read_metadata(root)['model_version']}-{digest.hexdigest()[:12]}"


def upload_artifact(root: str | Path, bucket: str, prefix: str | None = None,
                    *, settings: S3Settings, create_bucket: bool = True) -> str:
    """Upload every file under `root` to `s3://bucket/prefix/…` keeping relative paths; returns the
    `s3://bucket/prefix` URI for `storageUri`. `prefix` defaults to `artifact_prefix(root)`."""
    root = Path(root)
    files = _files(root)
    if not files:
        raise FileNotFoundError(f"{root}: no files to upload")
    prefix = (prefix or artifact_prefix(root)).strip("/")
    s3 = s3_client(settings)
    if create_bucket and not s3.bucket_exists(bucket):
        s3.make_bucket(bucket)
    for path in files:
        s3.fput_object(bucket, f"{prefix}/{path.relative_to(root).as_posix()}", str(path))
    return f"s3://{bucket}/{prefix}"


def missing_under(uri: str, settings: S3Settings) -> str:
    """"" when `s3://bucket/prefix` holds at least one object, else one line saying what is missing
    (what KServe's storage initializer would fail on)."""
    from minio.error import S3Error

    if not uri.startswith("s3://"):
        return f"storage URI {uri!r} is not an s3:// URI"
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    try:
        objects = s3_client(settings).list_objects(
            bucket, prefix=prefix.rstrip("/") + "/", recursive=True)
        if next(iter(objects), None) is not None:
            return ""
    except S3Error as error:
        return f"storage URI {uri}: {error.code} ({error.message})"
    return f"storage URI {uri}: no objects under it"
