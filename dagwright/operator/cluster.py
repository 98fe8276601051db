"""What the watches show of nodes and pools: the picture placement and
failover decisions are made from."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dagwright.core.placement import Pool


@dataclass(frozen=True)
class NodeInfo:
    name: str
    labels: Mapping[str, str]
    ready: bool
    cordoned: bool = False
    last_heartbeat: str | None = None  # the Ready condition's lastHeartbeatTime

    @property
    def schedulable(self) -> bool:
        return self.ready and not self.cordoned


# A node missing from the watch this long is taken as deleted (confirmed gone).
# Less would mistake a node the watch has not shown yet for a dead one.
NODE_GONE_AFTER_SECONDS = 5.0


class ClusterView:
    """What the watches show of pools, nodes and running pods: kopf indexes,
    live objects bound once by the first daemon (handlers receive them)."""

    def __init__(self, running: Mapping[str, Collection[Any]]) -> None:
        self._pools: Mapping[Any, Iterable[Pool]] = {}
        self._nodes: Mapping[Any, Iterable[NodeInfo]] = {}
        self._running = running  # pool -> its unfinished pods (the pod informer's)
        self._missing_since: dict[str, float] = {}

    def bind(
        self, pools: Mapping[Any, Iterable[Pool]], nodes: Mapping[Any, Iterable[NodeInfo]]
    ) -> None:
        self._pools, self._nodes = pools, nodes

    def pools(self) -> list[Pool]:
        return [pool for values in self._pools.values() for pool in values]

    def nodes(self) -> list[NodeInfo]:
        return [node for values in self._nodes.values() for node in values]

    def node_health(self) -> Callable[[str], tuple[bool, bool]]:
        """A lookup: node name -> (lost, gone) for this pass."""
        known = {n.name: n for n in self.nodes()}
        now = time.monotonic()
        for name in list(self._missing_since):
            if name in known:
                del self._missing_since[name]
        # Every node NotReady at once is the control plane's trouble (an API
        # server or controller-manager outage, a partition of the control
        # plane), not every machine dying: like kube-controller-manager's
        # full-disruption mode, fail nothing over until some node is Ready.
        disrupted = bool(known) and not any(n.ready for n in known.values())

        def health(name: str) -> tuple[bool, bool]:
            node = known.get(name)
            if node is not None:
                return (not node.ready and not disrupted, False)
            since = self._missing_since.setdefault(name, now)
            return (True, now - since >= NODE_GONE_AFTER_SECONDS)

        return health

    def running(self, pool: str) -> int:
        return len(self._running.get(pool, ()))

    def members(self, pool: Pool) -> list[str]:
        """The pool's schedulable nodes, by name."""
        selector = pool.spec.node_selector.items()
        return sorted(
            n.name
            for n in self.nodes()
            if n.schedulable and all(n.labels.get(k) == v for k, v in selector)
        )

    def capacity(self, pool: Pool) -> int:
        return len(self.members(pool)) * pool.spec.max_concurrency

    def load(self, pool: Pool) -> float:
        capacity = self.capacity(pool)
        return self.running(pool.name) / capacity if capacity else float("inf")
