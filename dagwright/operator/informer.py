"""The operator's pods, kept in memory from one list+watch.

kopf handled each pod event through its whole per-object machinery (object
memories, loggers, handler invocation with every index as an argument,
patch application): a third of the operator's CPU on a 2,000-job DAG. Pods
need none of it: this reads the raw watch stream (label-selected by the API
server), keeps the core's view of each pod by execution and the running pods
by pool, and wakes the runner a change concerns.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from dagwright.core.state import PodObservation
from dagwright.operator.kube import raise_for_status
from dagwright.operator.pods import EXECUTION_LABEL, POOL_LABEL, observe

log = logging.getLogger(__name__)

ExecutionKey = tuple[str, str]  # (namespace, execution name)
PodKey = tuple[str, str]  # (namespace, pod name)

_RETRY_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)


AttemptKey = tuple[str, int]  # (job, attempt)


class ExecutionPods:
    """One execution's pods: by (job, attempt), and which are not finished
    (a pass looks closer only at those: a big DAG's finished pods are most)."""

    __slots__ = ("all", "unfinished")

    def __init__(self) -> None:
        self.all: dict[AttemptKey, PodObservation] = {}
        self.unfinished: set[AttemptKey] = set()


class _Pod:
    __slots__ = ("execution", "pool", "seen")

    def __init__(self, execution: ExecutionKey, pool: str | None, seen: PodObservation):
        self.execution, self.pool, self.seen = execution, pool, seen

    @property
    def attempt(self) -> AttemptKey:
        return (self.seen.job, self.seen.attempt)


class PodIndex:
    """What the watch shows: pods by execution, unfinished pods by pool."""

    def __init__(self) -> None:
        self._pods: dict[PodKey, _Pod] = {}
        self.by_execution: dict[ExecutionKey, ExecutionPods] = {}
        self.running_by_pool: dict[str, set[PodKey]] = {}

    def pods_of(self, execution: ExecutionKey) -> ExecutionPods:
        return self.by_execution.get(execution) or ExecutionPods()

    def apply(self, kind: str, pod: Mapping[str, Any]) -> ExecutionKey | None:
        """One watch event; returns the execution whose pods changed, if any."""
        meta = pod.get("metadata") or {}
        key = (meta.get("namespace") or "", meta.get("name") or "")
        execution = (meta.get("labels") or {}).get(EXECUTION_LABEL)
        seen = observe(dict(pod)) if kind != "DELETED" and execution else None
        old = self._remove(key)
        if seen is None or not execution:
            return old.execution if old else None
        labels = meta.get("labels") or {}
        entry = _Pod((key[0], execution), labels.get(POOL_LABEL), seen)
        self._pods[key] = entry
        pods = self.by_execution.get(entry.execution)
        if pods is None:
            pods = self.by_execution[entry.execution] = ExecutionPods()
        pods.all[entry.attempt] = seen
        if not seen.phase.terminal:
            pods.unfinished.add(entry.attempt)
            if entry.pool:
                self.running_by_pool.setdefault(entry.pool, set()).add(key)
        if old is not None and old.execution == entry.execution and old.seen == seen:
            return None
        return entry.execution

    def replace(self, pods: Iterable[Mapping[str, Any]]) -> set[ExecutionKey]:
        """A full listing; returns the executions whose pods differ from before."""
        before = {k: (p.execution, p.seen) for k, p in self._pods.items()}
        self._pods.clear()
        self.by_execution.clear()
        self.running_by_pool.clear()
        for pod in pods:
            self.apply("ADDED", pod)
        after = {k: (p.execution, p.seen) for k, p in self._pods.items()}
        return {
            seen[0]
            for k in before.keys() | after.keys()
            if before.get(k) != after.get(k)
            for seen in (before.get(k), after.get(k))
            if seen is not None
        }

    def _remove(self, key: PodKey) -> _Pod | None:
        old = self._pods.pop(key, None)
        if old is None:
            return None
        pods = self.by_execution.get(old.execution)
        # Only if it is this pod's entry (a stray pod could share the attempt).
        if pods is not None and pods.all.get(old.attempt) is old.seen:
            del pods.all[old.attempt]
            pods.unfinished.discard(old.attempt)
            if not pods.all:
                del self.by_execution[old.execution]
        if old.pool:
            running = self.running_by_pool.get(old.pool)
            if running is not None:
                running.discard(key)
        return old


class PodInformer(PodIndex):
    """``PodIndex`` fed by a list+watch of the pods matching ``selector`` in
    all namespaces. ``synced`` is set once the first listing is in; a watch
    that ends resumes from the last version seen, one refused as too old
    (410) lists again."""

    def __init__(
        self,
        core: client.CoreV1Api,
        selector: str,
        changed: Callable[[ExecutionKey], None],
        timeout_seconds: int = 300,
    ):
        super().__init__()
        # With _preload_content=False it returns the raw response (the stubs say a model).
        self._list_pods: Any = core.list_pod_for_all_namespaces
        self.selector = selector
        self.changed = changed
        self.timeout_seconds = timeout_seconds
        self.synced = asyncio.Event()

    async def run(self) -> None:
        version: str | None = None
        failures = 0
        while True:
            try:
                if version is None:
                    version = await self._list()
                version = await self._watch(version)
                failures = 0
            except (ApiException, aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                delay = _RETRY_SECONDS[min(failures, len(_RETRY_SECONDS) - 1)]
                failures += 1
                log.warning("pod watch interrupted (%s); again in %.1fs", exc, delay)
                await asyncio.sleep(delay)

    async def _list(self) -> str:
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            response: aiohttp.ClientResponse = await self._list_pods(
                label_selector=self.selector,
                limit=500,
                _continue=token,
                _preload_content=False,
            )
            async with response:
                await raise_for_status(response)
                body = json.loads(await response.read())
            items += body.get("items") or []
            token = (body.get("metadata") or {}).get("continue")
            if not token:
                break
        for execution in self.replace(items):
            self.changed(execution)
        self.synced.set()
        return str(body["metadata"]["resourceVersion"])

    async def _watch(self, version: str) -> str | None:
        """Until the stream ends: the version to resume from, None to list again."""
        response: aiohttp.ClientResponse = await self._list_pods(
            label_selector=self.selector,
            watch=True,
            allow_watch_bookmarks=True,
            resource_version=version,
            timeout_seconds=self.timeout_seconds,
            _request_timeout=self.timeout_seconds + 30,
            _preload_content=False,
        )
        async with response:
            if response.status == 410:
                return None
            await raise_for_status(response)
            async for line in response.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        return None  # our version is too old: list again
                    raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                version = str(obj["metadata"]["resourceVersion"])
                if kind == "BOOKMARK":
                    continue
                execution = self.apply(str(kind), obj)
                if execution is not None:
                    self.changed(execution)
        return version
