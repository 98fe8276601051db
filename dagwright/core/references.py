"""What a job's ``{{ }}`` templates and ``when`` may read, checked before
anything runs: ``item`` (a sweep member's item), ``jobs.J.outputs.O`` (an
output J declares, J upstream of the job) and ``jobs.J.phase``.

A finally job may read any job that is not a finally job (all have ended
when it runs) and the finally jobs upstream of it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from dagwright.core import expr
from dagwright.core.podspec import PodSettings

if TYPE_CHECKING:
    from dagwright.core.graph import Job

JOB_FIELDS = ("outputs", "phase")


def templated(
    command: Sequence[str] | None,
    args: Sequence[str] | None,
    pod: PodSettings | None,
    config: Mapping[str, Any] | None,
) -> bool:
    """Whether anything of the job is a template (most jobs: no, at no cost)."""
    texts = [*(command or ()), *(args or ())]
    if pod is not None:
        texts += [var.value for var in pod.env or () if var.value]
        texts += list((pod.annotations or {}).values())
    if any("{{" in text for text in texts):
        return True
    return config is not None and any("{{" in s for s in expr.strings(config))


def texts(job: Job) -> Iterator[tuple[str, str]]:
    """(where, text) of every string of the job templates may sit in."""
    for i, part in enumerate(job.command or ()):
        yield f"command[{i}]", part
    for i, part in enumerate(job.args or ()):
        yield f"args[{i}]", part
    for var in job.pod.env or ():
        if var.value:
            yield f"env {var.name}", var.value
    for key, value in (job.pod.annotations or {}).items():
        yield f"annotation {key}", value
    if job.config is not None:
        for text in expr.strings(job.config):
            yield "config", text
    if job.cache is not None and job.cache.key:
        yield "cache.key", job.cache.key


def expressions(job: Job) -> Iterator[tuple[str, str]]:
    """(where, expression) of each template and the ``when`` of a job."""
    if job.templated or (job.cache is not None and job.cache.key):
        for where, text in texts(job):
            for found in expr.templates(text):
                yield where, found
    if job.when:
        yield "when", job.when


class _Ancestors:
    """Upstream jobs, as bit sets over the topological order (computed once,
    only for DAGs with references)."""

    def __init__(self, jobs: Mapping[str, Job], order: Mapping[str, int]):
        self.order = order
        self.bits: dict[str, int] = {}
        for name in sorted(jobs, key=lambda n: order.get(n, -1)):
            bits = 0
            for parent in jobs[name].depends_on:
                bits |= self.bits.get(parent, 0) | (1 << order.get(parent, 0))
            self.bits[name] = bits

    def upstream(self, job: str, other: str) -> bool:
        return bool(self.bits[job] >> self.order[other] & 1)


def check(
    jobs: Mapping[str, Job], sweeps: Mapping[str, tuple[str, ...]], order: Mapping[str, int]
) -> list[str]:
    problems: list[str] = []
    ancestors: _Ancestors | None = None
    for job in jobs.values():
        for where, text in expressions(job):
            label = f"job {job.name!r} {where}"
            try:
                node = expr.parse(text)
            except expr.ExprError as exc:
                problems.append(f"{label}: {exc}")
                continue
            for path in expr.paths(node):
                if path.parts[0] == "jobs" and ancestors is None:
                    ancestors = _Ancestors(jobs, order)
                why = _path_problem(job, path, jobs, sweeps, ancestors)
                if why:
                    problems.append(f"{label}: {why}")
            for used in expr.filters(node):
                if used.name in ("argmax", "argmin"):
                    target = used.operand
                    if not (
                        isinstance(target, expr.Path)
                        and len(target.parts) == 4
                        and target.parts[0] == "jobs"
                        and target.parts[1] in sweeps
                    ):
                        problems.append(
                            f"{label}: {used.name} works on a sweep's outputs "
                            "(jobs.SWEEP.outputs.NAME)"
                        )
    return list(dict.fromkeys(problems))


def _path_problem(
    job: Job,
    path: expr.Path,
    jobs: Mapping[str, Job],
    sweeps: Mapping[str, tuple[str, ...]],
    ancestors: _Ancestors | None,
) -> str | None:
    parts = path.parts
    if parts[0] == "item":
        if job.sweep is None:
            return f"{path}: only the jobs of a sweep (withItems, matrix) have an item"
        if len(parts) > 1 and not (isinstance(job.item, Mapping) and parts[1] in job.item):
            return f"{path}: the sweep's items have no key {parts[1]!r}"
        return None
    if parts[0] != "jobs":
        return (
            f"unknown name {str(path)!r} (known: item, jobs.NAME.outputs.OUTPUT, jobs.NAME.phase)"
        )
    if len(parts) < 3 or parts[2] not in JOB_FIELDS:
        return f"{path}: write jobs.NAME.outputs.OUTPUT or jobs.NAME.phase"
    target = parts[1]
    members = sweeps.get(target, (target,) if target in jobs else ())
    if not members:
        return f"{path}: there is no job or sweep named {target!r}"
    first = jobs[members[0]]
    if parts[2] == "phase":
        if len(parts) != 3:
            return f"{path}: write jobs.{target}.phase"
    elif len(parts) != 4:
        return f"{path}: write jobs.{target}.outputs.OUTPUT"
    elif parts[3] not in first.outputs:
        declared = ", ".join(first.outputs) or "none"
        return f"{path}: job {target!r} declares no output {parts[3]!r} (it declares: {declared})"
    if job.name in members:
        return f"{path}: a job cannot read itself"
    assert ancestors is not None
    for name in members:
        if job.finally_on is not None and jobs[name].finally_on is None:
            continue  # every other job has ended when a finally job runs
        if not ancestors.upstream(job.name, name):
            return (
                f"{path}: job {name!r} is not upstream of {job.name!r} (add it to dependsOn, "
                "directly or through another job)"
            )
    return None
