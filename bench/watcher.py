"""Pod timings as a watch sees them (one clock: this process's)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from kubernetes_asyncio import client, watch


@dataclass
class PodTimes:
    added: dict[str, float] = field(default_factory=dict)
    running: dict[str, float] = field(default_factory=dict)
    succeeded: dict[str, float] = field(default_factory=dict)

    def count_succeeded(self, prefix: str = "") -> int:
        return sum(1 for n in self.succeeded if n.startswith(prefix))


@contextlib.asynccontextmanager
async def pod_times(core: client.CoreV1Api, namespace: str) -> AsyncIterator[PodTimes]:
    times = PodTimes()
    ready = asyncio.Event()

    async def run() -> None:
        version = None
        while True:
            if version is None:
                listing = await core.list_namespaced_pod(namespace, limit=1)
                version = listing.metadata.resource_version
                ready.set()
            try:
                async for event in watch.Watch().stream(
                    core.list_namespaced_pod,
                    namespace,
                    resource_version=version,
                    timeout_seconds=300,
                ):
                    pod = event["object"]
                    version = pod.metadata.resource_version
                    now = time.monotonic()
                    name = pod.metadata.name
                    times.added.setdefault(name, now)
                    phase = pod.status.phase if pod.status else None
                    if phase == "Running":
                        times.running.setdefault(name, now)
                    elif phase == "Succeeded":
                        times.succeeded.setdefault(name, now)
            except client.ApiException as exc:
                if exc.status != 410:
                    raise
                version = None

    task = asyncio.create_task(run())
    await ready.wait()
    try:
        yield times
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_count(times: PodTimes, prefix: str, count: int, timeout: float) -> float:
    """Until ``count`` pods named ``prefix*`` succeeded; the time it happened."""
    deadline = time.monotonic() + timeout
    while times.count_succeeded(prefix) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{times.count_succeeded(prefix)}/{count} {prefix}* pods succeeded")
        await asyncio.sleep(0.05)
    return max(t for n, t in times.succeeded.items() if n.startswith(prefix))
