"""Pod timings as a watch sees them (one clock: this process's).

The watch reads raw JSON lines: decoding every event into client models took
this process half a core, CPU the rig's components then lacked."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes_asyncio import client

from dagwright.names import ATTEMPT_LABEL, EXECUTION_LABEL, GROUP, JOB_LABEL, VERSION


@dataclass
class PodTimes:
    added: dict[str, float] = field(default_factory=dict)
    running: dict[str, float] = field(default_factory=dict)
    succeeded: dict[str, float] = field(default_factory=dict)
    pod_names: dict[str, str] = field(default_factory=dict)  # attempt -> the pod's real name
    # Succeeded pods in order, and per prefix how far they were counted: the
    # waits poll 20 times a second, and rescanning 10,000 names each time
    # took CPU from the rig under test.
    _finished: list[str] = field(default_factory=list)
    _counted: dict[str, tuple[int, int]] = field(default_factory=dict)

    def count_succeeded(self, prefix: str = "") -> int:
        upto, count = self._counted.get(prefix, (0, 0))
        count += sum(1 for n in self._finished[upto:] if n.startswith(prefix))
        self._counted[prefix] = (len(self._finished), count)
        return count

    def record(self, pod: dict[str, Any], now: float) -> None:
        # Attempts are named <execution>-<job>-<attempt> here, as their labels
        # say: a pod's own name also carries a hash of the execution's UID.
        labels = pod["metadata"].get("labels") or {}
        parts = [labels.get(k) for k in (EXECUTION_LABEL, JOB_LABEL, ATTEMPT_LABEL)]
        name = "-".join(map(str, parts)) if all(parts) else pod["metadata"]["name"]
        self.pod_names[name] = pod["metadata"]["name"]
        self.added.setdefault(name, now)
        phase = (pod.get("status") or {}).get("phase")
        if phase == "Running":
            self.running.setdefault(name, now)
        elif phase == "Succeeded" and name not in self.succeeded:
            self.succeeded[name] = now
            self._finished.append(name)


@dataclass
class Phases:
    """DAGExecution name -> its status phase, as a watch sees them."""

    phases: dict[str, str] = field(default_factory=dict)

    def count(self, phase: str) -> int:
        return sum(1 for p in self.phases.values() if p == phase)

    def record(self, obj: dict[str, Any]) -> None:
        self.phases[obj["metadata"]["name"]] = (obj.get("status") or {}).get("phase") or ""


async def _list_watch(
    list_call: Callable[..., Awaitable[Any]],
    record: Callable[[dict[str, Any]], None],
    ready: asyncio.Event,
) -> None:
    version = None
    while True:
        if version is None:
            listing = await list_call(_preload_content=False)
            body = json.loads(await listing.read())
            version = body["metadata"]["resourceVersion"]
            for obj in body["items"]:
                record(obj)
            ready.set()
        response = await list_call(
            watch=True, resource_version=version, timeout_seconds=300, _preload_content=False
        )
        async with response:
            async for line in response.content:
                event = json.loads(line)
                obj = event["object"]
                if event["type"] == "ERROR":
                    version = None  # 410 Gone: too old, list again
                    break
                version = obj["metadata"]["resourceVersion"]
                record(obj)


@contextlib.asynccontextmanager
async def _following(
    list_call: Callable[..., Awaitable[Any]], record: Callable[[dict[str, Any]], None]
) -> AsyncIterator[None]:
    ready = asyncio.Event()
    task = asyncio.create_task(_list_watch(list_call, record, ready))
    await ready.wait()
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def pod_times(core: client.CoreV1Api, namespace: str) -> AsyncIterator[PodTimes]:
    times = PodTimes()
    list_pods = functools.partial(core.list_namespaced_pod, namespace)
    async with _following(list_pods, lambda pod: times.record(pod, time.monotonic())):
        yield times


@contextlib.asynccontextmanager
async def execution_phases(
    objects: client.CustomObjectsApi, namespace: str
) -> AsyncIterator[Phases]:
    """A watch, where polling a list of 500 executions was a load on the API server."""
    phases = Phases()
    list_executions = functools.partial(
        objects.list_namespaced_custom_object, GROUP, VERSION, namespace, "dagexecutions"
    )
    async with _following(list_executions, phases.record):
        yield phases


async def wait_count(times: PodTimes, prefix: str, count: int, timeout: float) -> float:
    """Until ``count`` pods named ``prefix*`` succeeded; the time it happened."""
    deadline = time.monotonic() + timeout
    while times.count_succeeded(prefix) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{times.count_succeeded(prefix)}/{count} {prefix}* pods succeeded")
        await asyncio.sleep(0.05)
    return max(t for n, t in times.succeeded.items() if n.startswith(prefix))
