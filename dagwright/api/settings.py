"""The REST API's settings, from ``DAGWRIGHT_API_*`` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from dagwright.core.policy import JobPolicy

PREFIX = "/api/distributed"  # every route's path starts here


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DAGWRIGHT_API_", populate_by_name=True)

    host: str = "0.0.0.0"
    port: int = 8080
    redis_url: str = Field("redis://127.0.0.1:6379/0", validation_alias="DAGWRIGHT_REDIS_URL")
    namespace: str = "default"
    # A static bearer token with every right, for local use. Other callers
    # present Kubernetes tokens (TokenReview) and need RBAC (SubjectAccessReview).
    token: str | None = None
    # The operator's settings of the same names: the API checks an execution
    # as the operator will, so a bad one is a 422 rather than a Failed object.
    job_policy: JobPolicy = Field(
        default_factory=JobPolicy, validation_alias="DAGWRIGHT_JOB_POLICY"
    )
    template_namespace: str | None = Field(None, validation_alias="DAGWRIGHT_TEMPLATE_NAMESPACE")
    worker_heartbeat_timeout_seconds: float = 90.0
    max_body_bytes: int = 4 * 1024 * 1024
    # Per client (who it is once its token is known good, else its address):
    # sustained rate and burst.
    rate_per_second: float = 20.0
    rate_burst: int = 40
    # Addresses (or networks) of the reverse proxies whose X-Forwarded-For is
    # believed; from anyone else the header is ignored. Comma-separated.
    trusted_proxies: str = ""
