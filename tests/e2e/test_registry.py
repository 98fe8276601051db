"""Workers registered over REST speak for the nodes they name: their load
counts in where jobs go, their silence fails the node's jobs over without
waiting for the old pods, unregistering drains the node, and one that names
no pool node is shown as not schedulable, with why."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from kubernetes_asyncio import client

from dagwright.devcluster.redis_server import RedisServer
from tests.conftest import Nodes, Pools, wait_for
from tests.helpers import (
    api_in_process,
    create_execution,
    dag,
    get_execution,
    read_pod,
    running_pod,
)

pytestmark = pytest.mark.usefixtures("operator")
TIMEOUT = 3.0  # the registered workers' heartbeat timeout here (90 s by default)
AUTH = {"Authorization": "Bearer static"}
W = "/api/distributed/workers"


@pytest.fixture
async def api(
    kube: client.ApiClient, redis_server: RedisServer, namespace: str
) -> AsyncIterator[httpx.AsyncClient]:
    async with api_in_process(
        kube, redis_server.url, namespace, token="static", worker_heartbeat_timeout_seconds=TIMEOUT
    ) as http:
        yield http


async def register(api: httpx.AsyncClient, worker: str, node: str, load: int = 0) -> None:
    body = {"workerId": worker, "hostname": node, "capabilities": ["cpu"], "maxConcurrency": 4}
    assert (await api.post(f"{W}/register", json=body, headers=AUTH)).status_code == 201
    await beat(api, worker, load)


async def beat(api: httpx.AsyncClient, worker: str, load: int) -> None:
    answer = await api.post(f"{W}/{worker}/heartbeat", json={"currentLoad": load}, headers=AUTH)
    assert answer.status_code == 200, answer.text


async def node_of(core: client.CoreV1Api, namespace: str, attempt: str) -> str:
    pod = await wait_for(f"{attempt} running", lambda: running_pod(core, namespace, attempt))
    return str(pod.spec.node_name)


async def listed(api: httpx.AsyncClient, worker: str) -> dict[str, Any]:
    workers = (await api.get(W, headers=AUTH)).json()
    return next(w for w in workers if w["workerId"] == worker)


async def test_a_registered_worker_speaks_for_its_node(
    api: httpx.AsyncClient,
    kube: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    pools: Pools,
    nodes: Nodes,
) -> None:
    pool = await pools.create(["cpu"], size=2, max_concurrency=4)
    a, b = sorted(pools.members[pool])
    doomed = await pools.add_node(pool, isolated=True)  # its kubelet can be killed
    tag = namespace[-6:]  # worker ids are cluster-wide; tests share the registry
    wa, wd = f"a-{tag}", f"d-{tag}"

    # Reported loads fill two nodes: the job goes to the third.
    await register(api, wa, a, load=4)
    await register(api, wd, doomed, load=4)
    loads = {wa: 4, wd: 4}
    beating = {w: asyncio.create_task(_beat_every_second(api, w, loads)) for w in loads}
    await wait_for("the pool status", lambda: _members(kube, pool, 3))
    await _registry_seen()
    await create_execution(kube, namespace, "placed", dag([{"name": "j"}], duration="600s"))
    assert await node_of(core, namespace, "placed-j-1") == b

    # One node's load drops: the next job goes there (b runs ours).
    loads[wd] = 0
    await _registry_seen()
    await create_execution(kube, namespace, "moved", dag([{"name": "j"}], duration="600s"))
    assert await node_of(core, namespace, "moved-j-1") == doomed

    # The machine dies: its worker goes silent (a's keeps beating). The job
    # runs again elsewhere without waiting for the old pod, which no kubelet
    # is left to remove (and whose attempt can no longer report).
    beating.pop(wd).cancel()
    last_beat = time.monotonic()
    nodes.kill(doomed)
    try:
        moved = await node_of(core, namespace, "moved-j-2")
    finally:
        took = time.monotonic() - last_beat
    assert moved == b
    old = await read_pod(core, namespace, "moved-j-1")
    assert old is not None  # still there: the replacement did not wait for it
    job = (await get_execution(kube, namespace, "moved"))["status"]["jobs"][0]
    assert (job["failures"], job["infraFailures"]) == (0, 1)
    assert not (await listed(api, wd))["healthy"]
    print(f"\nlast heartbeat -> replacement Running {took:.2f}s (timeout {TIMEOUT}s)")
    assert took < TIMEOUT + 6  # the timeout, a registry read (2.5 s), a pass

    # Unregistered: drained, no new job lands on its node.
    assert (await api.delete(f"{W}/{wa}", headers=AUTH)).status_code == 204
    shown = await listed(api, wa)
    assert (shown["draining"], shown["schedulable"]) == (True, False)
    loads[wa] = 0  # a drained worker still heartbeats; it just gets nothing new
    await _registry_seen()
    await create_execution(kube, namespace, "drained", dag([{"name": "j"}], duration="600s"))
    assert await node_of(core, namespace, "drained-j-1") == b
    beating.pop(wa).cancel()

    # A worker naming no pool node: kept, and said to be of no use.
    await register(api, f"lab-{tag}", "gpu-box.lab")
    shown = await listed(api, f"lab-{tag}")
    assert shown["schedulable"] is False
    assert "no WorkerPool node is named gpu-box.lab" in shown["reason"]


async def _beat_every_second(api: httpx.AsyncClient, worker: str, loads: dict[str, int]) -> None:
    while True:
        await beat(api, worker, loads[worker])
        await asyncio.sleep(1.0)


async def _members(kube: client.ApiClient, pool: str, count: int) -> bool:
    obj = await client.CustomObjectsApi(kube).get_cluster_custom_object(
        "dagwright.io", "v1alpha1", "workerpools", pool
    )
    return len((obj.get("status") or {}).get("members", [])) == count


async def _registry_seen() -> None:
    """The operator reads the registry with its heartbeat (every 2.5 s at the
    default lease): give it one."""
    await asyncio.sleep(3.0)
