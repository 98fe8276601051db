"""Slots and queue places follow their execution's ownership: a new owner
adopts what the last one held, an execution that is deleted or stops waiting
gives its slots and places back at once, and instances started together
share the work from the first claim."""

from __future__ import annotations

import signal
import time
from collections import Counter
from typing import Any

import pytest
import redis.asyncio as aioredis
from kubernetes_asyncio import client

from dagwright.names import EXECUTIONS, GROUP, POOLS, VERSION
from dagwright.store import keys
from tests.conftest import Fleet, Pools, wait_for
from tests.e2e.test_faults import (
    all_owned,
    all_succeed,
    instance_id,
    one_attempt_each,
    owners,
)
from tests.helpers import (
    create_execution,
    dag,
    merge_patch,
    record_pods,
    running_pod,
    wait_phase,
)

POOL_INTERVAL = 0.5  # the test operators' DAGWRIGHT_POOL_INTERVAL_SECONDS


async def _queued(kube: client.ApiClient, redis: aioredis.Redis, pool: str) -> tuple[int, int]:
    """(the pool's status.queued, the queue's length in Redis)."""
    obj = await client.CustomObjectsApi(kube).get_cluster_custom_object(GROUP, VERSION, POOLS, pool)
    return int((obj.get("status") or {}).get("queued", 0)), int(await redis.zcard(keys.queue(pool)))


@pytest.mark.usefixtures("operator")
async def test_deleting_a_running_execution_frees_its_slot_at_once(
    kube: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    pools: Pools,
    redis: aioredis.Redis,
) -> None:
    pool = await pools.create(["cpu"], size=1, max_concurrency=1)  # one slot in all
    async with record_pods(core, namespace) as history:
        await create_execution(kube, namespace, "holder", dag([{"name": "hold"}], duration="120s"))
        await wait_for("the holder running", lambda: running_pod(core, namespace, "holder-hold-1"))
        await create_execution(kube, namespace, "waiter", dag([{"name": "job"}], duration="300ms"))

        async def waiting() -> bool:
            return (await _queued(kube, redis, pool))[1] == 1

        await wait_for("the waiter queued for the slot", waiting)
        deleted = time.monotonic()
        await client.CustomObjectsApi(kube).delete_namespaced_custom_object(
            GROUP, VERSION, namespace, EXECUTIONS, "holder"
        )
        started = await history.when("waiter-job-1", type_="ADDED", within=30)
        await wait_phase(kube, namespace, "waiter", "Succeeded", within=30)
    print(f"\ndeleted holder -> waiter's pod created: {started - deleted:.2f}s")
    assert started - deleted < 2.0  # not when the deleted execution's slot lapses (45 s)


@pytest.mark.usefixtures("operator")
async def test_jobs_that_stop_waiting_leave_the_queue_at_once(
    kube: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    pools: Pools,
    redis: aioredis.Redis,
) -> None:
    """A 200-job execution cancelled (Stop: running jobs finish) with 198
    jobs queued: nothing is shown queued within a pool interval, so neither
    people nor the autoscaler see work that will never run."""
    pool = await pools.create(["cpu"], size=1, max_concurrency=2)
    jobs = [{"name": f"j{i:03d}"} for i in range(200)]
    await create_execution(kube, namespace, "wide", dag(jobs, duration="4s", parallelism=200))

    async def queued_up() -> bool:
        return min(await _queued(kube, redis, pool)) >= 150

    await wait_for("the pool showing the jobs queued", queued_up, within=60)
    await merge_patch(kube, namespace, "wide", {"spec": {"shutdown": "Stop"}})
    stopped = time.monotonic()

    async def nothing_queued() -> bool:
        return await _queued(kube, redis, pool) == (0, 0)

    await wait_for("nothing queued", nothing_queued, within=POOL_INTERVAL + 5.0, interval=0.05)
    cleared = time.monotonic() - stopped
    final = await wait_phase(kube, namespace, "wide", "Cancelled", "Succeeded", "Failed", within=60)
    assert final["status"]["phase"] == "Cancelled"
    print(f"\ncancelled with 198 queued -> pool shows 0 queued after {cleared:.2f}s")
    assert cleared <= POOL_INTERVAL + 2.0
    assert await _queued(kube, redis, pool) == (0, 0)


