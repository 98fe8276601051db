"""Graph checks a schema cannot express, and the resolved form of a DAG.

``build_dag`` either returns a ``Dag`` (jobs with their defaults applied, in a
topological order) or raises ``InvalidDag`` listing every problem found, each
naming the jobs involved, so a user can fix them all in one edit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dagwright.core.durations import parse_duration
from dagwright.core.spec import Backoff, DAGExecutionSpec, EnvVar, JobSpec, Resources
from dagwright.errors import InvalidDag

DEFAULT_RETRIES = 3
DEFAULT_TIMEOUT = "5m"
DEFAULT_BACKOFF = Backoff()


@dataclass(frozen=True)
class Job:
    """A job with ``spec.defaults`` applied: every setting has a value."""

    name: str
    index: int  # position in topological order
    type: str
    depends_on: tuple[str, ...]
    image: str
    command: tuple[str, ...] | None
    args: tuple[str, ...] | None
    env: tuple[EnvVar, ...]
    requires: frozenset[str]
    resources: Resources | None
    retries: int
    backoff: Backoff
    timeout_seconds: float
    start_timeout_seconds: float | None  # None: the operator's default
    priority: int
    config: Mapping[str, Any] | None
    annotations: Mapping[str, str]


@dataclass(frozen=True)
class Dag:
    jobs: dict[str, Job]  # in topological order
    children: dict[str, tuple[str, ...]] = field(repr=False)

    @property
    def order(self) -> list[str]:
        return list(self.jobs)


def find_cycle(edges: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A cycle as ``[a, b, ..., a]`` (each depends on the next), or None.

    Iterative DFS: a 10,000-deep chain must not hit Python's recursion limit.
    """
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(edges, white)
    for root in edges:
        if color[root] != white:
            continue
        path: list[str] = [root]
        stack: list[Iterable[str]] = [iter(edges[root])]
        color[root] = grey
        while stack:
            advanced = False
            for nxt in stack[-1]:
                if nxt not in color:
                    continue  # unknown dependency, reported elsewhere
                if color[nxt] == grey:
                    return [*path[path.index(nxt) :], nxt]
                if color[nxt] == white:
                    color[nxt] = grey
                    path.append(nxt)
                    stack.append(iter(edges[nxt]))
                    advanced = True
                    break
            if not advanced:
                color[path.pop()] = black
                stack.pop()
    return None


def _topological(specs: Mapping[str, JobSpec]) -> list[str]:
    """Kahn's algorithm, stable with respect to the manifest's order."""
    waiting = {name: len(job.depends_on) for name, job in specs.items()}
    children: dict[str, list[str]] = {name: [] for name in specs}
    for name, job in specs.items():
        for parent in job.depends_on:
            children[parent].append(name)
    ready = [name for name, count in waiting.items() if count == 0]
    order: list[str] = []
    while ready:
        name = ready.pop()
        order.append(name)
        for child in reversed(children[name]):
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    return order


def build_dag(spec: DAGExecutionSpec, capabilities: set[str] | None = None) -> Dag:
    """Check the graph and resolve every job. ``capabilities``: what the worker
    pools offer; None skips that check (no pool information yet)."""
    problems: list[str] = []
    specs: dict[str, JobSpec] = {}
    for job in spec.jobs:
        if job.name in specs:
            problems.append(f"job {job.name!r} is defined more than once")
        specs[job.name] = job

    for job in spec.jobs:
        if job.name in job.depends_on:
            problems.append(f"job {job.name!r} depends on itself")
        unknown = [d for d in job.depends_on if d not in specs]
        if unknown:
            problems.append(
                f"job {job.name!r} depends on unknown job(s) {', '.join(map(repr, unknown))}"
            )
        if not (job.image or spec.defaults.image):
            problems.append(f"job {job.name!r} has no image (set jobs[].image or defaults.image)")
        requires = job.requires if job.requires is not None else (spec.defaults.requires or [])
        if capabilities is not None:
            missing = sorted(set(requires) - capabilities)
            if missing:
                problems.append(
                    f"job {job.name!r} requires {', '.join(missing)}, which no WorkerPool offers"
                )

    edges = {name: [d for d in job.depends_on if d != name] for name, job in specs.items()}
    cycle = find_cycle(edges)
    if cycle:
        problems.append("dependency cycle: " + " -> ".join(cycle))
    if problems:
        raise InvalidDag(problems)

    defaults = spec.defaults
    jobs: dict[str, Job] = {}
    for index, name in enumerate(_topological(specs)):
        job = specs[name]
        jobs[name] = Job(
            name=name,
            index=index,
            type=job.type or "generic",
            depends_on=tuple(job.depends_on),
            image=job.image or defaults.image or "",
            command=tuple(job.command) if job.command is not None else None,
            args=tuple(job.args) if job.args is not None else None,
            env=tuple((defaults.env or []) + (job.env or [])),
            requires=frozenset(
                job.requires if job.requires is not None else (defaults.requires or [])
            ),
            resources=job.resources or defaults.resources,
            retries=_first(job.retries, defaults.retries, DEFAULT_RETRIES),
            backoff=job.backoff or defaults.backoff or DEFAULT_BACKOFF,
            timeout_seconds=parse_duration(job.timeout or defaults.timeout or DEFAULT_TIMEOUT),
            start_timeout_seconds=_seconds(job.start_timeout or defaults.start_timeout),
            priority=job.priority if job.priority is not None else spec.priority,
            config=job.config,
            annotations={**(defaults.annotations or {}), **(job.annotations or {})},
        )
    children: dict[str, list[str]] = {name: [] for name in jobs}
    for job_ in jobs.values():
        for parent in job_.depends_on:
            children[parent].append(job_.name)
    return Dag(jobs=jobs, children={k: tuple(v) for k, v in children.items()})


def _first(*values: int | None) -> int:
    for value in values:
        if value is not None:
            return value
    raise ValueError("no value")


def _seconds(duration: str | None) -> float | None:
    return parse_duration(duration) if duration else None
