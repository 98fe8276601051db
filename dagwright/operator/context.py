"""What every execution's runner shares: clients, settings, the wake-up
registry and the instance's view of its peers."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field

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
        """Whether this instance owns more than its even share of all owned executions."""
        total = sum(self.peers.values())
        instances = max(len(self.peers), 1)
        return len(self.owned) > -(-total // instances)  # ceil

    wanted: dict[str, int] = field(default_factory=dict)  # ready jobs without a slot
    node_readiness: dict[str, bool] = field(default_factory=dict)
    paused: bool = False  # the cluster-wide queue switch (REST: /queue/pause)

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
