"""The DAGExecution status a person reads with ``kubectl get`` / ``describe``."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from dagwright.core.spec import Model
from dagwright.core.state import ExecutionPhase, JobPhase

# Per-job detail is kept in the status only up to this many jobs: etcd refuses
# objects over ~1.5 MB, so large DAGs keep it in Redis and show a summary.
MAX_JOBS_IN_STATUS = 200


class Condition(Model):
    type: str
    status: Annotated[str, StringConstraints(pattern=r"^(True|False|Unknown)$")]
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None


class JobStatus(Model):
    name: str
    phase: JobPhase
    attempt: int = 0
    failures: int = 0
    infra_failures: int = 0
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    message: str = ""


class JobCounts(Model):
    total: int = 0
    waiting: int = 0
    ready: int = 0
    starting: int = 0
    running: int = 0
    backoff: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    cancelled: int = 0


class JobRecord(Model):
    """Finished jobs, durable beyond Redis and pods (``dagwright.core.record``)."""

    jobs: str = Field("", description="Digest of the job names the record is for.")
    outcomes: str = Field("", description="Two bits per job in spec order, base64.")


class DAGExecutionStatus(Model):
    phase: ExecutionPhase | None = None
    message: str = ""
    progress: str = Field("", description="Finished jobs / total, e.g. 3/10.")
    counts: JobCounts = Field(default_factory=JobCounts)
    started_at: str | None = None
    finished_at: str | None = None
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    jobs: list[JobStatus] | None = Field(
        None, description=f"Per-job detail, for DAGs of at most {MAX_JOBS_IN_STATUS} jobs."
    )
    record: JobRecord | None = Field(
        None,
        description="The operator's record of finished jobs; a job recorded as succeeded "
        "never runs again.",
    )


class PoolNode(Model):
    name: str
    ready: bool
    slots_used: int = 0
    draining: bool = False
    last_heartbeat: str | None = None


class WorkerPoolStatus(Model):
    nodes: int = 0
    ready_nodes: int = 0
    slots: int = 0
    slots_used: int = 0
    utilization: str = Field("", description="slotsUsed/slots as a percentage.")
    queued: int = 0
    desired_nodes: int | None = None
    scale_reason: str = ""
    members: list[PoolNode] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)
