"""Workers: those registered over REST (with heartbeats) and the nodes of
every WorkerPool, in one list.

A registered worker whose hostname is a WorkerPool's node speaks for that
node: its heartbeats are the machine's liveness (silent past its timeout:
the node's jobs fail over), its currentLoad counts in where the next job
goes, its maxConcurrency is the node's; unregistering it drains the node.
One that names no such node is kept, shown not schedulable, with why."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from dagwright.api.deps import Services, Svc, Who, WorkerId, guarded_router
from dagwright.api.errors import Problem
from dagwright.api.models import Worker, WorkerHeartbeat, WorkerRegistration, problems
from dagwright.names import GROUP, POOLS, VERSION

router = guarded_router("/workers", "workers")


@router.post("/register", status_code=201, response_model=Worker)
async def register(body: WorkerRegistration, svc: Svc, caller: Who) -> Worker:
    await svc.allow(caller, "update", POOLS)
    timeout = float(body.heartbeat_timeout_seconds or svc.settings.worker_heartbeat_timeout_seconds)
    # The operator judges silence by the timeout the worker registered under.
    data = body.model_dump(by_alias=True, exclude={"heartbeat_timeout_seconds"})
    data["timeoutSeconds"] = timeout
    await svc.store.register_worker(body.worker_id, data, ttl_seconds=2 * timeout)
    nodes = _pool_nodes(await _pools(svc))
    return registered(data | {"lastHeartbeat": time.time(), "currentLoad": 0}, timeout, nodes)


@router.post("/{worker_id}/heartbeat", response_model=dict[str, bool], responses=problems(404))
async def heartbeat(
    worker_id: WorkerId, body: WorkerHeartbeat, svc: Svc, caller: Who
) -> dict[str, bool]:
    await svc.allow(caller, "update", POOLS)
    timeout = svc.settings.worker_heartbeat_timeout_seconds
    if not await svc.store.worker_heartbeat(worker_id, body.current_load, ttl_seconds=2 * timeout):
        raise Problem(404, f"worker {worker_id} is not registered (or its registration expired)")
    return {"ok": True}


@router.delete("/{worker_id}", status_code=204, responses=problems(404))
async def unregister(worker_id: WorkerId, svc: Svc, caller: Who) -> None:
    """Drain: no new jobs on its node, running ones finish; the registration
    then lapses (after twice the heartbeat timeout)."""
    await svc.allow(caller, "update", POOLS)
    if not await svc.store.drain_worker(worker_id):
        raise Problem(404, f"worker {worker_id} is not registered")


@router.get("", response_model=list[Worker])
async def workers(svc: Svc, caller: Who) -> list[Worker]:
    """Registered workers and the nodes of every WorkerPool, in one list."""
    await svc.allow(caller, "list", POOLS)
    timeout = svc.settings.worker_heartbeat_timeout_seconds
    pools = await _pools(svc)
    nodes = _pool_nodes(pools)
    result = [registered(w, timeout, nodes) for w in await svc.store.workers()]
    for pool in pools:
        spec, status = pool["spec"], pool.get("status") or {}
        for member in status.get("members", []):
            result.append(
                Worker(
                    worker_id=member["name"],
                    source="pool",
                    hostname=member["name"],
                    capabilities=spec.get("capabilities", []),
                    max_concurrency=spec.get("maxConcurrency", 4),
                    current_load=member.get("slotsUsed", 0),
                    healthy=bool(member.get("ready")),
                    pool=pool["metadata"]["name"],
                )
            )
    return result


async def _pools(svc: Services) -> list[dict[str, Any]]:
    listing = await svc.objects.list_cluster_custom_object(GROUP, VERSION, POOLS)
    pools: list[dict[str, Any]] = listing["items"]
    return pools


def _pool_nodes(pools: list[dict[str, Any]]) -> dict[str, str]:
    """Node -> the WorkerPool it belongs to (from the pools' status)."""
    return {
        str(member["name"]): str(pool["metadata"]["name"])
        for pool in pools
        for member in (pool.get("status") or {}).get("members", [])
    }


def registered(
    data: dict[str, Any], timeout: float, nodes: Mapping[str, str] | None = None
) -> Worker:
    """A worker registered over REST, healthy while its heartbeats are recent."""
    beat = float(data.get("lastHeartbeat") or 0)
    draining = bool(data.get("draining"))
    pool = (nodes or {}).get(data["hostname"])
    reason = (
        "draining (unregistered): no new jobs"
        if draining
        else ""
        if pool
        else f"no WorkerPool node is named {data['hostname']}: jobs run only on pool nodes"
    )
    return Worker(
        worker_id=data["workerId"],
        source="registered",
        hostname=data["hostname"],
        capabilities=data.get("capabilities", []),
        max_concurrency=data.get("maxConcurrency", 1),
        current_load=data.get("currentLoad", 0),
        healthy=time.time() - beat <= float(data.get("timeoutSeconds") or timeout),
        last_heartbeat=beat,
        pool=pool,
        schedulable=not reason,
        reason=reason,
        draining=draining,
    )
