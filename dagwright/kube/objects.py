"""The operator's Kubernetes calls, each idempotent, and what it believes of
an object's metadata (its controller's UID, an owner epoch)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any, cast

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from dagwright.core.placement import Pool
from dagwright.core.spec import JobTemplateSpec, WorkerPoolSpec, visible_templates
from dagwright.errors import NameTaken
from dagwright.kube.client import merge_patch, raise_for_status, send
from dagwright.names import (
    EXECUTION_KIND,
    EXECUTIONS,
    GROUP,
    OWNER_ANNOTATION,
    OWNER_EPOCH_ANNOTATION,
    POOLS,
    TEMPLATES,
    VERSION,
    PodEnv,
)

log = logging.getLogger(__name__)


def identity(pod: Mapping[str, Any]) -> tuple[str, int, str | None] | None:
    """(job, attempt, pool) from the job container's environment, which no
    one can edit after the pod is created; None for a pod that is not a job
    attempt of ours."""
    for container in (pod.get("spec") or {}).get("containers") or []:
        if container.get("name") != "job":
            continue
        env = {e.get("name"): e.get("value") for e in container.get("env") or []}
        job, attempt = env.get(PodEnv.JOB), env.get(PodEnv.ATTEMPT)
        if not job or not attempt or not _DIGITS.match(attempt):
            return None
        return str(job), int(attempt), env.get(PodEnv.POOL)
    return None


_DIGITS = re.compile(r"^[0-9]{1,6}$")


async def list_pools(objects: client.CustomObjectsApi) -> list[Pool]:
    """The valid WorkerPools (an invalid one is skipped, as the operator does)."""
    listing = await objects.list_cluster_custom_object(GROUP, VERSION, POOLS)
    pools = []
    for item in listing.get("items") or []:
        try:
            spec = WorkerPoolSpec.model_validate(item.get("spec") or {})
        except ValidationError:
            continue
        pools.append(Pool(item["metadata"]["name"], spec))
    return pools


async def list_templates(
    objects: client.CustomObjectsApi, namespace: str, shared: str | None
) -> dict[str, JobTemplateSpec]:
    """The JobTemplates jobs in ``namespace`` see (``visible_templates``)."""
    found: list[tuple[str, str, JobTemplateSpec]] = []
    for where in dict.fromkeys([shared, namespace]):
        if not where:
            continue
        listing = await objects.list_namespaced_custom_object(GROUP, VERSION, where, TEMPLATES)
        for item in listing.get("items") or []:
            try:
                spec = JobTemplateSpec.model_validate(item.get("spec") or {})
            except ValidationError:
                continue
            found.append((where, item["metadata"]["name"], spec))
    return visible_templates(found, namespace, shared)


def controller_uid(meta: Mapping[str, Any]) -> str | None:
    """The UID of the DAGExecution that controls this object, if one does."""
    for ref in meta.get("ownerReferences") or []:
        if (
            ref.get("controller")
            and ref.get("kind") == EXECUTION_KIND
            and str(ref.get("apiVersion", "")).startswith(f"{GROUP}/")
        ):
            uid = ref.get("uid")
            return str(uid) if uid else None
    return None


async def _newer(
    watched: Callable[[], Mapping[str, Any] | None], version: str, within: float = 1.0
) -> Mapping[str, Any] | None:
    """The watched metadata once it is newer than ``version``; None if the
    watch brings nothing newer ``within`` seconds (the caller reads instead)."""
    for _ in range(int(within / 0.05)):
        await asyncio.sleep(0.05)
        meta = watched()
        if meta is not None and meta.get("resourceVersion") != version:
            return meta
    return None


async def read_pod(core: client.CoreV1Api, namespace: str, name: str) -> dict[str, Any] | None:
    """The pod as raw JSON, or None if there is none of that name."""
    read: Any = core.read_namespaced_pod
    response: aiohttp.ClientResponse = await read(name, namespace, _preload_content=False)
    async with response:
        if response.status == 404:
            return None
        await raise_for_status(response)
        pod: dict[str, Any] = json.loads(await response.read())
        return pod


async def pod_log(
    core: client.CoreV1Api,
    namespace: str,
    name: str,
    *,
    follow: bool = False,
    tail_lines: int | None = None,
) -> aiohttp.ClientResponse:
    """The job container's log as a streaming response (the caller reads and
    closes it); ApiException if the API server cannot serve it."""
    query: dict[str, Any] = {"container": "job", "follow": follow, "_preload_content": False}
    if tail_lines is not None:
        query["tail_lines"] = tail_lines
    read: Any = core.read_namespaced_pod_log
    response: aiohttp.ClientResponse = await read(name, namespace, **query)
    if response.status >= 400:
        async with response:
            await raise_for_status(response)
    return response


async def log_tail(
    core: client.CoreV1Api, namespace: str, name: str, lines: int, max_bytes: int
) -> str:
    """The last ``lines`` lines of the job container's log, at most ``max_bytes``."""
    response = await pod_log(core, namespace, name, tail_lines=lines)
    async with response:
        text = (await response.read())[-max_bytes:]
    return text.decode(errors="replace")


