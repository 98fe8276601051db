"""The scheduling decision: a snapshot in, the next state and actions out.

``reconcile`` is pure and total: given what the operator knows of one
execution (job states, observed pods, the clock, the user's controls) it
returns the new job states, the side effects to perform (create or delete a
pod, record an event) and when it wants to be called again. The shell applies
the actions idempotently and persists the states; calling ``reconcile`` again
with the same inputs changes nothing.

Invariants (property-tested in tests/core):
- a job starts only when every dependency has succeeded (or was cached, or
  was skipped and the job allows that) and its ``when`` is true;
- a finally job starts only once every other job has ended, at most once per
  ending of the execution;
- a cached job never creates a pod; a job's outputs come only from the
  attempt that succeeded;
- never more than ``parallelism`` attempts of the execution are alive;
- an attempt never starts while the job's previous attempt may still be running;
- a job that succeeded never starts again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from operator import attrgetter

from dagwright.core import expr
from dagwright.core.failures import Failure, of_pod, retried
from dagwright.core.graph import Dag, Job
from dagwright.core.inputs import CacheHit, outcome, parse_outputs, resolver
from dagwright.core.spec import Finally, PodGCStrategy, Shutdown
from dagwright.core.state import ExecutionPhase, JobPhase, JobState, PodObservation, PodPhase, Slot

# A created pod the watch has not shown us after this long is created again
# (idempotent: AlreadyExists means it was there after all).
RECREATE_AFTER_SECONDS = 5.0
# Nodes a job avoids after losing attempts on them (the most recent ones).
MAX_AVOIDED_NODES = 8
# An attempt pinned to its slot's node that the scheduler finds no room on
# (another pod filled the node) is placed again after this long.
REPLACE_UNSCHEDULABLE_AFTER_SECONDS = 10.0
# What the kubelet reports of a pod that no wait will start.
_HOPELESS = frozenset({"InvalidImageName", "ErrImageNeverPull"})
_WAITING = "waiting to start: "


@dataclass(frozen=True)
class StartPod:
    job: str
    attempt: int
    pool: str | None = None
    avoid: tuple[str, ...] = ()  # nodes not to run on
    node: str | None = None  # the node its slot is on


@dataclass(frozen=True)
class DeletePod:
    job: str
    attempt: int
    reason: str
    # Remove the pod object at once (grace period 0): only when its node is
    # confirmed gone or its pool opted into forced failover.
    force: bool = False


@dataclass(frozen=True)
class Emit:
    """A Kubernetes Event on the execution."""

    reason: str
    message: str
    warning: bool = False


Action = StartPod | DeletePod | Emit


@dataclass(frozen=True)
class Refusal:
    """Why the API server (or the pool's policy) refused an attempt's pod."""

    reason: str
    # The same pod would be refused again (admission, policy): the job fails
    # now instead of retrying into the same answer.
    final: bool = False


@dataclass(frozen=True)
class Snapshot:
    dag: Dag
    jobs: Mapping[str, JobState]
    pods: Mapping[tuple[str, int], PodObservation]
    now: float
    parallelism: int
    suspend: bool = False
    shutdown: Shutdown | None = None
    # Capacity control: job -> pool for jobs granted a slot. None: unlimited
    # (no pools), every ready job may start within parallelism.
    admitted: Mapping[str, Slot] | None = None
    pod_gc: PodGCStrategy = PodGCStrategy.NEVER
    # Pools whose lost pods may be force-deleted as soon as their node is
    # NotReady (risking two copies if the node was only partitioned).
    forced_failover: frozenset[str] = frozenset()
    # A running attempt whose runtime heartbeated and then went silent this
    # long is lost (hung, or cut off) and is retried elsewhere.
    heartbeat_timeout: float = 90.0
    # Attempts whose pod the API server refused to create (not a conflict or
    # a throttle), with its reason: failed attempts, not pods still coming.
    refused: Mapping[tuple[str, int], Refusal] = field(default_factory=dict)
    # Longest a pod may take to start running, unless its job says otherwise.
    start_timeout: float = 600.0
    # Jobs whose outcome is durable outside Redis and pods (the status
    # record): only their finished pods may be collected. None: no such
    # record is kept (a local run), any finished pod may go.
    recorded: frozenset[str] | None = None
    # (namespace, name) of the execution: a failed job's message ends with
    # the command that shows its log. None: no such command (a local run).
    execution: tuple[str, str] | None = None
    # Cached jobs looked up (by the shell, as asked in ``Plan.lookups``):
    # a hit, or None for a miss.
    cache: Mapping[str, CacheHit | None] = field(default_factory=dict)


@dataclass
class Plan:
    jobs: dict[str, JobState]
    changed: set[str] = field(default_factory=set)
    actions: list[Action] = field(default_factory=list)
    phase: ExecutionPhase = ExecutionPhase.PENDING
    message: str = ""
    wake_at: float | None = None
    # Ready jobs that parallelism would let start but that hold no slot yet,
    # in start order: the shell asks the pools' queues to admit them.
    wants: list[str] = field(default_factory=list)
    # Ready cached jobs to look up before they may start.
    lookups: list[str] = field(default_factory=list)

    def set(self, name: str, state: JobState) -> None:
        if state != self.jobs[name]:
            self.jobs[name] = state
            self.changed.add(name)

    def wake(self, at: float) -> None:
        self.wake_at = at if self.wake_at is None else min(self.wake_at, at)


def reconcile(snap: Snapshot) -> Plan:
    # Every loop below runs once per job and pass (10,000 jobs is ~10 ms per
    # loop here): they skip early for jobs with nothing to look at.
    if list(snap.jobs) == list(snap.dag.jobs):  # the usual case, compared in C
        jobs = dict(snap.jobs)
    else:
        fresh = JobState()  # one default, not one per job and pass (frozen: shareable)
        jobs = {name: snap.jobs.get(name, fresh) for name in snap.dag.jobs}
    plan = Plan(jobs=jobs)
    pods = snap.pods
    for job in snap.dag.jobs.values():
        state = jobs[job.name]
        if state.phase.terminal:
            # Settled, unless its last pod still runs (_observe deletes it):
            # most jobs of a big DAG late in its run.
            if not state.attempt:
                continue
            pod = pods.get((job.name, state.attempt))
            if pod is None or pod.phase.terminal or pod.removed:
                continue
            _observe(snap, plan, job)
        elif state.attempt or state.phase in _IN_FLIGHT:
            # (Neither attempted nor in flight: no pod to look at.)
            _observe(snap, plan, job)
    _apply_shutdown(snap, plan)
    _propagate(snap, plan)
    _start(snap, plan)
    plan.phase, plan.message = _phase(snap, plan)
    plan.actions += collect_pods(snap, plan.phase, plan.jobs)
    return plan


def start_admitted(snap: Snapshot, plan: Plan) -> Plan:
    """``plan``, made by ``reconcile`` from a snapshot that differs from
    ``snap`` only by fewer admitted jobs, brought to what ``reconcile(snap)``
    returns: only the start decision depends on the admitted jobs, so only it
    is made again (the shell asks the pools' queues between the two)."""
    plan.wants = []
    plan.lookups = []
    _start(snap, plan)
    plan.phase, plan.message = _phase(snap, plan)
    return plan


def collect_pods(
    snap: Snapshot, phase: ExecutionPhase, jobs: Mapping[str, JobState]
) -> list[DeletePod]:
    """Pod GC: finished pods to delete per the policy, of jobs whose outcome
    is recorded (``snap.recorded``): a pod is the record of its result until
    then, and deleting it earlier could run the job again if Redis lost it."""
    strategy = snap.pod_gc
    if strategy is PodGCStrategy.NEVER:
        return []
    everything = (strategy is PodGCStrategy.ON_EXECUTION_COMPLETION and phase.terminal) or (
        strategy is PodGCStrategy.ON_EXECUTION_SUCCESS and phase is ExecutionPhase.SUCCEEDED
    )
    recorded = snap.recorded
    deletes = []
    for (name, attempt), pod in snap.pods.items():
        if pod.alive or pod.deleting or pod.removed or name not in jobs:
            continue
        if recorded is not None and name not in recorded:
            continue
        if everything or (
            strategy is PodGCStrategy.ON_JOB_SUCCESS and jobs[name].phase is JobPhase.SUCCEEDED
        ):
            deletes.append(DeletePod(name, attempt, "pod GC"))
    return deletes


def _pod(snap: Snapshot, name: str, attempt: int) -> PodObservation | None:
    return snap.pods.get((name, attempt))


def _alive(snap: Snapshot, name: str, state: JobState) -> bool:
    """May the job's latest attempt still be running (or about to)?"""
    if state.phase in _IN_FLIGHT:  # inlined in _start, the per-job loop of every pass
        return True
    pod = _pod(snap, name, state.attempt) if state.attempt else None
    return pod is not None and pod.alive


def _fail_attempt(
    snap: Snapshot,
    plan: Plan,
    job: Job,
    state: JobState,
    why: str,
    failure: Failure,
    final: bool = False,
) -> None:
    failures = state.failures + 1
    exit_code = failure.exit_code
    label = f"job {job.name} attempt {state.attempt}"
    retry, refusal = retried(job.retry_policy, failure, state.attempt)
    # Stop/Terminate: a failed attempt is not retried, that would start
    # something new (a finally job under Stop is what may still run).
    stopping = snap.shutdown is not None and not (
        snap.shutdown is Shutdown.STOP and job.finally_on is not None
    )
    if failures > job.retries or stopping or final or not retry:
        message = why
        if failures > job.retries:
            message = f"{why}; no retries left ({job.retries} allowed)"
        elif not retry and not final and not stopping:
            message = f"{why}; not retried: {refusal}"
        if snap.execution is not None:
            namespace, name = snap.execution
            message += f" (log: dagwright logs -n {namespace} {name} {job.name})"
        plan.set(
            job.name,
            replace(
                state,
                phase=JobPhase.FAILED,
                failures=failures,
                finished_at=snap.now,
                exit_code=exit_code,
                message=message,
            ),
        )
        plan.actions.append(Emit("JobFailed", f"{label}: {message}", warning=True))
        return
    delay = job.backoff.delay(failures)
    plan.set(
        job.name,
        replace(
            state,
            phase=JobPhase.BACKOFF,
            failures=failures,
            not_before=snap.now + delay,
            finished_at=snap.now,
            exit_code=exit_code,
            message=why,
        ),
    )
    plan.wake(snap.now + delay)
    plan.actions.append(
        Emit(
            "JobRetrying",
            f"{label}: {why}; retry {failures}/{job.retries} in {delay:g}s",
            warning=True,
        )
    )


def _observe(snap: Snapshot, plan: Plan, job: Job) -> None:
    """Advance one job from what its current pod shows."""
    state = plan.jobs[job.name]
    if state.phase not in (JobPhase.STARTING, JobPhase.RUNNING):
        # An attempt we gave up on (timeout, terminate) must actually stop;
        # asking again is harmless if an earlier delete was lost.
        stale = _pod(snap, job.name, state.attempt) if state.attempt else None
        if (
            stale is not None
            and stale.phase is PodPhase.SUCCEEDED
            and state.phase in _RESTARTABLE
            and not parse_outputs(job, stale.message)[1]
        ):
            # An attempt we had given up on (its node was lost, say) finished
            # after all: keep its result rather than running the job again.
            plan.set(
                job.name,
                replace(
                    state,
                    phase=JobPhase.SUCCEEDED,
                    finished_at=stale.finished_at or snap.now,
                    exit_code=0,
                    message="succeeded after its node was lost",
                    outputs=parse_outputs(job, stale.message)[0] or None,
                ),
            )
            plan.actions.append(
                Emit("JobSucceeded", f"job {job.name} attempt {state.attempt} succeeded")
            )
            return
        if stale is not None and not stale.phase.terminal and not stale.removed:
            force = _may_force(snap, state, stale)
            if force or not (stale.deleting or state.left_running):
                plan.actions.append(
                    DeletePod(job.name, state.attempt, state.message or "superseded", force)
                )
        if state.phase is JobPhase.BACKOFF and snap.now < state.not_before:
            plan.wake(state.not_before)
        return
    pod = _pod(snap, job.name, state.attempt)
    label = f"job {job.name} attempt {state.attempt}"
    if pod is not None and pod.removed and pod.phase is PodPhase.PENDING:
        pod = None  # deleted before it ran: as if never created
    if pod is None:
        refused = snap.refused.get((job.name, state.attempt))
        if refused is not None and state.phase is JobPhase.STARTING:
            _fail_attempt(
                snap, plan, job, state, refused.reason, Failure("refused"), final=refused.final
            )
            return
        if state.phase is JobPhase.RUNNING:
            _fail_attempt(snap, plan, job, state, "pod deleted while running", _DELETED)
            return
        # STARTING: not seen yet (watch lag), or deleted before it ran.
        created = state.created_at or 0.0
        if snap.now - created >= RECREATE_AFTER_SECONDS:
            plan.set(job.name, replace(state, created_at=snap.now))
            plan.actions.append(StartPod(job.name, state.attempt))
            plan.wake(snap.now + RECREATE_AFTER_SECONDS)
        else:
            plan.wake(created + RECREATE_AFTER_SECONDS)
        return
    if pod.node and (pod.node_lost or pod.node_gone) and not pod.phase.terminal:
        _fail_over(snap, plan, job, state, pod)
        return
    if pod.removed and pod.phase is PodPhase.RUNNING:
        # Its deletion is how we learn it ran, if the watch never showed it
        # Running: the same failed attempt either way.
        _fail_attempt(
            snap,
            plan,
            job,
            replace(state, started_at=state.started_at or pod.started_at),
            "pod deleted while running",
            _DELETED,
        )
        return
    if pod.phase is PodPhase.PENDING:
        if state.phase is JobPhase.STARTING and not pod.deleting:
            _pending(snap, plan, job, state, pod)
        return
    if pod.phase is PodPhase.SUCCEEDED:
        # Outputs only ever come from here: the pod of the current attempt,
        # which succeeded.
        outputs, wrong = parse_outputs(job, pod.message)
        if wrong:
            _fail_attempt(
                snap,
                plan,
                job,
                replace(state, started_at=state.started_at or pod.started_at),
                f"exited 0 but {wrong}",
                Failure("outputs", 0),
            )
            return
        plan.set(
            job.name,
            replace(
                state,
                phase=JobPhase.SUCCEEDED,
                started_at=state.started_at or pod.started_at,
                finished_at=pod.finished_at or snap.now,
                exit_code=0,
                message="",
                outputs=outputs or None,
            ),
        )
        plan.actions.append(Emit("JobSucceeded", f"{label} succeeded"))
        return
    if pod.phase is PodPhase.FAILED:
        failure = of_pod(pod.exit_code, pod.reason)
        if pod.exit_code is not None:
            why = f"exit code {pod.exit_code}"
            if failure.kind != "exit":
                why += f" ({pod.reason})"
        else:
            why = pod.reason or "pod failed"
        _fail_attempt(
            snap,
            plan,
            job,
            replace(state, started_at=state.started_at or pod.started_at),
            why,
            failure,
        )
        return
    if pod.phase is PodPhase.RUNNING:
        # When we first saw it running: the pod's startTime has whole-second
        # resolution and would cut short timeouts by up to a second.
        started = state.started_at or snap.now
        if state.phase is JobPhase.STARTING:
            state = replace(state, phase=JobPhase.RUNNING, started_at=started)
            plan.set(job.name, state)
            plan.actions.append(Emit("JobStarted", f"{label} running on {pod.node or 'a node'}"))
        if pod.heartbeat_at is not None:
            if not state.heartbeats:  # recorded once: the shell watches it from now on
                state = replace(state, heartbeats=True)
                plan.set(job.name, state)
            silent_until = pod.heartbeat_at + snap.heartbeat_timeout
            if snap.now >= silent_until:
                _fail_over(
                    snap,
                    plan,
                    job,
                    state,
                    pod,
                    f"no heartbeat for {snap.now - pod.heartbeat_at:.0f}s",
                )
                return
            plan.wake(silent_until)
        deadline = started + job.timeout_seconds
        if snap.now >= deadline:
            plan.actions.append(DeletePod(job.name, state.attempt, "timeout"))
            _fail_attempt(
                snap,
                plan,
                job,
                state,
                f"timed out after {job.timeout_seconds:g}s",
                Failure("timeout"),
            )
        else:
            plan.wake(deadline)


def _pending(snap: Snapshot, plan: Plan, job: Job, state: JobState, pod: PodObservation) -> None:
    """An attempt whose pod has not started: fail it when nothing will start
    it, place it again when its node has no room, else say what it waits for."""
    label = f"job {job.name} attempt {state.attempt}"
    if pod.waiting.split(":", 1)[0] in _HOPELESS:
        plan.actions.append(DeletePod(job.name, state.attempt, "cannot start"))
        failure = Failure("start", None, pod.waiting)
        _fail_attempt(snap, plan, job, state, f"cannot start: {pod.waiting}", failure)
        return
    limit = job.start_timeout_seconds or snap.start_timeout
    deadline = (state.created_at or snap.now) + limit
    if snap.now >= deadline:
        why = f"did not start within {limit:g}s" + (f" ({pod.waiting})" if pod.waiting else "")
        plan.actions.append(DeletePod(job.name, state.attempt, "start timeout"))
        _fail_attempt(snap, plan, job, state, why, Failure("start", None, pod.waiting))
        return
    plan.wake(deadline)
    since = pod.unschedulable_since
    if since is not None and state.node:
        replace_at = since + REPLACE_UNSCHEDULABLE_AFTER_SECONDS
        if snap.now < replace_at:
            plan.wake(replace_at)
        elif state.infra_failures < job.infra_retries:
            # Its slot's node has no room after all (filled by a pod we do not
            # count): give the node up and place the job again, no retry used.
            node = state.node
            plan.actions.append(DeletePod(job.name, state.attempt, f"no room on node {node}"))
            message = f"no room on node {node} ({pod.waiting}); placing it again"
            _place_again(snap, plan, job, state, node, message)
            plan.actions.append(Emit("JobReplaced", f"{label}: {message}", warning=True))
            return
    # What it waits for; a message of the attempt before (why it was lost) stays.
    waiting = state.message.startswith(_WAITING)
    message = f"{_WAITING}{pod.waiting}" if pod.waiting else ("" if waiting else state.message)
    if message != state.message:
        plan.set(job.name, replace(state, message=message))


def _may_force(snap: Snapshot, state: JobState, pod: PodObservation) -> bool:
    return pod.node_gone or (
        pod.node_lost and state.pool is not None and state.pool in snap.forced_failover
    )


def _fail_over(
    snap: Snapshot, plan: Plan, job: Job, state: JobState, pod: PodObservation, why: str = ""
) -> None:
    """The attempt's node died (or its runtime went silent): an infrastructure
    failure, not the job's.

    The next attempt avoids the node and waits until the old pod is gone
    (forced at once when the node is confirmed gone or the pool opted in).
    On a node that only stopped reporting, the old pod is left alone (see
    ``JobState.left_running``): deleting it would stop nothing on a dead
    machine, and kill a healthy run when the control plane is what failed."""
    node = pod.node or "?"
    why = why or f"node {node} lost"
    label = f"job {job.name} attempt {state.attempt}"
    force = _may_force(snap, state, pod)
    infra = state.infra_failures + 1
    left = pod.node_lost and not pod.node_silent and not force and infra <= job.infra_retries
    if not left:
        plan.actions.append(DeletePod(job.name, state.attempt, why, force))
    if infra > job.infra_retries:
        message = (
            f"lost {infra} attempts to node failures (last: {node}); "
            f"retryPolicy.infraRetries allows {job.infra_retries}"
        )
        plan.set(
            job.name,
            replace(
                state,
                phase=JobPhase.FAILED,
                infra_failures=infra,
                finished_at=snap.now,
                message=message,
            ),
        )
        plan.actions.append(Emit("JobFailed", f"{label}: {message}", warning=True))
        return
    message = f"{why}; resuming on another node"
    _place_again(snap, plan, job, replace(state, left_running=left), node, message)
    plan.actions.append(Emit("JobFailover", f"{label}: {message}", warning=True))


def _place_again(
    snap: Snapshot, plan: Plan, job: Job, state: JobState, node: str, message: str
) -> None:
    """The attempt is lost to the infrastructure (not the job's retries): the
    job is ready again, avoiding ``node``."""
    plan.set(
        job.name,
        replace(
            state,
            phase=JobPhase.READY,
            infra_failures=state.infra_failures + 1,
            avoid=tuple(dict.fromkeys((*state.avoid, node)))[-MAX_AVOIDED_NODES:],
            ready_at=snap.now,
            message=message,
        ),
    )


def _apply_shutdown(snap: Snapshot, plan: Plan) -> None:
    if snap.shutdown is None:
        return
    stop = snap.shutdown is Shutdown.STOP
    finals = snap.dag.jobs
    for name, state in plan.jobs.items():
        if state.phase.terminal:
            continue
        if stop and finals[name].finally_on is not None:
            continue  # runs once the others have ended (if its condition holds)
        active = state.phase in _IN_FLIGHT
        if active and stop:
            continue  # let it finish
        if active:
            plan.actions.append(DeletePod(name, state.attempt, "terminated"))
        plan.set(
            name,
            replace(
                state,
                phase=JobPhase.CANCELLED,
                finished_at=snap.now,
                message=f"{snap.shutdown.value} requested",
            ),
        )


_RUNS_ON = {
    Finally.ALWAYS: frozenset(ExecutionPhase),
    Finally.ON_SUCCESS: frozenset({ExecutionPhase.SUCCEEDED}),
    Finally.ON_FAILURE: frozenset({ExecutionPhase.FAILED}),
    Finally.ON_CANCEL: frozenset({ExecutionPhase.CANCELLED}),
}


def _others_ended(snap: Snapshot, plan: Plan) -> bool:
    """Have all jobs but the finally jobs ended, with no attempt still alive?"""
    jobs = plan.jobs
    return all(
        jobs[name].phase.terminal and not _alive(snap, name, jobs[name])
        for name, job in snap.dag.jobs.items()
        if job.finally_on is None
    )


def _propagate(snap: Snapshot, plan: Plan) -> None:
    """Waiting jobs become Ready or Skipped; topological order makes one pass enough."""
    jobs = plan.jobs
    ended: bool | None = None  # _others_ended, computed once if a finally job asks
    for job in snap.dag.jobs.values():
        state = jobs[job.name]
        if state.phase is JobPhase.WAITING:
            if job.finally_on is not None:
                if ended is None:
                    ended = _others_ended(snap, plan)
                if not ended:
                    continue
                phase, _ = outcome(snap.dag, jobs)
                if phase not in _RUNS_ON[job.finally_on]:
                    why = f"finally {job.finally_on.value}: the execution {phase.value.lower()}"
                    _skip(snap, plan, job.name, state, why)
                    continue
            # One look at each parent, no lists: most of a chain waits, every pass.
            broken = None
            done = True
            for parent in job.depends_on:
                phase_ = jobs[parent].phase
                if not phase_.done:
                    if phase_ is JobPhase.SKIPPED and job.allow_skipped:
                        continue
                    done = False
                    if phase_ in _BROKEN:
                        broken = parent
                        break
            if broken is not None:
                why = f"upstream job {broken} {jobs[broken].phase.value.lower()}"
                _skip(snap, plan, job.name, state, why)
            elif done:
                if job.when is not None and not _when(snap, plan, job, state):
                    continue
                plan.set(job.name, replace(state, phase=JobPhase.READY, ready_at=snap.now))
        elif state.phase is JobPhase.BACKOFF and snap.now >= state.not_before:
            plan.set(job.name, replace(state, phase=JobPhase.READY, ready_at=snap.now))


def _when(snap: Snapshot, plan: Plan, job: Job, state: JobState) -> bool:
    """Whether the job's condition holds; if not, it is Skipped (or Failed,
    when the condition cannot be evaluated: a mistake, not a no)."""
    assert job.when is not None
    try:
        verdict = expr.truthy(
            expr.evaluate(expr.parse(job.when), resolver(snap.dag, plan.jobs, job))
        )
    except expr.ExprError as exc:
        message = f"when {job.when!r} cannot be evaluated: {exc}"
        plan.set(
            job.name, replace(state, phase=JobPhase.FAILED, finished_at=snap.now, message=message)
        )
        plan.actions.append(Emit("JobFailed", f"job {job.name}: {message}", warning=True))
        return False
    if not verdict:
        _skip(snap, plan, job.name, state, f"when {job.when!r} is false")
        plan.actions.append(Emit("JobSkipped", f"job {job.name}: when {job.when!r} is false"))
    return verdict


def _skip(snap: Snapshot, plan: Plan, name: str, state: JobState, why: str) -> None:
    plan.set(name, replace(state, phase=JobPhase.SKIPPED, finished_at=snap.now, message=why))


_BROKEN = frozenset({JobPhase.FAILED, JobPhase.SKIPPED, JobPhase.CANCELLED})
_IN_FLIGHT = frozenset({JobPhase.STARTING, JobPhase.RUNNING})
_PRIORITY = attrgetter("priority")
_RESTARTABLE = frozenset({JobPhase.READY, JobPhase.BACKOFF})
_DELETED = Failure("deleted", None, "deleted while running")


def _start(snap: Snapshot, plan: Plan) -> None:
    if snap.suspend or snap.shutdown is Shutdown.TERMINATE:
        return
    # Stop: nothing new starts but the finally jobs.
    only_finally = snap.shutdown is Shutdown.STOP
    alive = 0
    ready: list[Job] = []
    for job in snap.dag.jobs.values():  # _alive, inlined: this loop is per job and pass
        state = plan.jobs[job.name]
        if state.phase in _IN_FLIGHT:
            alive += 1
            continue
        if state.attempt:
            pod = snap.pods.get((job.name, state.attempt))
            if pod is not None and pod.alive:
                # The previous attempt's pod may still be stopping (a timeout, say).
                alive += 1
                continue
        if state.phase is JobPhase.READY:
            if only_finally and job.finally_on is None:
                continue
            if job.cache is not None and not state.attempt:
                if job.name not in snap.cache:
                    plan.lookups.append(job.name)
                    continue
                hit = snap.cache[job.name]
                if hit is not None:
                    _cached(snap, plan, job, state, hit)
                    continue
            ready.append(job)
    free = snap.parallelism - alive
    if free <= 0:
        return
    # Higher priority first, then topological order: dag.jobs is in that
    # order and the sort is stable (also with reverse), so one key is enough.
    ready.sort(key=_PRIORITY, reverse=True)
    for job in ready[:free]:
        state = plan.jobs[job.name]
        slot = Slot("")
        if snap.admitted is not None:
            if job.name not in snap.admitted:
                plan.wants.append(job.name)
                continue
            slot = snap.admitted[job.name]
        attempt = state.attempt + 1
        plan.set(
            job.name,
            replace(
                state,
                phase=JobPhase.STARTING,
                attempt=attempt,
                created_at=snap.now,
                started_at=None,
                finished_at=None,
                exit_code=None,
                pool=slot.pool or None,
                node=slot.node,
                heartbeats=False,
                left_running=False,
            ),
        )
        plan.actions.append(StartPod(job.name, attempt, slot.pool or None, state.avoid, slot.node))
        plan.wake(snap.now + RECREATE_AFTER_SECONDS)


def _cached(snap: Snapshot, plan: Plan, job: Job, state: JobState, hit: CacheHit) -> None:
    """A cached job's earlier run is its result: no pod, its outputs reused."""
    message = f"cached: {hit.source}"
    plan.set(
        job.name,
        replace(
            state,
            phase=JobPhase.CACHED,
            finished_at=snap.now,
            exit_code=0,
            message=message,
            outputs=dict(hit.outputs) or None,
        ),
    )
    plan.actions.append(Emit("JobCached", f"job {job.name}: {message}"))
    plan.wake(snap.now)  # its dependents may start on the next pass


_RERUN = frozenset({JobPhase.FAILED, JobPhase.SKIPPED, JobPhase.CANCELLED})


def rerun(jobs: Mapping[str, JobState], finally_jobs: Sequence[str] = ()) -> dict[str, JobState]:
    """What a retry resets: failed, skipped and cancelled jobs start over with
    a fresh retry budget and no nodes to avoid (whatever made them fail is
    taken as fixed), their attempts numbered on so pod names stay unique;
    succeeded ones keep their results. The finally jobs run again too (once
    per ending of the execution), if anything else does."""
    finals = set(finally_jobs)
    reset = {
        name: JobState(attempt=state.attempt)
        for name, state in jobs.items()
        if state.phase in _RERUN and name not in finals
    }
    if reset:
        reset |= {name: JobState(attempt=jobs[name].attempt) for name in finals if name in jobs}
    return reset


# Failed jobs named in the execution's message beyond the first.
NAMED_FAILURES = 5


def failed_message(failed: list[str], why: str) -> str:
    """``job a failed: why (and 7 more: b, c, d, e, f, ...)``."""
    first, others = failed[0], failed[1:]
    if not others:
        return f"job {first} failed: {why}"
    named = ", ".join(others[:NAMED_FAILURES]) + (", ..." if len(others) > NAMED_FAILURES else "")
    return f"job {first} failed: {why} (and {len(others)} more: {named})"


def _phase(snap: Snapshot, plan: Plan) -> tuple[ExecutionPhase, str]:
    states = plan.jobs
    # Whether any attempt is alive matters only once every job has ended
    # (and all() stops at the first that has not: this is per pass).
    if all(s.phase.terminal for s in states.values()) and not any(
        _alive(snap, name, s) for name, s in states.items()
    ):
        dag = snap.dag
        phase, failed = outcome(dag, states)
        finals = [name for name in dag.finally_jobs if states[name].phase is JobPhase.FAILED]
        counted = [name for name in finals if dag.jobs[name].affects_outcome]
        if failed or counted:
            first = (failed or counted)[0]
            return ExecutionPhase.FAILED, failed_message([*failed, *counted], states[first].message)
        note = f"; finally job {finals[0]} failed: {states[finals[0]].message}" if finals else ""
        if phase is ExecutionPhase.CANCELLED:
            return (
                ExecutionPhase.CANCELLED,
                f"{snap.shutdown.value if snap.shutdown else 'cancel'} requested{note}",
            )
        return ExecutionPhase.SUCCEEDED, _succeeded(states) + note
    if snap.shutdown is not None:
        return ExecutionPhase.RUNNING, f"{snap.shutdown.value} requested; waiting for running jobs"
    if snap.suspend:
        return ExecutionPhase.SUSPENDED, "suspended: no new jobs start"
    if any(s.attempt > 0 or s.phase.terminal for s in states.values()):
        return ExecutionPhase.RUNNING, ""
    return ExecutionPhase.PENDING, ""


def _succeeded(states: Mapping[str, JobState]) -> str:
    counts: dict[JobPhase, int] = {}
    for state in states.values():
        counts[state.phase] = counts.get(state.phase, 0) + 1
    if counts.get(JobPhase.SUCCEEDED) == len(states):
        return f"all {len(states)} jobs succeeded"
    shown = ", ".join(
        f"{counts[p]} {p.value.lower()}"
        for p in (JobPhase.SUCCEEDED, JobPhase.CACHED, JobPhase.SKIPPED)
        if counts.get(p)
    )
    return f"{len(states)} jobs: {shown}"
