"""Request and response bodies of the REST API (the seed's shapes), mapped
onto the same core models the operator and the CRDs use."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StringConstraints
from pydantic.alias_generators import to_camel

from dagwright.core.spec import (
    DNS_LABEL,
    MAX_DEPENDENCIES,
    MAX_JOBS,
    Capability,
    DAGExecutionSpec,
    DnsLabel,
    JobSettings,
    Priority,
    Shutdown,
)
from dagwright.crdgen import GROUP, VERSION

DISPLAY_NAME = "dagwright.io/display-name"
WORKFLOW_LABEL = "dagwright.io/workflow"


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


class ExecuteJob(JobSettings):
    """A job as the seed's clients send it; any DAGExecution job field may be added."""

    id: DnsLabel = Field(description="Unique id of the job in the workflow (a DNS label).")
    name: Annotated[str, StringConstraints(max_length=253)] | None = Field(
        None, description="Display name."
    )
    type: Annotated[str, StringConstraints(max_length=63)] | None = None
    depends_on: list[DnsLabel] = Field(default_factory=list, max_length=MAX_DEPENDENCIES)
    config: dict[str, Any] | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    priority: Priority | None = None


class ExecuteRequest(ApiModel):
    workflow_id: DnsLabel = Field(description="Workflow the execution belongs to (a DNS label).")
    execution_id: Annotated[str, StringConstraints(pattern=DNS_LABEL, max_length=63)] | None = (
        Field(None, description="Name of the DAGExecution; generated from workflowId when absent.")
    )
    namespace: DnsLabel | None = None
    jobs: list[ExecuteJob] = Field(min_length=1, max_length=MAX_JOBS)
    parallelism: StrictInt = Field(10, ge=1, le=MAX_JOBS)
    priority: Priority = 5
    defaults: JobSettings = Field(default_factory=JobSettings)

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "workflowId": "nightly-train",
                    "jobs": [
                        {
                            "id": "prep",
                            "name": "Preprocess",
                            "type": "preprocessing",
                            "requires": ["cpu"],
                        },
                        {
                            "id": "train",
                            "type": "training",
                            "dependsOn": ["prep"],
                            "requires": ["gpu"],
                            "config": {"epochs": 10},
                        },
                    ],
                    "parallelism": 4,
                    "defaults": {"image": "ghcr.io/dagwright/worker:0.1.0"},
                }
            ]
        }
    )

    def execution_name(self) -> str:
        if self.execution_id:
            return self.execution_id
        return f"{self.workflow_id[:56]}-{secrets.token_hex(3)}"

    def to_spec(self) -> DAGExecutionSpec:
        jobs = []
        for job in self.jobs:
            fields = job.model_dump(by_alias=True, exclude_none=True, exclude={"id", "name"})
            if job.name:
                fields["annotations"] = {**fields.get("annotations", {}), DISPLAY_NAME: job.name}
            jobs.append({"name": job.id, **fields})
        return DAGExecutionSpec.model_validate(
            {
                "jobs": jobs,
                "parallelism": self.parallelism,
                "priority": self.priority,
                "defaults": self.defaults.model_dump(by_alias=True, exclude_none=True),
            }
        )

    def to_manifest(self) -> dict[str, Any]:
        """The DAGExecution this request creates (the CLI submits the same object)."""
        spec = self.to_spec()
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "DAGExecution",
            "metadata": {
                "name": self.execution_name(),
                "labels": {WORKFLOW_LABEL: self.workflow_id},
            },
            "spec": spec.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True),
        }


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
    redis: bool
    kubernetes: bool
    operators: int
    workers: dict[str, int]
    problems: list[str] = Field(default_factory=list)
