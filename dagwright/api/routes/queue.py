"""The queue: jobs waiting for slots per WorkerPool, executions by phase, and
the cluster-wide pause switch."""

from __future__ import annotations

from typing import Any

from dagwright.api.auth import Caller
from dagwright.api.deps import Services, Svc, Who, guarded_router
from dagwright.api.models import PoolQueue, QueueStats
from dagwright.errors import AuthError
from dagwright.names import EXECUTIONS, GROUP, POOLS, VERSION

router = guarded_router("/queue", "queue")


@router.get("/stats", response_model=QueueStats)
async def queue_stats(svc: Svc, caller: Who) -> QueueStats:
    await svc.allow(caller, "list", POOLS)
    return await _queue_stats(svc, caller)


@router.post("/pause", response_model=QueueStats)
async def pause(svc: Svc, caller: Who) -> QueueStats:
    """No new job starts anywhere; running jobs finish."""
    await svc.allow(caller, "patch", POOLS)
    await svc.store.set_paused(True)
    return await _queue_stats(svc, caller)


@router.post("/resume", response_model=QueueStats)
async def resume_queue(svc: Svc, caller: Who) -> QueueStats:
    await svc.allow(caller, "patch", POOLS)
    await svc.store.set_paused(False)
    return await _queue_stats(svc, caller)


async def _visible_namespace(svc: Services, caller: Caller) -> str | None:
    """Whose executions the caller may count: "" for every namespace, the
    API's namespace, or None for none."""
    for namespace in ("", svc.settings.namespace):
        try:
            await svc.allow(caller, "list", EXECUTIONS, namespace)
            return namespace
        except AuthError:
            continue
    return None


async def _queue_stats(svc: Services, caller: Caller) -> QueueStats:
    pools = (await svc.objects.list_cluster_custom_object(GROUP, VERSION, POOLS))["items"]
    queued = await svc.store.queued([pool["metadata"]["name"] for pool in pools])
    rows = []
    for pool in pools:
        status = pool.get("status") or {}
        name = pool["metadata"]["name"]
        rows.append(
            PoolQueue(
                pool=name,
                queued=queued[name],
                slots=status.get("slots", 0),
                slots_used=status.get("slotsUsed", 0),
            )
        )
    # Executions are counted where the caller may list them, not beyond.
    namespace = await _visible_namespace(svc, caller)
    executions: list[dict[str, Any]] = []
    if namespace == "":
        listing = await svc.objects.list_cluster_custom_object(GROUP, VERSION, EXECUTIONS)
        executions = listing["items"]
    elif namespace is not None:
        listing = await svc.objects.list_namespaced_custom_object(
            GROUP, VERSION, namespace, EXECUTIONS
        )
        executions = listing["items"]
    phases: dict[str, int] = {}
    for obj in executions:
        phase = (obj.get("status") or {}).get("phase") or "Pending"
        phases[phase] = phases.get(phase, 0) + 1
    return QueueStats(
        paused=await svc.store.paused(),
        queued=sum(r.queued for r in rows),
        pools=rows,
        executions=phases,
    )