async def test_a_stalled_owners_executions_move_on_within_the_lease(
    kube: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    pools: Pools,
    fleet: Fleet,
    redis: aioredis.Redis,
) -> None:
    """SIGSTOP one of two instances: its executions' running jobs finish
    while nobody owns them, and their slots are the pool's only ones. The
    new owner adopts those slots and frees them at once; before, they stayed
    held until they lapsed (3 leases) and the executions stood still."""
    lease = 6.0
    await pools.create(["cpu"], size=1, max_concurrency=4)  # one slot per execution
    procs = fleet.start(2, DAGWRIGHT_LEASE_SECONDS=str(lease))
    await fleet.wait_live(redis, 2)
    chain = [{"name": f"s{i}", "dependsOn": [f"s{i - 1}"] if i else []} for i in range(10)]
    names = [f"chain-{i}" for i in range(4)]
    async with record_pods(core, namespace) as history:
        for name in names:
            await create_execution(kube, namespace, name, dag(chain, duration="1500ms"))

        async def all_running() -> dict[str, str] | None:
            found = await owners(kube, namespace, names)
            started = {e.execution for e in history.events if e.phase == "Running"}
            return found if all(found.values()) and started >= set(names) else None

        owned = await wait_for("every chain owned and running", all_running, within=30)
        victim = next(p for p in procs if instance_id(p) in owned.values())
        orphans = [n for n, who in owned.items() if who == instance_id(victim)]
        victim.process.signal(signal.SIGSTOP)  # type: ignore[union-attr]
        stalled = time.monotonic()

        async def moved_on() -> dict[str, float] | None:
            added = {
                e.execution: e.at - stalled
                for e in reversed(history.events)
                if e.type == "ADDED" and e.at > stalled + 2.0 and e.execution in orphans
            }
            return added if len(added) == len(orphans) else None

        progress = await wait_for("the stalled owner's chains moving on", moved_on, within=60)
        await all_succeed(kube, namespace, names, within=120)
    history.check_never_twice()
    one_attempt_each(history, names, chain)
    print(
        f"\nSIGSTOP of the owner of {len(orphans)} chains (lease {lease}s): "
        f"next pod of each after {sorted(round(v, 2) for v in progress.values())} s"
    )
    assert max(progress.values()) <= lease + 5.0


async def test_instances_started_together_share_the_first_claims(
    kube: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    pools: Pools,
    fleet: Fleet,
    redis: aioredis.Redis,
) -> None:
    await pools.create(["cpu"], size=1, max_concurrency=8)
    jobs: list[dict[str, Any]] = [{"name": "a"}, {"name": "b", "dependsOn": ["a"]}]
    # First claims, decided at once by every runner, follow the rendezvous
    # hash: with 4 executions one instance got all of them 1 time in 8 by
    # the hash's luck alone (seen twice in a dozen runs). With 10, 1 in 512;
    # an instance that did not know its peer would still take all 10.
    names = [f"dag-{i}" for i in range(10)]
    for name in names:  # waiting before either instance runs
        await create_execution(kube, namespace, name, dag(jobs, duration="300ms"))
    # At the default lease and heartbeat (15 s, every 2.5 s): "together" is
    # within a heartbeat or so, which the busy test machine needs.
    procs = fleet.start(2, DAGWRIGHT_LEASE_SECONDS="15", DAGWRIGHT_HEARTBEAT_SECONDS="2.5")

    first = await all_owned(kube, namespace, names, within=60)
    split = Counter(first.values())
    print(f"\nfirst claims of 10 executions by 2 instances started together: {dict(split)}")
    assert sorted(split) == sorted(instance_id(p) for p in procs)
    await all_succeed(kube, namespace, names, within=60)
