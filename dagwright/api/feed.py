"""What the web console's live views are fed: one watch of DAGExecutions per
namespace in this API process, shared by every browser looking at it (no
browser polls the Kubernetes API), and the operator's Redis channel of the
jobs each pass changes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from dagwright.api.models import ExecutionSummary
from dagwright.names import EXECUTIONS, GROUP, VERSION

log = logging.getLogger(__name__)

# Events a browser may fall behind by before it is told to fetch afresh.
BACKLOG = 2000
Event = tuple[str, dict[str, Any]]  # (SSE event name, its data)


class Subscriber:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Event] = asyncio.Queue(BACKLOG)
        self.lagged = False

    def send(self, event: Event) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            # A slow reader: drop what it missed and have it fetch the state
            # again, rather than hold an unbounded backlog for it.
            self.lagged = True


class ExecutionFeed:
    def __init__(self, objects: client.CustomObjectsApi):
        self.objects = objects
        self.subscribers: dict[str, set[Subscriber]] = {}
        self.watches: dict[str, asyncio.Task[None]] = {}

    def subscribe(self, namespace: str) -> Subscriber:
        subscriber = Subscriber()
        self.subscribers.setdefault(namespace, set()).add(subscriber)
        if namespace not in self.watches:
            self.watches[namespace] = asyncio.create_task(self._watch(namespace))
        return subscriber

    def unsubscribe(self, namespace: str, subscriber: Subscriber) -> None:
        found = self.subscribers.get(namespace, set())
        found.discard(subscriber)
        if not found:
            self.subscribers.pop(namespace, None)
            task = self.watches.pop(namespace, None)
            if task is not None:
                task.cancel()

    async def close(self) -> None:
        for task in self.watches.values():
            task.cancel()
        for task in list(self.watches.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.watches.clear()

    def _send(self, namespace: str, event: Event) -> None:
        for subscriber in list(self.subscribers.get(namespace, ())):
            subscriber.send(event)

    async def _watch(self, namespace: str) -> None:
        failures = 0
        first = True
        while True:
            try:
                if not first:  # events may have been missed: browsers fetch afresh
                    self._send(namespace, ("resync", {}))
                first = False
                listing = await self.objects.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, EXECUTIONS, limit=1
                )
                version = listing["metadata"]["resourceVersion"]
                stream = watch.Watch()
                async with stream:
                    async for event in stream.stream(
                        self.objects.list_namespaced_custom_object,
                        GROUP,
                        VERSION,
                        namespace,
                        EXECUTIONS,
                        resource_version=version,
                        timeout_seconds=300,
                    ):
                        obj = event["object"]
                        if not isinstance(obj, dict) or obj.get("kind") == "Status":
                            break  # expired (410): list again
                        summary = ExecutionSummary.of(namespace, obj)
                        data = {"type": event["type"], **summary.model_dump(by_alias=True)}
                        self._send(namespace, ("execution", data))
                        failures = 0
            except asyncio.CancelledError:
                raise
            except (ApiException, OSError, ValueError, KeyError) as exc:
                failures += 1
                log.warning("watching executions in %s failed: %s", namespace, exc)
                await asyncio.sleep(min(0.5 * 2**failures, 10.0))
