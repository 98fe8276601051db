"""The DAGExecution status a person reads with ``kubectl get`` / ``describe``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from dagwright.core import record as job_record
from dagwright.core.podspec import Model
from dagwright.core.state import ExecutionPhase, JobPhase, JobState

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
    cached: int = 0


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
    retried: int = Field(0, description="The spec.retry this run has applied.")
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


def iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if ts else None


def condition(kind: str, ok: bool, reason: str, message: str, generation: int | None) -> Condition:
    return Condition(
        type=kind,
        status="True" if ok else "False",
        reason=reason,
        message=message,
        observed_generation=generation,
    )


def carry_transitions(
    conditions: Sequence[Condition], previous: Sequence[Mapping[str, Any]], now: float
) -> list[Condition]:
    """``conditions`` with their lastTransitionTime: the previous one's while
    its status is unchanged, else ``now`` (Kubernetes API conventions)."""
    before = {c.get("type"): c for c in previous if isinstance(c, Mapping)}
    out = []
    for cond in conditions:
        old = before.get(cond.type)
        if old is not None and old.get("status") == cond.status and old.get("lastTransitionTime"):
            since = str(old["lastTransitionTime"])
        else:
            since = iso(now) or ""
        out.append(cond.model_copy(update={"last_transition_time": since}))
    return out


def summarize(
    *,
    names: Sequence[str],
    jobs: Mapping[str, JobState],
    phase: ExecutionPhase,
    message: str,
    started_at: float | None,
    now: float,
    generation: int | None,
    unschedulable: str = "",
    previous: Sequence[Mapping[str, Any]] = (),
    retried: int = 0,
) -> DAGExecutionStatus:
    """What ``kubectl get`` and ``describe`` show of an execution, and the
    record of its finished jobs. ``names``: the spec's jobs, in its order;
    ``previous``: the conditions as last published (their transition times).

    Conditions: ``Completed`` turns True when the execution ends, whatever
    the outcome (``kubectl wait --for=condition=Completed``); ``Succeeded``
    is True once it succeeded, False once it failed or was cancelled."""
    counts = dict.fromkeys(JobCounts.model_fields, 0)
    finished = 0
    for state in jobs.values():
        counts[state.phase.value.lower()] += 1
        finished += state.phase.terminal
    counts["total"] = len(jobs)
    terminal = phase.terminal
    schedulable = not unschedulable
    return DAGExecutionStatus(
        phase=phase,
        message=unschedulable if unschedulable and not terminal else message,
        progress=f"{finished}/{len(jobs)}",
        counts=JobCounts(**counts),
        started_at=iso(started_at),
        finished_at=iso(now) if terminal else None,
        observed_generation=generation,
        retried=retried,
        conditions=carry_transitions(
            [
                condition("Valid", True, "Valid", f"{len(names)} jobs", generation),
                condition("Progressing", not terminal, phase.value, message, generation),
                condition("Completed", terminal, phase.value, message, generation),
                Condition(
                    type="Succeeded",
                    status=("True" if phase is ExecutionPhase.SUCCEEDED else "False")
                    if terminal
                    else "Unknown",
                    reason=phase.value,
                    message=message,
                    observed_generation=generation,
                ),
                condition(
                    "Schedulable",
                    schedulable,
                    "Schedulable" if schedulable else "NoWorkerPool",
                    unschedulable,
                    generation,
                ),
            ],
            previous,
            now,
        ),
        jobs=[
            JobStatus(
                name=name,
                phase=s.phase,
                attempt=s.attempt,
                failures=s.failures,
                infra_failures=s.infra_failures,
                started_at=iso(s.started_at),
                finished_at=iso(s.finished_at) if s.phase.terminal else None,
                exit_code=s.exit_code,
                message=s.message,
            )
            for name, s in jobs.items()
        ]
        if len(jobs) <= MAX_JOBS_IN_STATUS
        else None,
        record=JobRecord(**job_record.encode(names, {n: s.phase for n, s in jobs.items()})),
    )


def invalid(message: str, now: float, generation: int | None) -> DAGExecutionStatus:
    """The status of an execution whose spec cannot run."""
    conditions = [
        condition("Valid", False, "InvalidDAG", message, generation),
        condition("Completed", True, "InvalidDAG", message, generation),
        condition("Succeeded", False, "InvalidDAG", message, generation),
    ]
    return DAGExecutionStatus(
        phase=ExecutionPhase.FAILED,
        message=f"invalid DAG: {message}",
        finished_at=iso(now),
        observed_generation=generation,
        conditions=carry_transitions(conditions, (), now),
    )


def as_patch(status: DAGExecutionStatus, *fields: str) -> dict[str, Any]:
    """The status as a merge patch body: ``fields`` (camelCase) only, if given.
    A field at None is sent as null, so the patch clears it."""
    body = status.model_dump(by_alias=True, mode="json")
    if body.get("jobs") is None:
        body.pop("jobs", None)  # too many to list: left as is (and unused)
    return {k: body[k] for k in fields} if fields else body
