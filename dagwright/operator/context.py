"""What every execution's runner shares: clients, settings, the wake-up
registry and the instance's view of its peers."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from dagwright.core.ownership import preferred_owner
from dagwright.kube.objects import Kube
from dagwright.operator.cluster import ClusterView
from dagwright.operator.informer import PodInformer
from dagwright.settings import OperatorSettings
from dagwright.store.redis_store import Store
from dagwright.store.slots import Slots

log = logging.getLogger(__name__)


@dataclass
class Context:
    """What every runner shares: clients, settings, the wake-up registry."""

    settings: OperatorSettings
    kube: Kube
    store: Store
    slots: Slots
    view: ClusterView
    pods: PodInformer
    priority_classes: bool = False
    # Keyed by the execution's UID: a deleted and re-applied execution of the
    # same name is another one, and its runner may start before the old one ends.
    wakeups: dict[str, asyncio.Event] = field(default_factory=dict)
    # Runners waiting for a pool slot, woken when any slot is released.
    waiting: set[str] = field(default_factory=set)
    owned: set[str] = field(default_factory=set)  # executions this instance owns
    # Operator instances with a fresh heartbeat -> executions each owns.
    peers: dict[str, int] = field(default_factory=dict)

    def over_fair_share(self) -> bool:
        """Whether this instance owns more than its even share of all owned
        executions (its own count as it is now, not as its last heartbeat
        said: right after a burst of claims that one is still 0, and every
        instance looked over its share and handed its claims straight on)."""
        loads = {**self.peers, self.settings.instance_id: len(self.owned)}
        return len(self.owned) > -(-sum(loads.values()) // len(loads))  # ceil

    def claimant(self, uid: str, releasing: bool = False) -> str | None:
        """The live instance that should claim an unowned execution at once:
        the one rendezvous hashing prefers among those that can take one more
        without going above an even share. Every instance computes the same
        answer from the same heartbeats (when their views briefly differ, the
        Redis lease still lets only one win), so a burst of new executions
        spreads evenly instead of following the hash's luck. ``releasing``:
        as if this instance gave up one it owns (a hand-off)."""
        me = self.settings.instance_id
        loads = {**self.peers, me: len(self.owned) - releasing}
        share = -(-(sum(loads.values()) + 1) // len(loads))  # ceil, counting the new one
        eligible = [name for name, owned in loads.items() if owned + 1 <= share]
        return preferred_owner(uid, eligible)

    wanted: dict[str, int] = field(default_factory=dict)  # ready jobs without a slot
    node_readiness: dict[str, bool] = field(default_factory=dict)
    paused: bool = False  # the cluster-wide queue switch (REST: /queue/pause)
    # Set once this instance has seen its peers' heartbeats twice, a heartbeat
    # apart: instances started together then know of each other before
    # either claims anything.
    settled: asyncio.Event = field(default_factory=asyncio.Event)

    # Work that must finish whoever is cancelled (kept here: the loop holds tasks weakly).
    background: set[asyncio.Task[None]] = field(default_factory=set)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def wake(self, uid: str) -> None:
        event = self.wakeups.get(uid)
        if event is not None:
            event.set()

    def wake_owned(self) -> None:
        for uid in list(self.owned):
            self.wake(uid)

    def wake_waiting(self) -> None:
        for uid in list(self.waiting):
            self.wake(uid)


def failpoint(settings: OperatorSettings, name: str) -> None:
    """Die like ``kill -9`` at a named point, for the fault tests
    (``DAGWRIGHT_FAILPOINT``); never set in production."""
    if settings.failpoint == name:
        log.error("failpoint %s: exiting now", name)
        logging.shutdown()
        os._exit(137)
