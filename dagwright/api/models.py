"""Request and response bodies of the REST API (the seed's shapes), mapped
onto the same core models the operator and the CRDs use."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StringConstraints
from pydantic.alias_generators import to_camel

from dagwright.core.spec import (
    DNS_LABEL,
    Capability,
    Shutdown,
)
from dagwright.version import VERSION


class ApiModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ProblemBody(BaseModel):
    """Every error answer: a sentence for people and, when useful, details."""

    error: str = Field(description="What went wrong, in one sentence.")
    detail: Any = Field(None, description="Specifics: failing fields, the cycle, a retry delay.")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"error": "invalid DAG", "detail": ["cycle: a -> b -> a"]},
                {"error": "execution nightly-1a2b3c not found in default"},
            ]
        }
    )


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for error answers, all shaped as ProblemBody."""
    return {code: {"model": ProblemBody} for code in codes}


class ExecutionCreated(ApiModel):
    execution_id: str
    namespace: str
    workflow_id: str
    jobs: int


class ExecutionState(ApiModel):
    execution_id: str
    namespace: str
    workflow_id: str | None = None
    phase: str | None = None
    message: str = ""
    progress: str = ""
    counts: dict[str, int] = Field(default_factory=dict)
    jobs: list[dict[str, Any]] | None = None
    suspended: bool = False
    shutdown: Shutdown | None = None


class ExecutionSummary(ApiModel):
    """One execution in a list."""

    execution_id: str
    namespace: str
    workflow_id: str | None = None
    phase: str | None = None
    progress: str = ""
    failed: int = 0
    priority: int = 5
    started_at: str | None = None
    finished_at: str | None = None
    message: str = ""


class ExecutionList(ApiModel):
    items: list[ExecutionSummary]
    continue_: str | None = Field(
        None,
        alias="continue",
        description="Pass as ?continue= for the next page; null on the last page.",
    )


class AttemptRecord(ApiModel):
    attempt: int
    outcome: str = Field(
        description="succeeded, user_failure, timeout, infrastructure_failure or cancelled"
    )
    pod: str | None = None
    node: str | None = None
    pool: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    message: str = ""


class JobDetail(ApiModel):
    """A job's state as the operator keeps it (Redis), at any DAG size."""

    name: str
    phase: str
    attempt: int = 0
    failures: int = Field(0, description="Failed attempts counted against retries (user failures).")
    infra_failures: int = Field(0, description="Attempts lost to the infrastructure.")
    pool: str | None = None
    node: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    duration_seconds: float | None = None
    exit_code: int | None = None
    message: str = ""
    progress: Any = Field(None, description="The last progress the job's runtime reported.")
    checkpoint_step: int | None = None
    checkpoint_path: str | None = None
    outputs: dict[str, Any] | None = Field(
        None, description="The outputs of the attempt that succeeded (or of the cached run)."
    )
    attempts: list[AttemptRecord] = Field(
        default_factory=list, description="Its ended attempts, oldest first (the last 20)."
    )


class JobList(ApiModel):
    items: list[JobDetail]
    total: int = Field(description="Jobs matching the filter, on every page.")
    continue_: str | None = Field(None, alias="continue")


class Deleted(ApiModel):
    execution_id: str
    namespace: str
    deleted: bool = True


class CancelRequest(ApiModel):
    mode: Shutdown = Shutdown.TERMINATE


class WorkerMetadata(ApiModel):
    cpu_cores: StrictFloat | None = Field(None, ge=0, le=100_000)
    memory_gb: StrictFloat | None = Field(None, ge=0, le=1_000_000, alias="memoryGB")
    version: Annotated[str, StringConstraints(max_length=64)] | None = None


class WorkerRegistration(ApiModel):
    worker_id: Annotated[str, StringConstraints(pattern=DNS_LABEL, min_length=1, max_length=63)]
    hostname: Annotated[str, StringConstraints(min_length=1, max_length=253)]
    capabilities: list[Capability] = Field(default_factory=list, max_length=32)
    max_concurrency: StrictInt = Field(1, ge=1, le=1000)
    metadata: WorkerMetadata = Field(default_factory=WorkerMetadata)
    heartbeat_timeout_seconds: StrictFloat | StrictInt | None = Field(
        None,
        ge=1,
        le=3600,
        description="Silence after which its node is lost; the API's default (90 s) if unset. "
        "The node agent registers with 10 s.",
    )


class WorkerHeartbeat(ApiModel):
    current_load: StrictInt = Field(0, ge=0, le=100_000)


class Worker(ApiModel):
    worker_id: str
    source: str = Field(description="registered (REST) or pool (a node of a WorkerPool)")
    hostname: str
    capabilities: list[str]
    max_concurrency: int
    current_load: int = 0
    healthy: bool
    last_heartbeat: float | None = None
    pool: str | None = None
    schedulable: bool = Field(
        True, description="Whether dagwright places jobs on it (a WorkerPool's node, not draining)."
    )
    reason: str = Field("", description="Why it is not schedulable.")
    draining: bool = Field(False, description="Unregistered: no new jobs, running ones finish.")


class PoolQueue(ApiModel):
    pool: str
    queued: int
    slots: int
    slots_used: int


class QueueStats(ApiModel):
    paused: bool
    queued: int
    pools: list[PoolQueue]
    executions: dict[str, int] = Field(description="DAGExecutions by phase.")


class Health(ApiModel):
    status: str
    version: str = Field(VERSION, description="dagwright's version (the API process's).")
    redis: bool
    kubernetes: bool
    operators: int
    workers: dict[str, int]
    problems: list[str] = Field(default_factory=list)


class AttemptHeartbeat(ApiModel):
    """What a job's runtime sends while the attempt runs."""

    interval_seconds: StrictFloat | StrictInt = Field(
        30, gt=0, le=3600, description="How often it sends one: missing three is silence."
    )
    progress: dict[str, Any] = Field(
        default_factory=dict, max_length=16, description="The job's latest report_progress."
    )


class AttemptCheckpoint(ApiModel):
    """A checkpoint the job wrote to its own storage: where, and after which step."""

    path: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    step: StrictInt | None = Field(None, ge=0, le=2**53)


class AttemptAccepted(ApiModel):
    execution_id: str
    job: str
    attempt: int


class LatestCheckpoint(ApiModel):
    path: str
    step: int | None = None
    attempt: int | None = Field(None, description="The attempt that saved it.")
