"""Sweeps: a job with ``withItems`` or ``matrix`` becomes one job per item
(``NAME-0``, ``NAME-1``... in the items' order; a matrix's combinations in
the order of its keys, the last varying fastest), and a ``dependsOn`` that
names the sweep means all of its members."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dagwright.core.spec import MAX_JOBS, JobSpec

MAX_NAME = 63


@dataclass
class Expanded:
    jobs: list[JobSpec] = field(default_factory=list)
    members: dict[str, tuple[str, ...]] = field(default_factory=dict)  # sweep -> members
    sweep_of: dict[str, str] = field(default_factory=dict)  # member -> sweep
    items: dict[str, Any] = field(default_factory=dict)  # member -> item
    problems: list[str] = field(default_factory=list)


def size(with_items: Sequence[Any] | None, matrix: Mapping[str, Sequence[Any]] | None) -> int:
    """How many jobs a sweep makes (1: not a sweep)."""
    if with_items is not None:
        return len(with_items)
    if matrix:
        return math.prod(len(values) for values in matrix.values())
    return 1


def items(
    with_items: Sequence[Any] | None, matrix: Mapping[str, Sequence[Any]] | None
) -> list[Any]:
    if with_items is not None:
        return list(with_items)
    assert matrix
    keys = list(matrix)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*matrix.values())]


def member(name: str, index: int) -> str:
    return f"{name}-{index}"


def names(jobs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every job's name after expansion, in the manifest's order, from the
    raw manifest (cheap: read on every event of every execution)."""
    found: list[str] = []
    for job in jobs:
        if not isinstance(job, Mapping):
            continue
        name = str(job.get("name"))
        with_items, matrix = job.get("withItems"), job.get("matrix")
        count = size(
            with_items if isinstance(with_items, list) else None,
            matrix if isinstance(matrix, Mapping) else None,
        )
        if with_items is None and not matrix:
            found.append(name)
        else:
            found += [member(name, i) for i in range(min(count, MAX_JOBS + 1))]
    return found


def expand(jobs: Sequence[JobSpec]) -> Expanded:
    out = Expanded()
    total = sum(size(job.with_items, job.matrix) for job in jobs)
    if total > MAX_JOBS:
        out.problems.append(f"the sweeps make {total} jobs; at most {MAX_JOBS} are allowed")
        return out
    for job in jobs:
        if job.with_items is not None and job.matrix is not None:
            out.problems.append(f"job {job.name!r} has both withItems and matrix: choose one")
            continue
        if job.with_items is None and job.matrix is None:
            continue
        count = size(job.with_items, job.matrix)
        if len(member(job.name, count - 1)) > MAX_NAME:
            out.problems.append(
                f"sweep {job.name!r}: its {count} jobs would be named up to "
                f"{member(job.name, count - 1)!r}, longer than {MAX_NAME} characters"
            )
            continue
        if job.finally_ is not None:
            out.problems.append(f"finally job {job.name!r} cannot be a sweep")
            continue
        names_ = tuple(member(job.name, i) for i in range(count))
        out.members[job.name] = names_
    for job in jobs:
        sweep = job.with_items is not None or job.matrix is not None
        if sweep and job.name in out.members:
            base = job.model_copy(update={"with_items": None, "matrix": None})
            for name, item in zip(
                out.members[job.name], items(job.with_items, job.matrix), strict=True
            ):
                out.jobs.append(base.model_copy(update={"name": name}))
                out.sweep_of[name] = job.name
                out.items[name] = item
        elif not sweep:
            out.jobs.append(job)
    if out.members:
        plain = {job.name for job in out.jobs if job.name not in out.sweep_of}
        for name in out.members:
            if name in plain:
                out.problems.append(f"job {name!r} is defined more than once (also a sweep)")
        out.jobs = [_depends_on_members(job, out.members) for job in out.jobs]
    return out


def _depends_on_members(job: JobSpec, members: Mapping[str, tuple[str, ...]]) -> JobSpec:
    if not any(d in members for d in job.depends_on):
        return job
    deps: list[str] = []
    for dep in job.depends_on:
        deps += members.get(dep, (dep,))
    return job.model_copy(update={"depends_on": list(dict.fromkeys(deps))})
