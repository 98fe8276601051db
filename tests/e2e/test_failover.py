"""Node death: jobs move to healthy nodes, resume from their checkpoint, and
never burn the job's retries; without forced failover no second copy starts
while the old pod may still run."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from kubernetes_asyncio import client

from dagwright.devcluster.nodes import SIM_DURATION
from dagwright.store.redis_store import Store
from tests.conftest import Nodes, Pools, wait_for
from tests.helpers import create_execution, get_execution, read_pod, record_pods, wait_phase

pytestmark = pytest.mark.usefixtures("operator")


def long_job(duration: str) -> dict[str, Any]:
    return {
        "defaults": {
            "image": "busybox",
            "requires": ["cpu"],
            "annotations": {SIM_DURATION: duration},
        },
        "jobs": [{"name": "train", "retries": 0}],
    }


async def pod_node(core: client.CoreV1Api, namespace: str, name: str) -> str | None:
    """The node of a Running pod, else None."""
    pod = await read_pod(core, namespace, name)
    return pod.spec.node_name if pod is not None and pod.status.phase == "Running" else None


async def test_node_death_moves_the_job_to_a_healthy_node_and_resumes_from_its_checkpoint(
    kube: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    pools: Pools,
    nodes: Nodes,
    redis: aioredis.Redis,
) -> None:
    pool = await pools.create(["cpu"], size=0, force_failover=True)
    doomed = await pools.add_node(pool, isolated=True)
    async with record_pods(core, namespace) as history:
        obj = await create_execution(kube, namespace, "ft", long_job("12s"))
        assert (
            await wait_for("attempt 1 running", lambda: pod_node(core, namespace, "ft-train-1"))
            == doomed
        )
        healthy = await pools.add_node(pool)
        # What the job runtime reports while it trains (see dagwright.worker).
        assert await Store(redis).save_checkpoint(
            obj["metadata"]["uid"], "train", 1, "s3://ckpt/train/step-1200", 1200
        )
        killed_at = time.monotonic()
        nodes.kill(doomed)

        async def not_ready() -> float | None:
            return None if await nodes.ready(doomed) else time.monotonic()

        marked_at = await wait_for("the node NotReady", not_ready, within=60, interval=0.05)
        assert (
            await wait_for(
                "attempt 2 running", lambda: pod_node(core, namespace, "ft-train-2"), within=30
            )
            == healthy
        )
        replaced_at = await history.when("ft-train-2", "Running")
        final = await wait_phase(kube, namespace, "ft", "Succeeded", "Failed", within=60)
    failover = replaced_at - marked_at
    detection = marked_at - killed_at
    print(
        f"\nfailover: kubelet killed -> node NotReady {detection:.2f}s; NotReady -> replacement Running {failover:.2f}s"
    )
    assert failover < 10.0
    assert (
        final["status"]["phase"] == "Succeeded"
    )  # with retries: 0 — the node's fault, not the job's
    train = final["status"]["jobs"][0]
    assert (train["attempt"], train["failures"], train["infraFailures"]) == (2, 0, 1)
    second = await read_pod(core, namespace, "ft-train-2")
    env = {e.name: e.value for e in second.spec.containers[0].env}
    assert env["DAGWRIGHT_CHECKPOINT_PATH"] == "s3://ckpt/train/step-1200"
    assert env["DAGWRIGHT_CHECKPOINT_STEP"] == "1200"
    terms = second.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution.node_selector_terms
    avoided = [f.values for f in terms[0].match_fields if f.operator == "NotIn"]
    assert avoided == [[doomed]]  # the retry avoids the dead node
    events = await core.list_namespaced_event(namespace, field_selector="involvedObject.name=ft")
    assert any(e.reason == "JobFailover" for e in events.items)


async def test_without_forced_failover_the_replacement_waits_until_the_node_is_confirmed_gone(
    kube: client.ApiClient, core: client.CoreV1Api, namespace: str, pools: Pools, nodes: Nodes
) -> None:
    pool = await pools.create(["cpu"], size=0)
    doomed = await pools.add_node(pool, isolated=True)
    async with record_pods(core, namespace) as history:
        await create_execution(kube, namespace, "careful", long_job("3s"))
        await wait_for("attempt 1 running", lambda: pod_node(core, namespace, "careful-train-1"))
        await pools.add_node(pool)
        nodes.kill(doomed)

        await wait_for(
            "the job to be ready again",
            lambda: _job_phase(kube, namespace, "careful", "Ready"),
            within=60,
        )
        # The old pod may still run on a partitioned node: no second copy yet,
        # and the old one is left alone (were the node only cut off from the
        # control plane, a delete would kill a healthy run).
        await _assert_stays_absent(history, "careful-train-2", seconds=3)
        old = await read_pod(core, namespace, "careful-train-1")
        assert old is not None
        assert old.metadata.deletion_timestamp is None
        await core.delete_node(doomed)  # the machine is confirmed gone
        obj = await wait_phase(kube, namespace, "careful", "Succeeded", "Failed", within=60)
    assert obj["status"]["phase"] == "Succeeded"
    history.check_never_twice()


async def _job_phase(kube: client.ApiClient, namespace: str, name: str, phase: str) -> bool:
    obj = await get_execution(kube, namespace, name)
    jobs = (obj.get("status") or {}).get("jobs") or []
    return bool(jobs) and jobs[0]["phase"] == phase


async def _assert_stays_absent(history: Any, pod: str, seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)
    assert pod not in history.names()


@pytest.mark.parametrize("key_ttl", [60, 1], ids=["key-outlives-timeout", "key-expires-first"])
async def test_a_job_whose_heartbeat_stops_is_retried_on_another_node(
    kube: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    pools: Pools,
    redis: aioredis.Redis,
    key_ttl: int,
) -> None:
    """The operator under test treats 3 s of silence as lost (production default: 90 s).
    Its runtime's heartbeat key may outlive that or expire first (the shipped
    runtime's key lived exactly the timeout): silence is caught either way."""
    pool = await pools.create(["cpu"], size=1)
    first_node = pools.members[pool][0]
    obj = await create_execution(kube, namespace, "hb", long_job("1h"))
    await wait_for("attempt 1 running", lambda: pod_node(core, namespace, "hb-train-1"))
    await pools.add_node(pool)
    store = Store(redis)
    for _ in range(4):  # the runtime heartbeats a while, then hangs
        assert await store.job_heartbeat(
            obj["metadata"]["uid"], "train", attempt=1, ttl_seconds=key_ttl, step=10
        )
        await asyncio.sleep(0.5)
    second = await wait_for(
        "attempt 2 running", lambda: pod_node(core, namespace, "hb-train-2"), within=30
    )
    assert second != first_node
    assert await wait_for(
        "the status to show attempt 2", lambda: _job_phase(kube, namespace, "hb", "Running")
    )
    status = (await get_execution(kube, namespace, "hb"))["status"]["jobs"][0]
    assert (status["attempt"], status["failures"], status["infraFailures"]) == (2, 0, 1)
    assert status["message"].startswith("no heartbeat for ")
