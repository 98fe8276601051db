"""Graph checks a schema cannot express, and the resolved form of a DAG.

``build_dag`` either returns a ``Dag`` (jobs with their defaults applied, in a
topological order) or raises ``InvalidDag`` listing every problem found, each
naming the jobs involved, so a user can fix them all in one edit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from dagwright.core import references, sweeps
from dagwright.core.durations import parse_duration
from dagwright.core.placement import Pool, eligible, fits, policy_of
from dagwright.core.podspec import EnvVar, PodSettings, merge
from dagwright.core.policy import DEFAULT_POLICY, JobPolicy, reserved, violations
from dagwright.core.spec import (
    Backoff,
    Cache,
    DAGExecutionSpec,
    Finally,
    JobSettings,
    JobSpec,
    JobTemplateSpec,
    Resources,
    RetryPolicy,
)
from dagwright.errors import InvalidDag

DEFAULT_RETRIES = 3
DEFAULT_TIMEOUT = "5m"
DEFAULT_BACKOFF = Backoff()
DEFAULT_RETRY_POLICY = RetryPolicy()
# Attempts lost to dead nodes do not use the job's retries, but a job that
# keeps losing its nodes must end some time (retryPolicy.infraRetries).
DEFAULT_INFRA_RETRIES = 10


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
    requires: frozenset[str]
    resources: Resources | None
    retries: int
    backoff: Backoff
    timeout_seconds: float
    start_timeout_seconds: float | None  # None: the operator's default
    priority: int
    config: Mapping[str, Any] | None
    # Pod settings of the job, its template and the execution's defaults,
    # merged (the pool's are added when it is placed).
    pod: PodSettings = field(default_factory=PodSettings)
    retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY
    infra_retries: int = DEFAULT_INFRA_RETRIES
    outputs: tuple[str, ...] = ()
    when: str | None = None
    allow_skipped: bool = False
    finally_on: Finally | None = None  # a finally job
    affects_outcome: bool = False
    cache: Cache | None = None
    sweep: str | None = None  # the sweep's name, for its members
    item: Any = None  # a sweep member's item
    # Its command, args, env, config or annotations hold {{ }} templates,
    # resolved when it starts (core.inputs).
    templated: bool = False

    @property
    def env(self) -> tuple[EnvVar, ...]:
        return tuple(self.pod.env or ())

    @property
    def annotations(self) -> Mapping[str, str]:
        return self.pod.annotations or {}


@dataclass(frozen=True)
class Dag:
    jobs: dict[str, Job]  # in topological order
    children: dict[str, tuple[str, ...]] = field(repr=False)
    sweeps: dict[str, tuple[str, ...]] = field(default_factory=dict)  # name -> members
    finally_jobs: tuple[str, ...] = ()  # in topological order

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
            if parent in children:  # an unknown one is reported elsewhere
                children[parent].append(name)
            else:
                waiting[name] -= 1
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


def build_dag(
    spec: DAGExecutionSpec,
    pools: Sequence[Pool] | None = None,
    templates: Mapping[str, JobTemplateSpec] | None = None,
    policy: JobPolicy = DEFAULT_POLICY,
) -> Dag:
    """Check the graph and resolve every job.

    ``pools``: the WorkerPools there are (None: unknown, skip the checks
    that need them): every job must be able to run in one, under its policy
    (``policy``: the install-wide one, for pools without their own).
    ``templates``: the JobTemplates by name (None: unknown, a job that names
    a type needs no image of its own)."""
    problems: list[str] = []
    expanded = sweeps.expand(spec.jobs)
    problems += expanded.problems
    specs: dict[str, JobSpec] = {}
    for job in expanded.jobs:
        if job.name in specs:
            problems.append(f"job {job.name!r} is defined more than once")
        specs[job.name] = job
    members = expanded.members
    if problems:  # sweeps that cannot be expanded: nothing else is meaningful
        raise InvalidDag(problems)

    defaults = spec.defaults
    # Jobs in a cycle are left out of the order (and the cycle is reported).
    order = {name: index for index, name in enumerate(_topological(specs))}
    jobs: dict[str, Job] = {}
    checked: dict[tuple[int, int, frozenset[str]], list[str]] = {}
    reserved_in: dict[int, list[str]] = {}  # by pod settings object: most jobs share one
    templated: dict[tuple[int, int, int], bool] = {}  # the same, for templates
    for job in expanded.jobs:
        if job.name in job.depends_on:
            problems.append(f"job {job.name!r} depends on itself")
        unknown = [d for d in job.depends_on if d not in specs]
        if unknown:
            problems.append(
                f"job {job.name!r} depends on unknown job(s) {', '.join(map(repr, unknown))}"
            )
        template = templates.get(job.type) if templates is not None and job.type else None
        image = job.image or (template.image if template else None) or defaults.image
        if not image and (templates is not None or not job.type):
            if job.type and templates is not None:
                problems.append(
                    f"job {job.name!r} has no image and its type {job.type!r} has no "
                    "JobTemplate (create one named so, or set jobs[].image or defaults.image)"
                )
            else:
                problems.append(
                    f"job {job.name!r} has no image (set jobs[].image or defaults.image)"
                )
        resolved = _resolve(
            job,
            template,
            defaults,
            spec.priority,
            image or "",
            order.get(job.name, -1),
            expanded.sweep_of.get(job.name),
            expanded.items.get(job.name),
            templated,
        )
        pod_id = id(resolved.pod)
        if pod_id not in reserved_in:
            reserved_in[pod_id] = [f": {why}" for why in reserved(resolved.pod)]
        found = list(reserved_in[pod_id])
        if pools is not None:
            key = (id(resolved.pod), id(resolved.resources), resolved.requires)
            if key not in checked:
                checked[key] = _placeable(resolved, pools, policy)
            found += checked[key]
        problems += [f"job {job.name!r}{why}" for why in found]
        jobs[job.name] = resolved

    edges = {name: [d for d in job.depends_on if d != name] for name, job in specs.items()}
    cycle = find_cycle(edges)
    if cycle:
        problems.append("dependency cycle: " + " -> ".join(cycle))
    if not problems:  # a sound graph: what reads which job
        problems += _finally_problems(jobs)
        problems += references.check(jobs, members, order)
    if problems:
        raise InvalidDag(problems)

    ordered = {name: jobs[name] for name in order}
    if any(job.finally_on is not None for job in ordered.values()):
        # Finally jobs last (they depend only on each other): the order people read.
        ranked = sorted(order, key=lambda name: jobs[name].finally_on is not None)
        ordered = {name: replace(jobs[name], index=i) for i, name in enumerate(ranked)}
    children: dict[str, list[str]] = {name: [] for name in ordered}
    for job_ in ordered.values():
        for parent in job_.depends_on:
            children[parent].append(job_.name)
    return Dag(
        jobs=ordered,
        children={k: tuple(v) for k, v in children.items()},
        sweeps=members,
        finally_jobs=tuple(name for name, j in ordered.items() if j.finally_on is not None),
    )


def _finally_problems(jobs: Mapping[str, Job]) -> list[str]:
    """Finally jobs run after all the others: they may depend only on each
    other, and no other job may depend on them."""
    problems = []
    for job in jobs.values():
        if job.finally_on is None:
            if job.affects_outcome:
                problems.append(f"job {job.name!r}: affectsOutcome is for finally jobs")
            bad = [d for d in job.depends_on if jobs[d].finally_on is not None]
            if bad:
                problems.append(
                    f"job {job.name!r} depends on finally job(s) {', '.join(map(repr, bad))}, "
                    "which run after every other job"
                )
        else:
            bad = [d for d in job.depends_on if jobs[d].finally_on is None]
            if bad:
                problems.append(
                    f"finally job {job.name!r} depends on {', '.join(map(repr, bad))}: finally "
                    "jobs run after every other job has ended and may depend only on other "
                    "finally jobs"
                )
    return problems


def _placeable(job: Job, pools: Sequence[Pool], default: JobPolicy) -> list[str]:
    """Why no pool can take ``job`` (empty: one can), each after ``job 'x'``."""
    covering = eligible(job.requires, pools)
    if not covering:
        if not job.requires:  # runs outside any pool
            return [f": {why}" for why in violations(job.pod, resources_of(job), default)]
        offered = {c for pool in pools for c in pool.spec.capabilities}
        missing = sorted(job.requires - offered)
        if missing:
            return [f" requires {', '.join(missing)}, which no WorkerPool offers"]
        return [
            f" requires {', '.join(sorted(job.requires))}, which no one WorkerPool offers together"
        ]
    resources = resources_of(job)
    best: list[str] = []
    for pool in sorted(covering, key=lambda p: (fits(job.requires, p), p.name)):
        found = violations(job.pod, resources, policy_of(pool, default))
        if not found:
            return []
        best = best or [f": {why} in WorkerPool {pool.name}" for why in found]
    return best


def resources_of(job: Job) -> dict[str, dict[str, str]]:
    return job.resources.model_dump() if job.resources else {}


def merge_resources(*layers: Resources | None) -> Resources | None:
    """Requests and limits by resource name, a later layer's winning."""
    present = [layer for layer in layers if layer is not None]
    if len(present) <= 1:
        return present[0] if present else None
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    for layer in present:
        requests.update(layer.requests)
        limits.update(layer.limits)
    return Resources(requests=requests, limits=limits)


