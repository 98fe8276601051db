"""Workers registered over REST speak for the nodes they name: their load
counts in where jobs go, their silence fails the node's jobs over without
waiting for the old pods, unregistering drains the node, and one that names
no pool node is shown as not schedulable, with why."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes_asyncio import client

from dagwright.devcluster.redis_server import RedisServer
from tests.conftest import API_TOKEN, ApiProcess, Nodes, Pools, wait_for
from tests.helpers import (
    api_in_process,
    create_execution,
    dag,
    get_execution,
    read_pod,
    running_pod,
)
from tests.worker.test_runtime import bound_token

pytestmark = pytest.mark.usefixtures("operator")
TIMEOUT = 3.0  # the registered workers' heartbeat timeout here (90 s by default)
# The node agent's here (10 s by default); measure the default with
# DAGWRIGHT_TEST_AGENT_TIMEOUT=10 DAGWRIGHT_NODE_TIMING=upstream.
AGENT_TIMEOUT = float(os.environ.get("DAGWRIGHT_TEST_AGENT_TIMEOUT", TIMEOUT))
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


def start_agent(api_server: ApiProcess, node: str, token_file: Path) -> subprocess.Popen[bytes]:
    """The node agent as its DaemonSet runs it, for ``node``."""
    env = {
        **os.environ,
        "NODE_NAME": node,
        "DAGWRIGHT_API_URL": api_server.url,
        "DAGWRIGHT_TOKEN_FILE": str(token_file),
        "DAGWRIGHT_AGENT_INTERVAL_SECONDS": "0.5",
        "DAGWRIGHT_AGENT_TIMEOUT_SECONDS": str(AGENT_TIMEOUT),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "dagwright.worker.agent"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


async def test_the_node_agent_fails_a_dead_machines_jobs_over_and_drains_on_stop(
    api: httpx.AsyncClient,
    api_server: ApiProcess,
    kube: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    pools: Pools,
    nodes: Nodes,
    tmp_path: Path,
) -> None:
    """The agent registers its node with a short timeout of its own; killed
    with its machine, the machine's jobs run again elsewhere in about that
    timeout, before the node controller would even call the node NotReady at
    upstream timing (50 s). Stopped (a drain, a shutdown), it drains its node."""
    pool = await pools.create(["cpu"], size=1, max_concurrency=4)
    (other,) = pools.members[pool]
    doomed = await pools.add_node(pool, isolated=True)
    token = tmp_path / "token"
    token.write_text(API_TOKEN)
    agents = [start_agent(api_server, doomed, token)]
    # Until the job is placed, the other node reports itself full.
    await register(api, other, other, load=4)
    loads = {other: 4}
    full = asyncio.create_task(_beat_every_second(api, other, loads))
    try:

        async def registered() -> bool:
            workers = (await api.get(W, headers=AUTH)).json()
            return any(w["workerId"] == doomed and w["healthy"] for w in workers)

        await wait_for("the agent registered", registered, within=20)
        await _registry_seen()
        await create_execution(kube, namespace, "far", dag([{"name": "j"}], duration="600s"))
        assert await node_of(core, namespace, "far-j-1") == doomed
        full.cancel()
        agents.append(start_agent(api_server, other, token))  # registers it afresh: load 0
        await _registry_seen()
        agents[0].kill()  # the machine dies: kubelet and agent at once
        nodes.kill(doomed)
        killed = time.monotonic()
        moved = await node_of(core, namespace, "far-j-2")
        took = time.monotonic() - killed
        assert moved == other
        old = await read_pod(core, namespace, "far-j-1")
        assert old is not None  # not waited for
        # A partition, not a death: the old attempt may still run. What it
        # commits is refused; the new attempt's is recorded.
        new = await read_pod(core, namespace, "far-j-2")
        async with httpx.AsyncClient(base_url=api_server.url) as http:
            for pod, expected in ((old, 409), (new, 200)):
                token_of = await bound_token(core, namespace, pod)
                saved = await http.post(
                    "/api/distributed/attempts/checkpoint",
                    json={"path": f"s3://ckpt/{pod.metadata.name}", "step": 1},
                    headers={"Authorization": f"Bearer {token_of}"},
                )
                assert saved.status_code == expected, saved.text
        print(
            f"\nnode agent killed with its machine -> replacement Running {took:.2f}s "
            f"(agent timeout {AGENT_TIMEOUT:g}s)"
        )
        assert took < AGENT_TIMEOUT + 6

        agents[1].send_signal(signal.SIGTERM)  # the other node is drained (shutdown)
        assert agents[1].wait(timeout=10) == 0
        shown = await listed(api, other[:63])
        assert (shown["draining"], shown["schedulable"]) == (True, False)
    finally:
        full.cancel()
        for agent in agents:
            if agent.poll() is None:
                agent.kill()
            agent.communicate(timeout=10)
