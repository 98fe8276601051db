"""WorkerPool autoscaling through any /scale subresource, with a stand-in
machine controller that turns replicas into KWOK nodes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio import client

from dagwright.devcluster.nodes import SIM_DURATION
from dagwright.names import GROUP, POOL_LABEL, VERSION
from tests.conftest import Nodes, Pools, apply_crd, rig_crd, wait_for
from tests.helpers import create_execution, wait_phase

pytestmark = pytest.mark.usefixtures("operator")

MACHINESET_CRD = rig_crd(
    "MachineSet",
    "machinesets",
    {
        "type": "object",
        "properties": {
            "spec": {"type": "object", "properties": {"replicas": {"type": "integer"}}},
            "status": {"type": "object", "properties": {"replicas": {"type": "integer"}}},
        },
    },
    subresources={
        "status": {},
        "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"},
    },
)


@pytest.fixture
async def machineset_crd(kube: client.ApiClient) -> None:
    await apply_crd(kube, MACHINESET_CRD)


class Machines:
    """Plays Cluster API: keeps as many pool nodes as the MachineSet asks,
    removing only nodes the operator cordoned for scale-down."""

    def __init__(
        self, kube: client.ApiClient, nodes: Nodes, namespace: str, pool_label: dict[str, str]
    ):
        self.objects = client.CustomObjectsApi(kube)
        self.core = client.CoreV1Api(kube)
        self.nodes = nodes
        self.namespace = namespace
        self.label = pool_label
        self.members: list[str] = []
        self.replicas_seen: list[int] = []
        self.violations: list[str] = []

    async def run(self) -> None:
        while True:
            ms = await self.objects.get_namespaced_custom_object(
                "rig.dagwright.io", "v1", self.namespace, "machinesets", "ms"
            )
            want = ms["spec"]["replicas"]
            if not self.replicas_seen or self.replicas_seen[-1] != want:
                self.replicas_seen.append(want)
            if len(self.members) < want:
                self.members.append(await self.nodes.create(self.label, wait_ready=False))
            elif len(self.members) > want:
                for name in list(self.members):
                    node = await self.core.read_node(name)
                    if node.spec.unschedulable and len(self.members) > want:
                        pods = await self.core.list_pod_for_all_namespaces(
                            field_selector=f"spec.nodeName={name}"
                        )
                        if any(p.status.phase in ("Pending", "Running") for p in pods.items):
                            self.violations.append(f"{name} removed with running pods")
                        await self.core.delete_node(name)
                        self.members.remove(name)
            patch: Any = (
                self.objects.patch_namespaced_custom_object_status
            )  # stubs lack _content_type
            await patch(
                "rig.dagwright.io",
                "v1",
                self.namespace,
                "machinesets",
                "ms",
                {"status": {"replicas": len(self.members)}},
                _content_type="application/merge-patch+json",
            )
            await asyncio.sleep(0.3)


@contextlib.asynccontextmanager
async def running(machines: Machines) -> AsyncIterator[None]:
    task = asyncio.create_task(machines.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.usefixtures("machineset_crd")
async def test_pool_scales_up_for_queued_jobs_and_back_down_when_idle(
    kube: client.ApiClient, namespace: str, pools: Pools, nodes: Nodes
) -> None:
    objects = client.CustomObjectsApi(kube)
    await objects.create_namespaced_custom_object(
        "rig.dagwright.io",
        "v1",
        namespace,
        "machinesets",
        {
            "apiVersion": "rig.dagwright.io/v1",
            "kind": "MachineSet",
            "metadata": {"name": "ms"},
            "spec": {"replicas": 1},
        },
    )
    autoscaling = {
        "minNodes": 1,
        "maxNodes": 3,
        "scaleUpDelay": "0s",
        "scaleDownDelay": "2s",
        "scaleTargetRef": {
            "apiVersion": "rig.dagwright.io/v1",
            "kind": "MachineSet",
            "name": "ms",
            "namespace": namespace,
        },
    }
    pool = await pools.create(
        ["cpu"], size=0, max_concurrency=2, extra_spec={"autoscaling": autoscaling}
    )
    # The machine template marks its nodes as the pool's (POOL_LABEL).
    machines = Machines(kube, nodes, namespace, {"dagwright.io/test-pool": pool, POOL_LABEL: pool})
    async with running(machines):
        await wait_for("the first machine", lambda: _ready_nodes(objects, pool, 1), within=30)
        spec: dict[str, Any] = {
            "defaults": {
                "image": "busybox",
                "requires": ["cpu"],
                "annotations": {SIM_DURATION: "3s"},
            },
            "jobs": [{"name": f"j{i}"} for i in range(6)],
            "parallelism": 6,
        }
        await create_execution(kube, namespace, "burst", spec)
        await wait_for("the pool to want 3 nodes", lambda: _desired(objects, pool, 3), within=30)
        await wait_phase(kube, namespace, "burst", "Succeeded", within=90)
        await wait_for("scale back down to 1", lambda: _desired(objects, pool, 1), within=30)
        await wait_for("idle machines removed", lambda: _nodes(objects, pool, 1), within=30)
    assert max(machines.replicas_seen) == 3  # up to maxNodes, never beyond
    assert min(machines.replicas_seen) == 1  # never below minNodes
    assert machines.replicas_seen[-1] == 1
    assert machines.violations == []  # no node with running jobs was removed


async def _pool_status(objects: client.CustomObjectsApi, pool: str) -> dict[str, Any]:
    obj = await objects.get_cluster_custom_object(GROUP, VERSION, "workerpools", pool)
    return obj.get("status") or {}


async def _desired(objects: client.CustomObjectsApi, pool: str, n: int) -> bool:
    return (await _pool_status(objects, pool)).get("desiredNodes") == n


async def _ready_nodes(objects: client.CustomObjectsApi, pool: str, n: int) -> bool:
    return (await _pool_status(objects, pool)).get("readyNodes") == n


async def _nodes(objects: client.CustomObjectsApi, pool: str, n: int) -> bool:
    return (await _pool_status(objects, pool)).get("nodes") == n


async def test_pool_status_and_scale_subresource(kube: client.ApiClient, pools: Pools) -> None:
    objects = client.CustomObjectsApi(kube)
    pool = await pools.create(["cpu"], size=2, max_concurrency=3)

    async def counted() -> dict[str, Any] | None:
        status = await _pool_status(objects, pool)
        return status if status.get("readyNodes") == 2 else None

    status = await wait_for("the pool status", counted, within=30)
    assert (status["nodes"], status["slots"], status["slotsUsed"], status["queued"]) == (2, 6, 0, 0)
    assert sorted(m["name"] for m in status["members"]) == sorted(pools.members[pool])
    assert all(m["ready"] and m["lastHeartbeat"] for m in status["members"])
    patch: Any = objects.patch_cluster_custom_object_scale  # what `kubectl scale wp` does
    await patch(
        GROUP,
        VERSION,
        "workerpools",
        pool,
        {"spec": {"replicas": 4}},
        _content_type="application/merge-patch+json",
    )
    await wait_for(
        "desiredNodes from the scale subresource", lambda: _desired(objects, pool, 4), within=15
    )
    scale = await objects.get_cluster_custom_object_scale(GROUP, VERSION, "workerpools", pool)
    assert scale["spec"]["replicas"] == 4
    assert scale["status"]["replicas"] == 2  # ready nodes


async def test_scale_down_never_touches_nodes_not_made_for_the_pool_or_running_pods(
    kube: client.ApiClient, core: client.CoreV1Api, namespace: str, pools: Pools, nodes: Nodes
) -> None:
    objects = client.CustomObjectsApi(kube)
    broad = {"dagwright.io/test-broad": namespace}  # a broad selector: it matches all three
    foreign = await nodes.create(broad)  # another team's machine
    busy = await nodes.create(broad)  # made for the pool, running another team's pod
    idle = await nodes.create(broad)  # made for the pool, idle
    other_pod = {
        "metadata": {"name": "other-team"},
        "spec": {
            "nodeName": busy,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "c", "image": "busybox"}],
        },
    }
    await core.create_namespaced_pod(namespace, other_pod)
    autoscaling = {"minNodes": 0, "maxNodes": 5, "scaleDownDelay": "1s"}
    pool = await pools.create(
        ["cpu"], size=0, extra_spec={"autoscaling": autoscaling, "nodeSelector": broad}
    )
    for node in (busy, idle):  # what the pool's machine template would have set
        await core.patch_node(node, {"metadata": {"labels": {POOL_LABEL: pool}}})

    async def cordoned(name: str) -> bool:
        return bool((await core.read_node(name)).spec.unschedulable)

    await wait_for("the idle pool node cordoned", lambda: cordoned(idle), within=30)
    await asyncio.sleep(3)  # several pool intervals more (0.5 s each here)
    assert not await cordoned(foreign)
    assert not await cordoned(busy)
    status = await _pool_status(objects, pool)
    assert status["nodes"] == 3
    assert status["desiredNodes"] == 2  # the one node it could remove, and no other
