"""Helpers for end-to-end tests: create executions, wait for phases, and a
pod history recorder that checks the never-twice invariants."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import httpx
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from dagwright.api.app import create_app
from dagwright.api.settings import ApiSettings
from dagwright.names import GROUP, VERSION
from tests.conftest import wait_for

SIM = "sim.dagwright.io/duration"
JOB_LABEL = "dagwright.io/job"


def attempt_key(pod: Any) -> str:
    """``<execution>-<job>-<attempt>``: how tests name an attempt's pod (its
    real name also carries a hash of the execution's UID)."""
    labels = pod.metadata.labels or {}
    return "-".join(
        labels.get(k, "?") for k in ("dagwright.io/execution", JOB_LABEL, "dagwright.io/attempt")
    )


async def read_pod(core: client.CoreV1Api, namespace: str, name: str) -> Any:
    """The pod of attempt ``name`` (``<execution>-<job>-<attempt>``, see
    ``attempt_key``), or None if it does not exist (yet, or any more)."""
    listing = await core.list_namespaced_pod(namespace, label_selector=JOB_LABEL)
    for pod in listing.items:
        if attempt_key(pod) == name:
            return pod
    return None


def dag(jobs: list[dict[str, Any]], duration: str = "300ms", **spec: Any) -> dict[str, Any]:
    """A DAGExecution spec whose jobs need a cpu pool and run ``duration`` on KWOK."""
    defaults = {"image": "busybox", "requires": ["cpu"], "annotations": {SIM: duration}}
    return {"defaults": defaults, "jobs": jobs, **spec}


async def running_pod(core: client.CoreV1Api, namespace: str, attempt: str) -> Any:
    """The pod of ``attempt`` (see ``attempt_key``) if it is Running, else None."""
    pod = await read_pod(core, namespace, attempt)
    return pod if pod is not None and pod.status.phase == "Running" else None


async def create_execution(
    kube: client.ApiClient, namespace: str, name: str, spec: dict[str, Any]
) -> dict[str, Any]:
    objects = client.CustomObjectsApi(kube)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DAGExecution",
        "metadata": {"name": name},
        "spec": spec,
    }
    result: dict[str, Any] = await objects.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "dagexecutions", body
    )
    return result


async def get_execution(kube: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    objects = client.CustomObjectsApi(kube)
    result: dict[str, Any] = await objects.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "dagexecutions", name
    )
    return result


async def merge_patch(
    kube: client.ApiClient, namespace: str, name: str, body: dict[str, Any], status: bool = False
) -> None:
    """A JSON merge patch of a DAGExecution, or of its status subresource."""
    objects = client.CustomObjectsApi(kube)
    # The stubs lack _content_type.
    patch: Any = (
        objects.patch_namespaced_custom_object_status
        if status
        else objects.patch_namespaced_custom_object
    )
    await patch(
        GROUP,
        VERSION,
        namespace,
        "dagexecutions",
        name,
        body,
        _content_type="application/merge-patch+json",
    )


async def patch_spec(
    kube: client.ApiClient, namespace: str, name: str, spec: dict[str, Any]
) -> None:
    await merge_patch(kube, namespace, name, {"spec": spec})


async def wait_phase(
    kube: client.ApiClient, namespace: str, name: str, *phases: str, within: float = 60.0
) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        obj = await get_execution(kube, namespace, name)
        return obj if (obj.get("status") or {}).get("phase") in phases else None

    return await wait_for(f"DAGExecution {name} in {phases}", reached, within=within)


@dataclass
class PodEvent:
    at: float  # time.monotonic() when the test saw it
    type: str
    name: str
    job: str
    attempt: int
    phase: str
    deleting: bool
    node: str | None
    epoch: int = 0  # the owner epoch that created the pod
    uid: str = ""
    execution: str = ""
    key: str = ""  # <execution>-<job>-<attempt> (see attempt_key)
    owner: str = ""  # the UID of the execution that controls the pod


