"""The few Kubernetes calls the operator makes, each idempotent."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from dagwright.crdgen import GROUP, VERSION
from dagwright.operator.pods import controller_uid

log = logging.getLogger(__name__)


async def new_api_client() -> client.ApiClient:
    """From $KUBECONFIG / ~/.kube/config, or the in-cluster ServiceAccount."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        api = client.ApiClient()
    except config.ConfigException:
        api = await config.new_client_from_config()
    if not any(os.environ.get(v) for v in _PROXY_VARIABLES):
        # The client's aiohttp session trusts the environment: for every
        # request it looks for a proxy and reads ~/.netrc in a worker thread
        # (a tenth of the operator's CPU when creating pods). With no proxy
        # configured there is nothing to find.
        api.rest_client.pool_manager._trust_env = False
    return api


_PROXY_VARIABLES = [
    name
    for lower in ("http_proxy", "https_proxy", "all_proxy", "ws_proxy", "wss_proxy")
    for name in (lower, lower.upper())
]


async def raise_for_status(response: aiohttp.ClientResponse) -> None:
    """What the client does for decoded calls, for a raw response (a call made
    with ``_preload_content=False``): an ApiException with the server's body."""
    if not 200 <= response.status <= 299:
        exc = ApiException(status=response.status, reason=response.reason)
        exc.body = await response.read()  # the client keeps bodies as read
        raise exc


async def _send(call: Awaitable[Any]) -> None:
    """Await a raw call whose answer we do not decode: raise on an error
    status, and release the connection (the client does neither then)."""
    response = await call
    try:
        await raise_for_status(response)
        # aiohttp closes, rather than pools, a connection released before its
        # body was read to the end: the next call would pay a TLS handshake
        # (about a third of all connections when creating pods at full speed).
        await response.read()
    finally:
        response.release()


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


# Not under "dagwright.io/": kopf keeps its handler progress there and purges it.
OWNER_ANNOTATION = f"ownership.{GROUP}/instance"
OWNER_EPOCH_ANNOTATION = f"ownership.{GROUP}/epoch"


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


async def relabel_pod(
    core: client.CoreV1Api, namespace: str, name: str, uid: str, labels: Mapping[str, str]
) -> None:
    """Set ``labels`` on the pod if it is still the one with ``uid``: the UID
    is immutable, so a patch naming another one (the pod was replaced) is
    refused."""
    body = {"metadata": {"uid": uid, "labels": dict(labels)}}
    await _send(core.patch_namespaced_pod(name, namespace, cast(Any, body), _preload_content=False))


class NameTaken(Exception):
    """A pod's name is held by a pod this execution did not create."""


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


def error_message(exc: ApiException) -> str:
    """The API server's own sentence for a refused call (from its Status body)."""
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except (ValueError, TypeError, AttributeError):
        return f"{exc.status} {exc.reason}"


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
                await _send(
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
                await _send(
                    self.core.delete_namespaced_pod(
                        name, namespace, body=cast(Any, body), _preload_content=False
                    )
                )
            except ApiException as exc:
                # 404: gone already. 409: the name is another pod's now.
                if exc.status not in (404, 409):
                    raise

    async def _merge_patch_execution(
        self, namespace: str, name: str, body: dict[str, Any], *, status: bool = False
    ) -> None:
        """A JSON merge patch of a DAGExecution (custom objects take no
        strategic merge; the stubs lack _content_type), or of its status."""
        custom = self.custom
        call = (
            custom.patch_namespaced_custom_object_status
            if status
            else custom.patch_namespaced_custom_object
        )
        await _send(
            cast(Any, call)(
                GROUP,
                VERSION,
                namespace,
                "dagexecutions",
                name,
                body,
                _content_type="application/merge-patch+json",
                _preload_content=False,
            )
        )

    async def patch_execution_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        await self._merge_patch_execution(namespace, name, {"status": status}, status=True)

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
                await _send(
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
                    GROUP, VERSION, namespace, "dagexecutions", name
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
                await self._merge_patch_execution(namespace, name, body)
                return None
            except ApiException as exc:
                if exc.status != 409:
                    raise
            # Someone wrote in between (kopf, say, adding its finalizer as it
            # starts the daemon): its event is a few milliseconds away.
            meta = await _newer(watched, version)
        raise ApiException(status=409, reason=f"could not record the owner of {namespace}/{name}")

    async def patch_pool_status(self, name: str, status: dict[str, Any]) -> None:
        patch = cast(Any, self.custom.patch_cluster_custom_object_status)
        await _send(
            patch(
                GROUP,
                VERSION,
                "workerpools",
                name,
                {"status": status},
                _content_type="application/merge-patch+json",
                _preload_content=False,
            )
        )

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
        await _send(self.core.patch_node(node, cast(Any, body), _preload_content=False))

    async def patch_scale(
        self, group: str, version: str, plural: str, namespace: str | None, name: str, replicas: int
    ) -> None:
        body = {"spec": {"replicas": replicas}}
        patch: Any
        if namespace:
            patch = self.custom.patch_namespaced_custom_object_scale
            await _send(
                patch(
                    group,
                    version,
                    namespace,
                    plural,
                    name,
                    body,
                    _content_type="application/merge-patch+json",
                    _preload_content=False,
                )
            )
        else:
            patch = self.custom.patch_cluster_custom_object_scale
            await _send(
                patch(
                    group,
                    version,
                    plural,
                    name,
                    body,
                    _content_type="application/merge-patch+json",
                    _preload_content=False,
                )
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
