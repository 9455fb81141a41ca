"""Everything fraud-rollout reads from the environment, in one pydantic-settings object.

Built once at an entry point (`Settings()`) and passed in; nothing reads `os.environ` elsewhere.
Names are the ones the surrounding systems already use, so one Kubernetes Secret or env file
serves MLflow, KServe's storage initializer and us alike. Credentials only ever come from here
(a Secret mounted as environment variables), never from a file in the repository.
"""
from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """The environment of a fraud-rollout process."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=True, extra="ignore", frozen=True)

    MLFLOW_TRACKING_URI: str = ""
    """MLflow server or database; empty means SQLite under the local state dir."""
    STORAGE_URI: str = ""
    """Where a KServe container finds its model: a local path, or remote (pulled into /mnt/models)."""
    S3_ENDPOINT: str = ""
    """host:port of the S3 API (MinIO); a scheme, if given, decides https."""
    AWS_ACCESS_KEY_ID: str = ""
    """S3 access key (from the Secret fraud-detector-s3)."""
    AWS_SECRET_ACCESS_KEY: str = Field(default="", repr=False)
    """S3 secret key (from the Secret fraud-detector-s3); never printed."""
    S3_USE_HTTPS: str = ""
    """"1"/"0"; default "1" ("0" for an in-cluster MinIO on :9000)."""
    S3_VERIFY_SSL: str = ""
    """"1"/"0"; default "1"."""
    AWS_REGION: str = ""
    """Bucket region (optional; MinIO ignores it)."""
    KUBECONFIG: str = ""
    """kubeconfig file(s) for the kserve target, when not running in a pod."""
    KUBERNETES_SERVICE_HOST: str = ""
    """Set by Kubernetes inside a pod: use the pod's service account."""
    FRAUD_ROLLOUT_SPLIT_SEED: str = ""
    """Local runtime: an integer seeding the transformer's traffic split and shadow sampling, so a
    sequential replay routes the same rows the same way every run (Knative's split has no seed)."""

    PREDICTION_LOG_STORE_URL: str = Field(default="", repr=False)
    """The prediction-log sink's store when `--store` is absent (from a Secret: a PostgreSQL URL
    may carry a password); never printed."""

    @property
    def in_cluster(self) -> bool:
        return bool(self.KUBERNETES_SERVICE_HOST)