@dataclass
class PodHistory:
    """Every pod transition seen by a watch, in order."""

    events: list[PodEvent] = field(default_factory=list)

    async def when(
        self, name: str, phase: str | None = None, type_: str | None = None, within: float = 5.0
    ) -> float:
        """``first(...)`` once the watch has brought it: a GET can see a
        phase a moment before the watch delivers it."""

        async def seen() -> float | None:
            try:
                return self.first(name, phase=phase, type_=type_)
            except AssertionError:
                return None

        what = f"the watch to show {name} {phase or ''} {type_ or ''}"
        return await wait_for(what, seen, within=within)

    def first(self, name: str, phase: str | None = None, type_: str | None = None) -> float:
        for e in self.events:
            if (
                e.key == name
                and (phase is None or e.phase == phase)
                and (type_ is None or e.type == type_)
            ):
                return e.at
        raise AssertionError(
            f"pod {name} never seen {phase or ''} {type_ or ''}; saw {self.names()}"
        )

    def names(self) -> list[str]:
        """The attempts seen, as ``<execution>-<job>-<attempt>``."""
        return sorted({e.key for e in self.events})

    def pod_names(self) -> list[str]:
        """The real pod names seen."""
        return sorted({e.name for e in self.events})

    def attempts(self, job: str) -> list[int]:
        return sorted({e.attempt for e in self.events if e.job == job})

    def check_never_twice(self) -> None:
        """No job ever had two live attempts at once; no attempt name reused after its pod ended."""
        live: dict[tuple[str, str], set[str]] = {}
        for e in self.events:
            # Per execution instance: a deleted execution's pods may still be
            # stopping while one re-applied under its name runs its own.
            pods = live.setdefault((e.owner or e.execution, e.job), set())
            if e.type == "DELETED" or e.phase in ("Succeeded", "Failed"):
                pods.discard(e.name)
            else:
                pods.add(e.name)
            assert len(pods) <= 1, f"job {e.job} had attempts {sorted(pods)} alive at once"

    def max_alive_per_node(self) -> dict[str, int]:
        """Most pods alive at once on each node (bound pods only)."""
        alive: dict[str, set[str]] = {}
        most: dict[str, int] = {}
        for e in self.events:
            for pods in alive.values():
                if e.type == "DELETED" or e.phase in ("Succeeded", "Failed"):
                    pods.discard(e.name)
            if e.node and e.type != "DELETED" and e.phase not in ("Succeeded", "Failed"):
                alive.setdefault(e.node, set()).add(e.name)
                most[e.node] = max(most.get(e.node, 0), len(alive[e.node]))
        return most

    def nodes_of(self) -> dict[str, str]:
        """Attempt (see ``attempt_key``) -> the node it was bound to."""
        return {e.key: e.node for e in self.events if e.node}

    def max_alive(self) -> int:
        alive: set[str] = set()
        most = 0
        for e in self.events:
            if e.type == "DELETED" or e.phase in ("Succeeded", "Failed"):
                alive.discard(e.name)
            else:
                alive.add(e.name)
            most = max(most, len(alive))
        return most


@contextlib.asynccontextmanager
async def record_pods(core: client.CoreV1Api, namespace: str) -> AsyncIterator[PodHistory]:
    history = PodHistory()
    ready = asyncio.Event()

    last: dict[str, PodEvent] = {}

    def record(type_: str, pod: Any) -> None:
        labels = pod.metadata.labels or {}
        if "dagwright.io/job" not in labels:
            return
        event = PodEvent(
            at=time.monotonic(),
            type=type_,
            name=pod.metadata.name,
            job=labels["dagwright.io/job"],
            attempt=int(labels.get("dagwright.io/attempt", "0")),
            phase=pod.status.phase or "Pending",
            deleting=pod.metadata.deletion_timestamp is not None,
            node=pod.spec.node_name,
            epoch=int(labels.get("dagwright.io/epoch", "0")),
            uid=pod.metadata.uid,
            execution=labels.get("dagwright.io/execution", ""),
            key=attempt_key(pod),
            owner=next((r.uid for r in pod.metadata.owner_references or [] if r.controller), ""),
        )
        history.events.append(event)
        last[event.name] = event

    def resync(pods: list[Any]) -> None:
        listed = {p.metadata.name for p in pods}
        for name, seen in list(last.items()):
            if name not in listed and seen.type != "DELETED":
                history.events.append(replace(seen, at=time.monotonic(), type="DELETED"))
                last[name] = history.events[-1]
        for pod in pods:
            record("MODIFIED", pod)

    async def run() -> None:
        version: str | None = None
        while True:
            try:
                if version is None:
                    listing = await core.list_namespaced_pod(namespace)
                    version = listing.metadata.resource_version
                    if ready.is_set():
                        # A relist after 410: what changed meanwhile, as events.
                        resync(listing.items)
                    ready.set()
                async for event in watch.Watch().stream(
                    core.list_namespaced_pod, namespace, resource_version=version
                ):
                    pod = event["object"]
                    version = pod.metadata.resource_version
                    record(event["type"], pod)
            except ApiException as exc:
                if exc.status == 410:
                    version = None  # too old: list again (events in between are lost)
                elif exc.status in (429, 500, 503, 504):
                    await asyncio.sleep(0.2)  # etcd away (a fault test stops it): ask again
                else:
                    raise
            except (TimeoutError, aiohttp.ClientError, OSError):
                # The API server went away (a fault test stops it): resume
                # from the last version seen; nothing happens while it is down.
                await asyncio.sleep(0.2)

    task = asyncio.create_task(run())
    await ready.wait()
    try:
        yield history
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def api_in_process(
    kube: client.ApiClient, redis_url: str, namespace: str, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """The REST API app in this process (its lifespan run), on the test's
    Kubernetes client and Redis, and an HTTP client for it."""
    app = create_app(ApiSettings(redis_url=redis_url, namespace=namespace, **settings), kube=kube)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            yield http
