"""Pod timings as a watch sees them (one clock: this process's).

The watch reads raw JSON lines: decoding every event into client models took
this process half a core, CPU the rig's components then lacked."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from kubernetes_asyncio import client


@dataclass
class PodTimes:
    added: dict[str, float] = field(default_factory=dict)
    running: dict[str, float] = field(default_factory=dict)
    succeeded: dict[str, float] = field(default_factory=dict)

    def count_succeeded(self, prefix: str = "") -> int:
        return sum(1 for n in self.succeeded if n.startswith(prefix))

    def record(self, pod: dict[str, Any], now: float) -> None:
        name = pod["metadata"]["name"]
        self.added.setdefault(name, now)
        phase = (pod.get("status") or {}).get("phase")
        if phase == "Running":
            self.running.setdefault(name, now)
        elif phase == "Succeeded":
            self.succeeded.setdefault(name, now)


@contextlib.asynccontextmanager
async def pod_times(core: client.CoreV1Api, namespace: str) -> AsyncIterator[PodTimes]:
    times = PodTimes()
    ready = asyncio.Event()

    async def run() -> None:
        version = None
        while True:
            if version is None:
                listing = await core.list_namespaced_pod(namespace, _preload_content=False)
                body = json.loads(await listing.read())
                version = body["metadata"]["resourceVersion"]
                for pod in body["items"]:
                    times.record(pod, time.monotonic())
                ready.set()
            response = await core.list_namespaced_pod(
                namespace,
                watch=True,
                resource_version=version,
                timeout_seconds=300,
                _preload_content=False,
            )
            async with response:
                async for line in response.content:
                    event = json.loads(line)
                    pod = event["object"]
                    if event["type"] == "ERROR":
                        version = None  # 410 Gone: too old, list again
                        break
                    version = pod["metadata"]["resourceVersion"]
                    times.record(pod, time.monotonic())

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
