"""Operator settings, from ``DAGWRIGHT_*`` environment variables."""

from __future__ import annotations

import os
import socket
import uuid

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from dagwright.core.policy import JobPolicy
from dagwright.version import WORKER_IMAGE


def _default_instance() -> str:
    # Unique per process: a restarted operator is a new owner (new epoch).
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}-{uuid.uuid4().hex[:6]}"


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DAGWRIGHT_")

    redis_url: str = "redis://127.0.0.1:6379/0"
    instance_id: str = Field(default_factory=_default_instance)
    namespaces: list[str] = Field(default_factory=list, description="Watch only these; empty: all.")
    # Like Kubernetes leader election (15 s lease, renewed every 2-5 s): a
    # stalled owner's executions go on elsewhere within it.
    lease_seconds: float = Field(15.0, gt=0.5, description="Ownership lease of one execution.")
    finished_ttl_seconds: int = Field(
        7 * 24 * 3600, ge=60, description="Redis state of finished executions."
    )
    job_policy: JobPolicy = Field(
        default_factory=JobPolicy,
        description="What jobs may use in pools without a policy of their own (JSON).",
    )
    template_namespace: str | None = Field(
        None,
        description="JobTemplates here serve every namespace (the install's own job types); "
        "one of the same name in an execution's namespace comes first.",
    )
    # Jobs in this image (any tag) run under its runtime entrypoint: their
    # command line is passed as args so the entrypoint is kept.
    worker_image: str = WORKER_IMAGE
    job_api_url: str | None = Field(
        None,
        description="The REST API's URL as job pods reach it: the worker runtime sends "
        "heartbeats and checkpoints there, with a token projected into the pod; unset: jobs "
        "run without (no heartbeat-loss detection, no checkpoints).",
    )
    # Events per job transition are useful on small DAGs and a flood on large ones.
    job_events_max_jobs: int = 500
    status_interval_seconds: float = Field(
        1.0, ge=0.0, description="Least time between status patches."
    )
    # A status patch makes the API server decode, validate, diff (managedFields)
    # and re-encode the whole object, spec included: about 0.5 ms of its CPU
    # per job per patch (measured: 0.45 s at 1,000 jobs, 1.0 s at 2,000). So a
    # DAG of N jobs patches at most every max(1, N / this) status intervals:
    # with 200, one big DAG's patches cost about a tenth of an API server core.
    status_interval_jobs: int = Field(
        200, ge=1, description="DAG size beyond which status patches slow down in proportion."
    )
    # Likewise for many executions: an instance owning N of them above this
    # patches each one's progress every N / this intervals, so it sends about
    # this many progress patches per interval in all (phase changes go out at
    # once). 500 five-job DAGs made nine status patches each, a fifth of the
    # API server's work.
    status_interval_executions: int = Field(
        100,
        ge=1,
        description="Executions owned beyond which status patches slow down in proportion.",
    )
    # A pass over a DAG costs O(jobs) (20-30 ms at 10,000 jobs here); the
    # next one waits this many times as long, so a big DAG's runner uses at
    # most 1 / (1 + this) of a core and batches the events of the wait.
    # Measured on 3,000 jobs in chains of 50: 1 -> 3 cut the operator's CPU
    # by 38 % and the wall time by 17 % (the API server, sharing the cores,
    # got them); on a 2,000-job layered DAG p50 scheduling latency rose from
    # 0.23-0.24 s to 0.29-0.35 s.
    pass_spacing: float = Field(
        3.0,
        ge=0.0,
        description="Wait between two passes over an execution, in multiples of the last "
        "pass's compute time: higher saves CPU on big DAGs, lower cuts scheduling latency.",
    )
    # Most API requests (pod creates and deletes, patches) in flight at once.
    # The Python client has no QPS limiter: this is the throttle.
    kube_concurrency: int = Field(32, ge=1, le=1000)
    health_port: int = Field(8081, description="kopf liveness endpoint /healthz; 0 disables.")
    metrics_port: int = Field(9090, description="Prometheus /metrics; 0 disables.")
    heartbeat_seconds: float = Field(
        5.0, gt=0, description="How often the operator reports itself alive in Redis."
    )
    job_heartbeat_timeout_seconds: float = Field(
        90.0,
        gt=0,
        description="A running job whose runtime stopped heartbeating this long is lost.",
    )
    job_start_timeout_seconds: float = Field(
        600.0,
        gt=0,
        description="Longest a job's pod may take to start running (unschedulable, pulling "
        "its image...) before the attempt fails; a job's startTimeout overrides it.",
    )
    pool_interval_seconds: float = Field(
        5.0, gt=0, description="How often pool status and scaling are updated."
    )
    log_format: str = Field("text", pattern="^(text|json)$")
    # Test-only: crash at a named point ("after-save", "after-create").
    failpoint: str | None = None
    priority_classes: bool = Field(
        True, description="Create and use dagwright-priority-N PriorityClasses."
    )
