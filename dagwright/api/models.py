"""Request and response bodies of the REST API (the seed's shapes), mapped
onto the same core models the operator and the CRDs use."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StringConstraints
from pydantic.alias_generators import to_camel

from dagwright.core.spec import (
    DNS_LABEL,
    Capability,
    Shutdown,
)
from dagwright.names import WORKFLOW_LABEL
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
    labels: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def of(cls, namespace: str, obj: Mapping[str, Any]) -> ExecutionSummary:
        status = obj.get("status") or {}
        labels = obj["metadata"].get("labels") or {}
        return cls(
            execution_id=obj["metadata"]["name"],
            namespace=namespace,
            workflow_id=labels.get(WORKFLOW_LABEL),
            phase=status.get("phase"),
            progress=status.get("progress", ""),
            failed=(status.get("counts") or {}).get("failed", 0),
            priority=(obj.get("spec") or {}).get("priority", 5),
            started_at=status.get("startedAt"),
            finished_at=status.get("finishedAt"),
            message=status.get("message", ""),
            labels=dict(labels),
        )


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
    created_at: float | None = Field(
        None, description="When the operator created the current attempt's pod (epoch seconds)."
    )
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


class ExecutionGraph(ApiModel):
    execution_id: str
    namespace: str
    phase: str | None = None
    names: list[str] = Field(description="Jobs in topological order (finally jobs last).")
    deps: list[list[int]] = Field(description="Each job's dependencies, as indexes into names.")
    phases: list[str]
    attempts: list[int]
    sweeps: dict[str, list[int]] = Field(description="Each sweep's members, as indexes.")
    finally_jobs: list[int] = Field(default_factory=list)
    state: ExecutionState = Field(description="The execution as GET /execute/{id} shows it.")


class EventRecord(ApiModel):
    type: str
    reason: str
    message: str
    count: int = 1
    at: str | None = None


class JobView(JobDetail):
    """One job's state with what it runs."""

    image: str
    command: list[str] | None = None
    args: list[str] | None = None
    config: dict[str, Any] | None = None
    depends_on: list[str] = Field(default_factory=list)
    requires: list[str] = Field(default_factory=list)
    retries: int
    infra_retries: int
    declared_outputs: list[str] = Field(default_factory=list)
    when: str | None = None
    item: Any = None
    finally_: str | None = Field(None, alias="finally")


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


class PoolDetail(ApiModel):
    name: str
    capabilities: list[str]
    max_concurrency: int
    nodes: int = 0
    ready_nodes: int = 0
    slots: int = 0
    slots_used: int = 0
    queued: int = 0
    queued_by_priority: dict[str, int] = Field(
        default_factory=dict, description="Jobs waiting for a slot, by priority (10 first)."
    )
    desired_nodes: int | None = None
    autoscaling: dict[str, Any] | None = None
    scale_reason: str = ""
    members: list[dict[str, Any]] = Field(default_factory=list)
    healthy: bool = True
    problems: list[str] = Field(default_factory=list)


class PoolList(ApiModel):
    paused: bool
    pools: list[PoolDetail]


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
