"""Which WorkerPool a job runs in: the pools whose capabilities cover what
the job requires; among those, the least loaded (ties: by name)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dagwright.core.spec import WorkerPoolSpec


@dataclass(frozen=True)
class Pool:
    name: str
    spec: WorkerPoolSpec


def _system_domain(key: str) -> bool:
    domain = key.split("/", 1)[0] if "/" in key else ""
    return any(domain == d or domain.endswith(f".{d}") for d in ("kubernetes.io", "k8s.io"))


def forbidden_annotations(annotations: Iterable[str], pool: Pool | None) -> list[str]:
    """Annotation keys of a job that its pool does not let through to pods:
    Kubernetes' own (``*.kubernetes.io/``, ``*.k8s.io/``: AppArmor and
    seccomp profiles among them, which would undo the pods' restricted
    security context) unless the pool lists the key, or a prefix of it, in
    ``allowedAnnotations``."""
    allowed = pool.spec.allowed_annotations if pool is not None else []
    return sorted(
        key
        for key in annotations
        if _system_domain(key) and not any(key.startswith(prefix) for prefix in allowed)
    )


def capabilities(pools: Iterable[Pool]) -> set[str]:
    offered: set[str] = set()
    for pool in pools:
        offered.update(pool.spec.capabilities)
    return offered


def eligible(requires: frozenset[str], pools: Iterable[Pool]) -> list[Pool]:
    return [p for p in pools if requires <= set(p.spec.capabilities)]


def choose_pool(
    requires: frozenset[str], pools: Iterable[Pool], load: Mapping[str, float] | None = None
) -> Pool | None:
    """The eligible pool with the lowest load (running jobs / slots), or None."""
    candidates = eligible(requires, pools)
    if not candidates:
        return None
    load = load or {}
    return min(candidates, key=lambda p: (load.get(p.name, 0.0), p.name))