async def relabel_pod(
    core: client.CoreV1Api, namespace: str, name: str, uid: str, labels: Mapping[str, str]
) -> None:
    """Set ``labels`` on the pod if it is still the one with ``uid``: the UID
    is immutable, so a patch naming another one (the pod was replaced) is
    refused."""
    body = {"metadata": {"uid": uid, "labels": dict(labels)}}
    await send(core.patch_namespaced_pod(name, namespace, cast(Any, body), _preload_content=False))


# Epochs are Redis-issued and at least the time in ms (about 1.8e12 in 2026);
# anything else in the annotation (a hand edit) is not an epoch. Lua numbers
# are doubles: every integer below 2**53 is exact.
MAX_EPOCH = 10**15
_EPOCH = re.compile(r"^[0-9]{1,16}$")


def parse_epoch(value: object) -> int | None:
    """The owner epoch an annotation records; None if it records none we
    can believe (missing, not plain ASCII digits, or beyond any clock)."""
    if not isinstance(value, str) or not _EPOCH.match(value):
        return None
    epoch = int(value)
    return epoch if epoch <= MAX_EPOCH else None


class Kube:
    def __init__(self, api: client.ApiClient, concurrency: int = 32):
        self.api = api
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self._limit = asyncio.Semaphore(concurrency)

    async def create_pod(
        self, manifest: dict[str, Any], unless: Callable[[], bool] = lambda: False
    ) -> bool | None:
        """Create; True if created, False if it already existed and is ours
        (adopted), None if ``unless()`` said no when the request was about to
        go out. A pod of that name controlled by anything else is not ours to
        adopt: NameTaken."""
        meta = manifest["metadata"]
        async with self._limit:
            if unless():
                return None
            try:
                await send(
                    self.core.create_namespaced_pod(
                        meta["namespace"], cast(Any, manifest), _preload_content=False
                    )
                )
                return True
            except ApiException as exc:
                if exc.status != 409:
                    raise
            existing = await read_pod(self.core, meta["namespace"], meta["name"])
        ours = meta["ownerReferences"][0]["uid"]
        if existing is not None and controller_uid(existing.get("metadata") or {}) == ours:
            return False
        # Deleted in between (None) is retried by the core like any lost create.
        raise NameTaken(
            f"a pod named {meta['name']} already exists and is not this execution's"
            if existing is not None
            else f"pod {meta['name']} was deleted as it was created"
        )

    async def delete_pod(self, namespace: str, name: str, uid: str, force: bool = False) -> None:
        """Delete the pod of that name only if it is still the one with that
        UID (a precondition: a pod re-created under the name is not touched).
        ``force`` removes the object at once (grace period 0), for a pod whose
        node is gone and whose kubelet will never confirm."""
        body: dict[str, Any] = {"preconditions": {"uid": uid}}
        if force:
            body["gracePeriodSeconds"] = 0
        async with self._limit:
            try:
                await send(
                    self.core.delete_namespaced_pod(
                        name, namespace, body=cast(Any, body), _preload_content=False
                    )
                )
            except ApiException as exc:
                # 404: gone already. 409: the name is another pod's now.
                if exc.status not in (404, 409):
                    raise

    async def patch_execution_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        await merge_patch(
            self.custom,
            EXECUTIONS,
            name,
            {"status": status},
            namespace=namespace,
            subresource="status",
        )

    async def ensure_priority_classes(self) -> bool:
        """PriorityClasses dagwright-priority-1..10, so the scheduler orders
        pending job pods as dagwright does. Never preempting: a higher
        priority job waits for a slot rather than killing a training run.
        False when not allowed to create them (then pods carry no class)."""
        scheduling = client.SchedulingV1Api(self.api)
        for priority in range(1, 11):
            body = {
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {
                    "name": f"dagwright-priority-{priority}",
                    "labels": {"app.kubernetes.io/managed-by": "dagwright"},
                },
                "value": priority * 100,
                "preemptionPolicy": "Never",
                "globalDefault": False,
                "description": f"dagwright job priority {priority}",
            }
            try:
                await send(
                    scheduling.create_priority_class(cast(Any, body), _preload_content=False)
                )
            except ApiException as exc:
                if exc.status == 409:
                    continue
                if exc.status == 403:
                    log.warning(
                        "not allowed to create PriorityClasses; job pods get no priority class"
                    )
                    return False
                raise
        return True

    async def claim_execution(
        self,
        namespace: str,
        name: str,
        instance: str,
        epoch: int,
        watched: Callable[[], Mapping[str, Any] | None] = lambda: None,
    ) -> int | None:
        """Record a new owner epoch on the DAGExecution unless a higher one is
        there already; the resourceVersion precondition makes two claimants
        serialize. None: recorded. Otherwise the higher epoch recorded there
        (a newer owner's, or a hand edit: the caller takes a term above it).
        A value that is no epoch (see ``parse_epoch``) is overwritten.
        ``watched()``: its metadata as the watch shows it now. Claims go from
        that, not a GET (a 10,000-job execution is megabytes); after a 409
        they wait for the watch to bring the write that came in between."""
        meta = watched()
        for _ in range(10):
            if meta is None:
                obj = await self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, EXECUTIONS, name
                )
                meta = obj["metadata"]
            recorded = parse_epoch((meta.get("annotations") or {}).get(OWNER_EPOCH_ANNOTATION))
            if recorded is not None and recorded > epoch:
                return recorded
            if recorded == epoch:
                return None
            version = meta["resourceVersion"]
            body = {
                "metadata": {
                    "resourceVersion": version,
                    "annotations": {OWNER_EPOCH_ANNOTATION: str(epoch), OWNER_ANNOTATION: instance},
                }
            }
            try:
                await merge_patch(self.custom, EXECUTIONS, name, body, namespace=namespace)
                return None
            except ApiException as exc:
                if exc.status != 409:
                    raise
            # Someone wrote in between (kopf, say, adding its finalizer as it
            # starts the daemon): its event is a few milliseconds away.
            meta = await _newer(watched, version)
        raise ApiException(status=409, reason=f"could not record the owner of {namespace}/{name}")

    async def patch_pool_status(self, name: str, status: dict[str, Any]) -> None:
        await merge_patch(self.custom, POOLS, name, {"status": status}, subresource="status")

    async def pods_on(self, node: str) -> int:
        """Pods that still run, or may, on ``node`` (DaemonSet pods aside:
        they go with the node)."""
        listing = await self.core.list_pod_for_all_namespaces(
            field_selector=f"spec.nodeName={node}"
        )
        return sum(
            1
            for pod in listing.items
            if (pod.status.phase or "Pending") not in ("Succeeded", "Failed")
            and not any(r.kind == "DaemonSet" for r in pod.metadata.owner_references or [])
        )

    async def cordon(self, node: str, annotation: str) -> None:
        """Mark an idle node for removal: no new job lands on it."""
        body = {"metadata": {"annotations": {annotation: "true"}}, "spec": {"unschedulable": True}}
        await send(self.core.patch_node(node, cast(Any, body), _preload_content=False))

    async def patch_scale(
        self, group: str, version: str, plural: str, namespace: str | None, name: str, replicas: int
    ) -> None:
        body = {"spec": {"replicas": replicas}}
        await merge_patch(
            self.custom,
            plural,
            name,
            body,
            namespace=namespace,
            subresource="scale",
            group=group,
            version=version,
        )

    async def plural(self, group: str, version: str, kind: str) -> str:
        """The resource name of ``kind``, from API discovery."""
        path = f"/apis/{group}/{version}" if group else f"/api/{version}"
        response = await self.api.call_api(
            path,
            "GET",
            response_types_map={200: "object"},
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
        )
        for resource in cast(dict[str, Any], response)["resources"]:
            if resource["kind"] == kind and "/" not in resource["name"]:
                return str(resource["name"])
        raise LookupError(f"no resource of kind {kind} in {group}/{version}")
