"""Per-job state and what the operator observes of pods, as plain values."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from typing import Any


class JobPhase(StrEnum):
    WAITING = "Waiting"  # dependencies not yet succeeded
    READY = "Ready"  # may start when parallelism allows
    STARTING = "Starting"  # pod created, not yet running
    RUNNING = "Running"
    BACKOFF = "Backoff"  # failed attempt; next attempt after a delay
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"  # retries exhausted
    SKIPPED = "Skipped"  # an upstream job failed or was cancelled, or its `when` was false
    CANCELLED = "Cancelled"
    CACHED = "Cached"  # an earlier execution's run of it was reused (no pod)

    # Plain attributes, not properties: read for every job on every pass.
    terminal: bool
    done: bool  # succeeded, or its result reused: dependents may start

    def __init__(self, value: str) -> None:
        self.terminal = value in ("Succeeded", "Failed", "Skipped", "Cancelled", "Cached")
        self.done = value in ("Succeeded", "Cached")


class ExecutionPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def terminal(self) -> bool:
        return self in (ExecutionPhase.SUCCEEDED, ExecutionPhase.FAILED, ExecutionPhase.CANCELLED)


# The phases of an execution that has ended, as the status spells them.
ENDED_PHASES = frozenset(p.value for p in ExecutionPhase if p.terminal)


@dataclass(frozen=True)
class JobState:
    phase: JobPhase = JobPhase.WAITING
    attempt: int = 0  # number of the latest attempt started; 0 = none yet
    failures: int = 0  # failed attempts, counted against the job's retries
    not_before: float = 0.0  # in BACKOFF: earliest start of the next attempt
    ready_at: float | None = None  # when the job last became ready (scheduling latency)
    created_at: float | None = None  # when the current attempt's pod was created
    started_at: float | None = None  # when the current attempt started running
    finished_at: float | None = None
    exit_code: int | None = None
    message: str = ""
    pool: str | None = None  # WorkerPool the current attempt runs in (holds a slot there)
    node: str | None = None  # node of that slot
    infra_failures: int = 0  # attempts lost to the infrastructure (not the job's retries)
    avoid: tuple[str, ...] = ()  # nodes that lost an attempt of this job
    # The current attempt's runtime has heartbeated: from then on its silence
    # is watched even once its heartbeat key has expired.
    heartbeats: bool = False
    # The current attempt was given up because its node stopped reporting,
    # and its pod was left alone: the node may only be cut off from the
    # control plane (an API server or etcd outage looks the same), and a
    # delete would kill a run that is fine. If it ends well after all, that
    # is the job's result; the next attempt waits until it is gone.
    left_running: bool = False
    # The outputs of the attempt that succeeded (or of the cached run).
    outputs: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """Compact: fields at their default are left out (10,000 of these live in Redis)."""
        defaults = _DEFAULT_STATE
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) != getattr(defaults, f.name)
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobState:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "phase" in values:
            values["phase"] = JobPhase(values["phase"])
        if "avoid" in values:
            values["avoid"] = tuple(values["avoid"])
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_DEFAULT_STATE = JobState()


@dataclass(frozen=True)
class Slot:
    """A job slot granted in a pool, on one of its nodes."""

    pool: str
    node: str | None = None


class PodPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"

    terminal: bool

    def __init__(self, value: str) -> None:
        self.terminal = value in ("Succeeded", "Failed")


@dataclass(frozen=True)
class PodObservation:
    """What the operator last saw of one attempt's pod."""

    job: str
    attempt: int
    phase: PodPhase
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    reason: str = ""
    deleting: bool = False
    node: str | None = None
    node_lost: bool = False  # its node is NotReady or Unknown
    node_gone: bool = False  # its node object was deleted: the machine is confirmed gone
    # Its node's registered worker stopped heartbeating: the machine says it
    # is lost (not only the control plane). Its attempt is replaced at once;
    # if it still runs somewhere, its reports are refused (fenced by attempt).
    node_silent: bool = False
    heartbeat_at: float | None = (
        None  # last heartbeat of this attempt's job runtime, if it sends any
    )
    pool: str | None = None  # the WorkerPool it was placed in
    # Why it is not running yet: the scheduler's or the kubelet's reason
    # ("Unschedulable: 0/3 nodes are available...", "ImagePullBackOff: ...").
    waiting: str = ""
    unschedulable_since: float | None = None  # the scheduler's verdict, since when
    name: str = ""  # the pod's name and UID: deletes are preconditioned on the UID
    uid: str = ""
    # The pod is gone; this is its last state as the deletion reported it (a
    # pod deleted before we saw it run may have run: its phase says so).
    removed: bool = False
    # The container's termination message: the job's outputs, as JSON.
    message: str = ""

    @property
    def alive(self) -> bool:
        """Could a container of this pod still be running?"""
        return (
            not self.phase.terminal
            and not self.node_gone
            and not self.node_silent
            and not self.removed
        )