def _resolve(
    job: JobSpec,
    template: JobTemplateSpec | None,
    defaults: JobSettings,
    priority: int,
    image: str,
    index: int,
    sweep: str | None = None,
    item: Any = None,
    memo: dict[tuple[int, int, int], bool] | None = None,
) -> Job:
    """The job with its template's and the execution's defaults applied."""
    layers = (defaults, template, job) if template is not None else (defaults, job)

    def last(name: str) -> Any:
        for layer in reversed(layers):
            value = getattr(layer, name)
            if value is not None:
                return value
        return None

    requires = last("requires")
    retry_policy: RetryPolicy = last("retry_policy") or DEFAULT_RETRY_POLICY
    pod = merge(*layers)
    raw_command, raw_args = last("command"), last("args")
    command, args = _tuple(raw_command), _tuple(raw_args)
    cache: Cache | None = last("cache")
    return Job(
        name=job.name,
        index=index,
        type=job.type or "generic",
        depends_on=tuple(job.depends_on),
        image=image,
        command=command,
        args=args,
        requires=frozenset(requires or ()),
        resources=merge_resources(*(layer.resources for layer in layers)),
        retries=_first(last("retries"), DEFAULT_RETRIES),
        backoff=last("backoff") or DEFAULT_BACKOFF,
        timeout_seconds=parse_duration(last("timeout") or DEFAULT_TIMEOUT),
        start_timeout_seconds=_seconds(last("start_timeout")),
        priority=job.priority if job.priority is not None else priority,
        config=job.config,
        pod=pod,
        retry_policy=retry_policy,
        infra_retries=_first(retry_policy.infra_retries, DEFAULT_INFRA_RETRIES),
        outputs=tuple(job.outputs or ()),
        when=job.when,
        allow_skipped=bool(job.allow_skipped),
        finally_on=job.finally_,
        affects_outcome=bool(job.affects_outcome),
        cache=cache,
        sweep=sweep,
        item=item,
        templated=_templated(raw_command, raw_args, pod, job.config, memo),
    )


def _templated(
    command: Sequence[str] | None,
    args: Sequence[str] | None,
    pod: PodSettings,
    config: Mapping[str, Any] | None,
    memo: dict[tuple[int, int, int], bool] | None,
) -> bool:
    """Whether the job holds templates, asked once per combination of
    settings objects in a build (most jobs share the defaults')."""
    if config is not None and references.templated(None, None, None, config):
        return True
    if memo is None:
        return references.templated(command, args, pod, None)
    key = (id(command), id(args), id(pod))
    found = memo.get(key)
    if found is None:
        found = memo[key] = references.templated(command, args, pod, None)
    return found


def _tuple(values: list[str] | None) -> tuple[str, ...] | None:
    return tuple(values) if values is not None else None


def _first(*values: int | None) -> int:
    for value in values:
        if value is not None:
            return value
    raise ValueError("no value")


def _seconds(duration: str | None) -> float | None:
    return parse_duration(duration) if duration else None
