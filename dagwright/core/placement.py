"""Which WorkerPool a job runs in.

Best fit first: among the pools whose capabilities cover what the job
requires (and whose policy allows its settings), those that offer the
fewest capabilities beyond it, an unneeded accelerator (gpu, tpu) counting
more than any number of others; a job that requires nothing is placed as
if it required ``cpu``. So a cpu job runs in a gpu pool only when no pool
without gpu can ever take it (none has a ready node, none can scale up).
Among the pools that fit equally well, the least loaded (ties: by name)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from dagwright.core.policy import JobPolicy
from dagwright.core.spec import WorkerPoolSpec

# What a job that requires nothing is placed as requiring.
BASELINE = frozenset({"cpu"})
# Capabilities whose waste costs most: a job that does not need them goes
# where they are only when no other pool can ever take it.
ACCELERATORS = frozenset({"gpu", "tpu"})
ACCELERATOR_WEIGHT = 1000


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


def eligible(requires: frozenset[str], pools: Iterable[Pool]) -> list[Pool]:
    return [p for p in pools if requires <= set(p.spec.capabilities)]


def policy_of(pool: Pool, default: JobPolicy) -> JobPolicy:
    return pool.spec.policy if pool.spec.policy is not None else default


def fits(requires: frozenset[str], pool: Pool) -> int:
    """What the pool offers beyond what the job needs: 0 is the best fit. An
    accelerator outweighs any number of other capabilities, so a cpu job
    prefers a high-memory pool to a gpu pool."""
    beyond = set(pool.spec.capabilities) - (requires or BASELINE)
    return sum(ACCELERATOR_WEIGHT if c in ACCELERATORS else 1 for c in beyond)


def best_fit(
    requires: frozenset[str], candidates: Sequence[Pool], usable: Callable[[Pool], bool]
) -> list[Pool]:
    """The candidates of the best fit that has a usable pool (one with ready
    nodes or that can scale up); the best fit of all when none is usable (the
    job waits there)."""
    if len(candidates) <= 1:
        return list(candidates)
    tiers: dict[int, list[Pool]] = {}
    for pool in candidates:
        tiers.setdefault(fits(requires, pool), []).append(pool)
    ranked = [tiers[k] for k in sorted(tiers)]
    return next((tier for tier in ranked if any(usable(p) for p in tier)), ranked[0])


def scalable(pool: Pool) -> bool:
    scaling = pool.spec.autoscaling
    return scaling is not None and scaling.max_nodes > 0


def choose_pool(
    requires: frozenset[str], pools: Iterable[Pool], load: Mapping[str, float] | None = None
) -> Pool | None:
    """The best-fitting eligible pool with the lowest load (running jobs /
    slots), or None."""
    candidates = best_fit(requires, eligible(requires, pools), lambda _: True)
    if not candidates:
        return None
    load = load or {}
    return min(candidates, key=lambda p: (load.get(p.name, 0.0), p.name))
