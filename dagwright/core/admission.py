"""Who asks the pools' queues for a slot, in what order, where, and why a job
can get none: the policy of slot admission, without the Redis calls.

Every pool queue orders its waiters by priority (10 first), then by when they
became ready, then by member name; asking in that same order lets the shell
stop asking a pool at its first refusal (ours after it would be refused too).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dagwright.core.graph import Dag, Job, resources_of
from dagwright.core.placement import Pool, best_fit, eligible, policy_of, scalable
from dagwright.core.policy import DEFAULT_POLICY, JobPolicy, violations
from dagwright.core.state import JobState


def member(uid: str, job: str) -> str:
    """A job's name in the pools' queues and slot tables."""
    return f"{uid}/{job}"


def score(priority: int, since: float) -> float:
    """A waiter's place in a pool queue. Lower is better: priority 10 before 1,
    then earlier before later."""
    return (10 - priority) * 1e13 + since * 1000


@dataclass(frozen=True)
class Request:
    """One wanted job's turn: the pools to ask, in order (least loaded first)."""

    job: str
    member: str
    priority: int
    since: float  # when it became ready: its place in the queues
    pools: tuple[Pool, ...]
    avoid: tuple[str, ...]


@dataclass(frozen=True)
class Admission:
    requests: list[Request]  # in the queues' own order
    blocked: list[str]  # why some wanted jobs can get no slot anywhere now


def plan_admission(
    uid: str,
    dag: Dag,
    wants: Sequence[str],
    jobs: Mapping[str, JobState],
    pools: Sequence[Pool],
    members: Mapping[str, Sequence[str]],
    loads: Mapping[str, float],
    now: float,
    policy: JobPolicy = DEFAULT_POLICY,
) -> Admission:
    """The requests for the ``wants`` jobs' slots, and the jobs no pool can
    take (none offers what they require, or none of those has a ready node)."""
    order = sorted(
        wants,
        key=lambda n: (score(dag.jobs[n].priority, jobs[n].ready_at or now), member(uid, n)),
    )
    # Jobs share a few requirement sets, and most their pod settings.
    by_requirement: dict[tuple[frozenset[str], int, int], tuple[Pool, ...]] = {}

    def usable(pool: Pool) -> bool:
        return bool(members[pool.name]) or scalable(pool)

    def allowed(job: Job, pool: Pool) -> bool:
        return not violations(job.pod, resources_of(job), policy_of(pool, policy))

    requests: list[Request] = []
    blocked: list[str] = []
    for name in order:
        job = dag.jobs[name]
        key = (job.requires, id(job.pod), id(job.resources))
        if key not in by_requirement:
            fitting = best_fit(
                job.requires,
                [p for p in eligible(job.requires, pools) if allowed(job, p)],
                usable,
            )
            by_requirement[key] = tuple(sorted(fitting, key=lambda p: (loads[p.name], p.name)))
        candidates = by_requirement[key]
        if not candidates:
            needs = ", ".join(sorted(job.requires)) or "no capability"
            blocked.append(f"job {name} requires {needs}, which no WorkerPool offers now")
        elif not any(members[p.name] for p in candidates):
            names = ", ".join(p.name for p in candidates)
            blocked.append(f"job {name}: WorkerPool {names} has no ready nodes")
        state = jobs[name]
        requests.append(
            Request(
                name,
                member(uid, name),
                job.priority,
                state.ready_at or now,
                candidates,
                state.avoid,
            )
        )
    return Admission(requests, blocked)


def unschedulable_message(blocked: Sequence[str]) -> str:
    """The one line the execution's status and Event show for ``blocked``."""
    if not blocked:
        return ""
    more = f" (and {len(blocked) - 1} more)" if len(blocked) > 1 else ""
    return f"waiting: {blocked[0]}{more}"
