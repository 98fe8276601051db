"""How many nodes a WorkerPool wants: up when jobs queue for its slots, down
when nodes sit idle, always within [minNodes, maxNodes], never below the
nodes that still run jobs. Pure: the shell feeds observations and the
timestamps it remembers, and applies the result to a ``/scale`` subresource."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from dagwright.core.durations import parse_duration
from dagwright.core.spec import Autoscaling


@dataclass(frozen=True)
class PoolObservation:
    nodes: tuple[str, ...]  # ready, schedulable nodes of the pool
    used: Mapping[str, int]  # held slots per node
    queued: int  # jobs waiting for a slot of this pool
    slots_per_node: int
    # Nodes that may be removed: those made for this pool (its marker label)
    # that run no pod at all. None: every node (tests of the arithmetic).
    removable: frozenset[str] | None = None


@dataclass(frozen=True)
class ScaleMemory:
    """What the decision needs to remember between passes."""

    queued_since: float | None = None  # jobs have queued continuously since
    idle_since: Mapping[str, float] | None = None  # node -> idle (no slot used) since


@dataclass(frozen=True)
class ScaleDecision:
    desired: int
    memory: ScaleMemory
    reason: str
    drain: tuple[str, ...] = ()  # idle nodes to remove first (cordon them)


def decide_scale(
    spec: Autoscaling,
    seen: PoolObservation,
    current_desired: int | None,
    memory: ScaleMemory,
    now: float,
) -> ScaleDecision:
    nodes = len(seen.nodes)
    current = current_desired if current_desired is not None else nodes
    busy = sum(1 for n in seen.nodes if seen.used.get(n, 0) > 0)
    idle_since = dict(memory.idle_since or {})
    for node in seen.nodes:
        if seen.used.get(node, 0) > 0:
            idle_since.pop(node, None)
        else:
            idle_since.setdefault(node, now)
    for node in list(idle_since):
        if node not in seen.nodes:
            del idle_since[node]
    queued_since = (memory.queued_since or now) if seen.queued > 0 else None
    remembered = ScaleMemory(queued_since, idle_since)

    def bounded(n: int) -> int:
        return max(spec.min_nodes, min(spec.max_nodes, n))

    if seen.queued > 0:
        used = sum(seen.used.values())
        needed = math.ceil((used + seen.queued) / seen.slots_per_node)
        target = bounded(max(needed, current, busy))
        waited = now - (queued_since or now)
        if target > current and waited >= parse_duration(spec.scale_up_delay):
            return ScaleDecision(target, remembered, f"{seen.queued} jobs queued for {waited:.0f}s")
        return ScaleDecision(bounded(max(current, busy)), remembered, "jobs queued")
    delay = parse_duration(spec.scale_down_delay)
    removable = sorted(
        n
        for n, since in idle_since.items()
        if now - since >= delay and (seen.removable is None or n in seen.removable)
    )
    # At most scaleDownStep nodes per pass: a mistake costs one node, not the pool.
    target = bounded(max(nodes - min(len(removable), spec.scale_down_step), busy))
    if target < current:
        drain = tuple(removable[: max(nodes - target, 0)])
        return ScaleDecision(target, remembered, f"{len(drain)} nodes idle for {delay:g}s", drain)
    return ScaleDecision(bounded(max(current, busy)), remembered, "steady")
