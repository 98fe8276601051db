"""The test rig is a real cluster: scheduler, controllers, KWOK kubelets,
admission with structural schemas and CEL, and a real Redis."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from dagwright.devcluster.nodes import sim_annotations
from dagwright.devcluster.redis_server import RedisServer
from tests.conftest import Nodes, TestCluster, apply_crd, rig_crd, wait_for


def pod_manifest(
    name: str, annotations: dict[str, str], node_selector: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "containers": [{"name": "main", "image": "busybox", "command": ["true"]}],
            "nodeSelector": node_selector or {},
            "restartPolicy": "Never",
        },
    }


async def pod_phase(core: client.CoreV1Api, namespace: str, name: str) -> str:
    pod = await core.read_namespaced_pod(name, namespace)
    return str(pod.status.phase)


async def test_scheduler_binds_by_node_selector_and_pod_succeeds(
    core: client.CoreV1Api, namespace: str, nodes: Nodes
) -> None:
    await nodes.create({"pool": "cpu"})
    gpu_node = await nodes.create({"pool": "gpu"}, gpus=4)
    body = pod_manifest("train", sim_annotations("500ms"), {"pool": "gpu"})
    await core.create_namespaced_pod(namespace, body)

    async def succeeded() -> str | None:
        phase = await pod_phase(core, namespace, "train")
        return phase if phase == "Succeeded" else None

    await wait_for("pod train Succeeded", succeeded)
    pod = await core.read_namespaced_pod("train", namespace)
    assert pod.spec.node_name == gpu_node
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 0


async def test_pod_annotated_to_fail_reaches_failed_with_exit_code(
    core: client.CoreV1Api, namespace: str, nodes: Nodes
) -> None:
    node = await nodes.create({"pool": "cpu"})
    await core.create_namespaced_pod(
        namespace,
        pod_manifest(
            "oops", sim_annotations("200ms", exit_code=3), {"kubernetes.io/hostname": node}
        ),
    )

    async def failed() -> str | None:
        phase = await pod_phase(core, namespace, "oops")
        assert phase != "Succeeded"
        return phase if phase == "Failed" else None

    await wait_for("pod oops Failed", failed)
    pod = await core.read_namespaced_pod("oops", namespace)
    assert pod.status.container_statuses[0].state.terminated.exit_code == 3


async def test_pod_without_duration_keeps_running(
    core: client.CoreV1Api, namespace: str, nodes: Nodes
) -> None:
    node = await nodes.create()
    await core.create_namespaced_pod(
        namespace, pod_manifest("forever", {}, {"kubernetes.io/hostname": node})
    )

    async def running() -> bool:
        return await pod_phase(core, namespace, "forever") == "Running"

    await wait_for("pod forever Running", running)
    # Two seconds is many KWOK stage cycles: the phase must not have moved on.
    await asyncio.sleep(2)
    assert await pod_phase(core, namespace, "forever") == "Running"


async def test_node_goes_not_ready_when_its_kubelet_dies(
    core: client.CoreV1Api, nodes: Nodes, cluster: TestCluster
) -> None:
    # A healthy node beside it: when every node of a zone is NotReady, the node
    # controller assumes its own connectivity failed and lifts the taints.
    await nodes.create({"pool": "healthy"})
    name = await nodes.create({"pool": "doomed"}, isolated=True)
    killed_at = time.monotonic()
    nodes.kill(name)

    async def not_ready() -> bool:
        return not await nodes.ready(name)

    await wait_for(f"node {name} NotReady", not_ready, within=cluster.node_death_seconds + 30)
    elapsed = time.monotonic() - killed_at
    assert elapsed <= cluster.node_death_seconds, f"took {elapsed:.1f}s"
    node = await core.read_node(name)
    ready = next(c for c in node.status.conditions if c.type == "Ready")
    assert ready.status == "Unknown"  # lease expired: nobody reports for the node

    # The node controller taints in a pass of its own, just after the condition.
    async def tainted() -> bool:
        node = await core.read_node(name)
        return "node.kubernetes.io/unreachable" in {t.key for t in node.spec.taints or []}

    await wait_for(f"the unreachable taint on {name}", tainted, within=10)


async def test_owner_reference_is_garbage_collected(core: client.CoreV1Api, namespace: str) -> None:
    owner = await core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    dependent = {
        "metadata": {
            "name": "dependent",
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "name": "owner",
                    "uid": owner.metadata.uid,
                }
            ],
        }
    }
    await core.create_namespaced_config_map(namespace, dependent)
    await core.delete_namespaced_config_map("owner", namespace)

    async def gone() -> bool:
        try:
            await core.read_namespaced_config_map("dependent", namespace)
            return False
        except ApiException as exc:
            return exc.status == 404

    await wait_for("the garbage collector to delete the dependent", gone, within=30)


WIDGET_CRD = rig_crd(
    "Widget",
    "widgets",
    {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "required": ["size"],
                "properties": {
                    "size": {"type": "integer", "minimum": 1, "maximum": 10},
                    "min": {"type": "integer"},
                    "max": {"type": "integer"},
                },
                "x-kubernetes-validations": [
                    {"rule": "self.min <= self.max", "message": "min must not exceed max"}
                ],
            }
        },
    },
)


@pytest.fixture(scope="module")
async def widget_crd(kube: client.ApiClient) -> None:
    await apply_crd(kube, WIDGET_CRD)


@pytest.mark.usefixtures("widget_crd")
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"size": 0}, "spec.size: Invalid value: 0"),
        ({"size": 3, "min": 5, "max": 1}, "min must not exceed max"),
        ({}, "spec.size: Required value"),
    ],
)
async def test_crd_schema_and_cel_reject_invalid_objects(
    kube: client.ApiClient, namespace: str, spec: dict[str, int], message: str
) -> None:
    objects = client.CustomObjectsApi(kube)
    body = {
        "apiVersion": "rig.dagwright.io/v1",
        "kind": "Widget",
        "metadata": {"name": "w"},
        "spec": spec,
    }
    with pytest.raises(ApiException) as caught:
        await objects.create_namespaced_custom_object(
            "rig.dagwright.io", "v1", namespace, "widgets", body
        )
    assert caught.value.status == 422
    assert message in str(caught.value.body)
    # And a valid one is accepted, so the rejection above was about the content.
    body["spec"] = {"size": 3, "min": 1, "max": 2}
    created = await objects.create_namespaced_custom_object(
        "rig.dagwright.io", "v1", namespace, "widgets", body
    )
    assert created["spec"]["size"] == 3


async def test_redis_is_real_and_persists_across_restart(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    info = await redis.info("persistence")
    assert info["aof_enabled"] == 1
    await redis.set("rig:probe", "kept")
    redis_server.restart()
    reconnected = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        assert await reconnected.get("rig:probe") == "kept"
    finally:
        await reconnected.aclose()
