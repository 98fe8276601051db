"""What the watches show of nodes and pools: the picture placement and
failover decisions are made from."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dagwright.core.placement import Pool
from dagwright.core.spec import JobTemplateSpec, visible_templates


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


@dataclass(frozen=True)
class Registered:
    """What a worker registered over REST says of the node it names (its
    hostname is the Node's name): that machine's own word, which does not
    depend on the control plane the way a node's Ready condition does."""

    load: int  # its last reported currentLoad
    max_concurrency: int
    silent: bool  # no heartbeat within its timeout: the machine is lost
    draining: bool  # unregistered: no new jobs, running ones finish

    @classmethod
    def of(cls, record: Mapping[str, Any], now: float) -> Registered:
        timeout = float(record.get("timeoutSeconds") or 90.0)
        beat = float(record.get("lastHeartbeat") or 0.0)
        return cls(
            load=int(record.get("currentLoad") or 0),
            max_concurrency=int(record.get("maxConcurrency") or 1),
            silent=now - beat > timeout,
            draining=bool(record.get("draining")),
        )


# A node missing from the watch this long is taken as deleted (confirmed gone).
# Less would mistake a node the watch has not shown yet for a dead one.
NODE_GONE_AFTER_SECONDS = 5.0


class ClusterView:
    """What the watches show of pools, nodes and running pods: kopf indexes,
    live objects bound once by the first daemon (handlers receive them)."""

    def __init__(self, running: Mapping[str, Collection[Any]]) -> None:
        self._pools: Mapping[Any, Iterable[Pool]] = {}
        self._templates: Mapping[tuple[str, str], Iterable[JobTemplateSpec]] = {}
        self._pod_security: Mapping[str, Iterable[str]] = {}
        self._nodes: Mapping[Any, Iterable[NodeInfo]] = {}
        self._running = running  # pool -> its unfinished pods (the pod informer's)
        self._missing_since: dict[str, float] = {}
        self.registered: dict[str, Registered] = {}  # node name -> its registered worker

    def register(self, records: Iterable[Mapping[str, Any]]) -> bool:
        """The registry as Redis holds it now (records expire, so absent:
        unknown). True if a node's worker fell silent since the last look:
        the runners with pods there should look at once."""
        now = time.time()
        before = {name for name, w in self.registered.items() if w.silent}
        fresh = {str(r["hostname"]): Registered.of(r, now) for r in records if r.get("hostname")}
        # A worker that fell silent stays so once its registration lapses,
        # until it registers again: the machine is lost until it says otherwise
        # (its registration outlives the silence by the timeout, while the node
        # may not be NotReady yet, and its jobs would land there again).
        known = {n.name for n in self.nodes()}
        for name in before - fresh.keys():
            if name in known:
                fresh[name] = self.registered[name]
        self.registered = fresh
        return any(w.silent and name not in before for name, w in fresh.items())

    def bind(
        self,
        pools: Mapping[Any, Iterable[Pool]],
        nodes: Mapping[Any, Iterable[NodeInfo]],
        templates: Mapping[tuple[str, str], Iterable[JobTemplateSpec]],
        pod_security: Mapping[str, Iterable[str]],
    ) -> None:
        self._pools, self._nodes, self._templates = pools, nodes, templates
        self._pod_security = pod_security

    def restricted(self, namespace: str) -> bool:
        """Does the namespace enforce the `restricted` Pod Security level?"""
        return "restricted" in self._pod_security.get(namespace, ())

    def templates(self, namespace: str, shared: str | None) -> dict[str, JobTemplateSpec]:
        """The JobTemplates jobs in ``namespace`` see (``visible_templates``)."""
        found = (
            (space, name, spec)
            for (space, name), specs in self._templates.items()
            for spec in specs
        )
        return visible_templates(found, namespace, shared)

    def pools(self) -> list[Pool]:
        return [pool for values in self._pools.values() for pool in values]

    def nodes(self) -> list[NodeInfo]:
        return [node for values in self._nodes.values() for node in values]

    def node_health(self) -> Callable[[str], tuple[bool, bool, bool]]:
        """A lookup: node name -> (lost, gone, silent) for this pass. Silent:
        its registered worker stopped heartbeating, the machine's own word
        that it is lost (the replacement need not wait for the old pod)."""
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
        # Likewise most registered workers silent at once: the API or Redis
        # they report through was away, not the machines.
        workers = self.registered
        on_nodes = [w for name, w in workers.items() if name in known]
        hushed = len(on_nodes) >= 2 and 2 * sum(w.silent for w in on_nodes) > len(on_nodes)

        def health(name: str) -> tuple[bool, bool, bool]:
            worker = workers.get(name)
            silent = worker is not None and worker.silent and not hushed
            node = known.get(name)
            if node is not None:
                return ((not node.ready and not disrupted) or silent, False, silent)
            since = self._missing_since.setdefault(name, now)
            return (True, now - since >= NODE_GONE_AFTER_SECONDS, silent)

        return health

    def running(self, pool: str) -> int:
        return len(self._running.get(pool, ()))

    def members(self, pool: Pool) -> list[str]:
        """The pool's schedulable nodes, by name (not those whose registered
        worker is silent or draining)."""
        selector = pool.spec.node_selector.items()
        workers = self.registered
        return sorted(
            n.name
            for n in self.nodes()
            if n.schedulable
            and all(n.labels.get(k) == v for k, v in selector)
            and not (n.name in workers and (workers[n.name].silent or workers[n.name].draining))
        )

    def slots(self, pool: Pool, node: str) -> int:
        """Jobs the node takes at once: its registered worker's maxConcurrency, else the pool's."""
        worker = self.registered.get(node)
        return worker.max_concurrency if worker is not None else pool.spec.max_concurrency

    def reported(self) -> dict[str, int]:
        """Node -> the load its registered worker reports."""
        return {name: w.load for name, w in self.registered.items() if w.load}

    def capacity(self, pool: Pool) -> int:
        return sum(self.slots(pool, node) for node in self.members(pool))

    def load(self, pool: Pool) -> float:
        capacity = self.capacity(pool)
        return self.running(pool.name) / capacity if capacity else float("inf")
