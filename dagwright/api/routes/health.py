"""Health: Redis, the Kubernetes API and live operator instances. Open to
anyone (probes carry no token); it says nothing a caller could misuse."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from redis.exceptions import RedisError

from dagwright.api.deps import Svc
from dagwright.api.models import Health, problems
from dagwright.api.routes.workers import registered
from dagwright.api.settings import PREFIX

PATH = f"{PREFIX}/health"
router = APIRouter(prefix=PREFIX, tags=["health"], responses=problems(413, 429))


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
async def health(svc: Svc) -> JSONResponse:
    trouble: list[str] = []
    redis_ok = kube_ok = False
    operators = 0
    try:
        redis_ok = bool(await svc.redis.ping())
        operators = len(await svc.store.operators())
    except RedisError as exc:
        trouble.append(f"redis: {exc}")
    try:
        await client.VersionApi(svc.kube).get_code()
        kube_ok = True
    except (ApiException, OSError) as exc:
        trouble.append(f"kubernetes: {exc}")
    if redis_ok and operators == 0:
        trouble.append("no operator instance has sent a heartbeat")
    counts = {"registered": 0, "healthy": 0}
    if redis_ok:
        timeout = svc.settings.worker_heartbeat_timeout_seconds
        workers = [registered(w, timeout) for w in await svc.store.workers()]
        counts = {"registered": len(workers), "healthy": sum(w.healthy for w in workers)}
    ok = redis_ok and kube_ok and operators > 0
    body = Health(
        status="ok" if ok else "degraded",
        redis=redis_ok,
        kubernetes=kube_ok,
        operators=operators,
        workers=counts,
        problems=trouble,
    )
    return JSONResponse(status_code=200 if ok else 503, content=body.model_dump(by_alias=True))
