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
from dataclasses import replace
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from dagwright.core.state import PodObservation
from dagwright.kube.client import raise_for_status
from dagwright.kube.objects import controller_uid, read_pod, relabel_pod
from dagwright.names import MANAGED_SELECTOR
from dagwright.operator.pods import observe

log = logging.getLogger(__name__)

ExecutionKey = str  # the DAGExecution's UID: names are reused, UIDs never
PodKey = tuple[str, str]  # (namespace, pod name)

_RETRY_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)


AttemptKey = tuple[str, int]  # (job, attempt)


class ExecutionPods:
    """One execution's pods: by (job, attempt), and which are not finished
    (a pass looks closer only at those: a big DAG's finished pods are most).
    A deleted pod stays as its last state, marked ``removed``."""

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


def _selected(meta: Mapping[str, Any]) -> bool:
    labels = meta.get("labels") or {}
    return all(labels.get(k) == v for k, v in MANAGED_SELECTOR.items())


class PodIndex:
    """What the watch shows: pods by the UID of the execution that controls
    them (their owner reference, not a label), unfinished pods by pool.

    The label-selected watch reports a pod whose labels were edited away as
    DELETED, with its previous content: from the event alone, that is a pod
    deleted at once. So a live pod reported deleted without ever having been
    marked for deletion is kept as last seen and listed in ``suspect`` (the
    informer reads it: gone, or relabeled). A pod that vanished from a relist
    is listed in ``vanished`` (the informer reads it too)."""

    def __init__(self) -> None:
        self._pods: dict[PodKey, _Pod] = {}
        self.by_execution: dict[ExecutionKey, ExecutionPods] = {}
        self.running_by_pool: dict[str, set[PodKey]] = {}
        self.suspect: dict[PodKey, Mapping[str, Any]] = {}  # pod -> its DELETED event's object
        self.vanished: dict[PodKey, _Pod] = {}

    def pods_of(self, execution: ExecutionKey) -> ExecutionPods:
        return self.by_execution.get(execution) or ExecutionPods()

    def forget(self, execution: ExecutionKey) -> None:
        """Drop what is kept of a deleted execution's pods."""
        self.by_execution.pop(execution, None)

    def apply(
        self, kind: str, pod: Mapping[str, Any], verified: bool = False
    ) -> ExecutionKey | None:
        """One watch event; returns the execution whose pods changed, if any.
        ``verified``: a deletion known to be one (the pod was read since)."""
        meta = pod.get("metadata") or {}
        key = (meta.get("namespace") or "", meta.get("name") or "")
        execution = controller_uid(meta)
        known = self._pods.get(key)
        if (
            kind == "DELETED"
            and not verified
            and not meta.get("deletionTimestamp")
            and known is not None
            and known.seen.alive
            and not known.seen.deleting
        ):
            self.suspect[key] = pod  # deleted, or only out of our selector?
            return None
        removed = kind == "DELETED"
        seen = observe(dict(pod), removed=removed) if execution else None
        old = self._remove(key)
        self.suspect.pop(key, None)
        self.vanished.pop(key, None)
        if seen is None or not execution:
            return old.execution if old else None
        entry = _Pod(execution, seen.pool, seen)
        pods = self.by_execution.get(execution)
        if pods is None:
            pods = self.by_execution[execution] = ExecutionPods()
        pods.all[entry.attempt] = seen
        if removed:
            return execution  # kept as the pod's last state, out of the live maps
        self._pods[key] = entry
        if not seen.phase.terminal:
            pods.unfinished.add(entry.attempt)
            if entry.pool:
                self.running_by_pool.setdefault(entry.pool, set()).add(key)
        if old is not None and old.execution == entry.execution and old.seen == seen:
            return None
        return execution

    def tombstone(self, key: PodKey) -> ExecutionKey | None:
        """A pod we knew is gone (its deletion was not seen): keep its last state."""
        old = self._pods.get(key) or self.vanished.get(key)
        self.suspect.pop(key, None)
        self.vanished.pop(key, None)
        if old is None:
            return None
        self._remove(key)
        pods = self.by_execution.setdefault(old.execution, ExecutionPods())
        if old.attempt not in pods.all:
            pods.all[old.attempt] = replace(old.seen, removed=True)
        return old.execution

    def replace(self, pods: Iterable[Mapping[str, Any]]) -> set[ExecutionKey]:
        """A full listing; returns the executions whose pods differ from before."""
        before = {k: (p.execution, p.seen) for k, p in self._pods.items()}
        known = dict(self._pods)
        removed = {
            uid: {k: v for k, v in p.all.items() if v.removed}
            for uid, p in self.by_execution.items()
        }
        self._pods.clear()
        self.by_execution.clear()
        self.running_by_pool.clear()
        for uid, tombstones in removed.items():
            if tombstones:
                self.by_execution.setdefault(uid, ExecutionPods()).all.update(tombstones)
        for pod in pods:
            self.apply("ADDED", pod)
        # Known pods missing from the listing were deleted, or lost their
        # label, while the watch was down: which, only a read can tell.
        for key, entry in known.items():
            if key not in self._pods:
                self.vanished[key] = entry
        after = {k: (p.execution, p.seen) for k, p in self._pods.items()}
        return {
            seen[0]
            for k in before.keys() | after.keys()
            if before.get(k) != after.get(k) and k not in self.vanished
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
        self._core = core
        self._repairing: asyncio.Task[None] | None = None

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
        self._repair_soon()
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
                if self.suspect:
                    self._repair_soon()
        return version

    def _repair_soon(self) -> None:
        if (self.suspect or self.vanished) and (self._repairing is None or self._repairing.done()):
            self._repairing = asyncio.create_task(self._repair())

    async def _repair(self) -> None:
        """Put our label back on pods that lost it, and find out what became
        of pods that vanished from a relist, so that no attempt of ours is
        taken for deleted while it runs (nor forgotten when it was)."""
        failures = 0
        while self.suspect or self.vanished:
            key = next(iter(self.suspect or self.vanished))
            namespace, name = key
            try:
                pod = await read_pod(self._core, namespace, name)
                known = self._pods.get(key) or self.vanished.get(key)
                deleted = self.suspect.get(key)
                if pod is None or known is None or pod["metadata"].get("uid") != known.seen.uid:
                    # Deleted for real: as its deletion event said, else as last seen.
                    if deleted is not None:
                        execution = self.apply("DELETED", deleted, verified=True)
                    else:
                        execution = self.tombstone(key)
                elif not _selected(pod["metadata"]):
                    log.warning("pod %s/%s lost its labels; putting them back", *key)
                    await relabel_pod(
                        self._core, namespace, name, str(pod["metadata"]["uid"]), MANAGED_SELECTOR
                    )
                    self.suspect.pop(key, None)
                    self.vanished.pop(key, None)
                    continue  # the watch brings it back
                else:
                    execution = self.apply("MODIFIED", pod)
                if execution is not None:
                    self.changed(execution)
                failures = 0
            except ApiException as exc:
                if exc.status not in (404, 409, 422):
                    failures = await self._back_off(key, exc, failures)
                    continue
                # Gone, or replaced by another pod of that name: it ended here.
                execution = self.tombstone(key)
                if execution is not None:
                    self.changed(execution)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                failures = await self._back_off(key, exc, failures)

    async def _back_off(self, key: PodKey, exc: Exception, failures: int) -> int:
        delay = _RETRY_SECONDS[min(failures, len(_RETRY_SECONDS) - 1)]
        log.warning("checking pod %s/%s failed (%s); again in %.1fs", *key, exc, delay)
        await asyncio.sleep(delay)
        return failures + 1
