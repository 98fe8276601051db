"""WorkerPools as the web console shows them: nodes, slots, the jobs
waiting by priority, the autoscaling target and health, and the queue's
pause switch."""

from __future__ import annotations

from typing import Any

from dagwright.api.deps import Svc, Who, guarded_router
from dagwright.api.models import PoolDetail, PoolList
from dagwright.names import GROUP, POOLS, VERSION

router = guarded_router("/pools", "pools")


@router.get("", response_model=PoolList)
async def list_pools(svc: Svc, caller: Who) -> PoolList:
    await svc.allow(caller, "list", POOLS)
    listing = await svc.objects.list_cluster_custom_object(GROUP, VERSION, POOLS)
    pools: list[dict[str, Any]] = listing["items"]
    names = [pool["metadata"]["name"] for pool in pools]
    waiting = await svc.store.queued_by_priority(names)
    rows = []
    for pool in sorted(pools, key=lambda p: p["metadata"]["name"]):
        name = pool["metadata"]["name"]
        spec, status = pool.get("spec") or {}, pool.get("status") or {}
        conditions = status.get("conditions") or []
        unhealthy = [c for c in conditions if c.get("status") == "False"]
        auto = spec.get("autoscaling")
        rows.append(
            PoolDetail(
                name=name,
                capabilities=spec.get("capabilities") or [],
                max_concurrency=spec.get("maxConcurrency", 4),
                nodes=status.get("nodes", 0),
                ready_nodes=status.get("readyNodes", 0),
                slots=status.get("slots", 0),
                slots_used=status.get("slotsUsed", 0),
                queued=sum(waiting.get(name, {}).values()),
                queued_by_priority={str(p): n for p, n in waiting.get(name, {}).items()},
                desired_nodes=status.get("desiredNodes"),
                autoscaling=(
                    {"min": auto.get("minNodes", 0), "max": auto.get("maxNodes")} if auto else None
                ),
                scale_reason=status.get("scaleReason", ""),
                members=status.get("members") or [],
                healthy=not unhealthy,
                problems=[f"{c.get('type')}: {c.get('message', '')}" for c in unhealthy],
            )
        )
    return PoolList(paused=await svc.store.paused(), pools=rows)
