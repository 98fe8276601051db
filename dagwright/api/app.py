"""The REST facade: FastAPI over the same Redis state and Kubernetes resources
the operator uses. It keeps no truth of its own: executions are DAGExecution
objects, queues and workers live in Redis.

``uvicorn --factory dagwright.api.app:create_app``
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import redis.asyncio as aioredis
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dagwright.api.auth import Authenticator, AuthError, Caller
from dagwright.api.models import (
    WORKFLOW_LABEL,
    CancelRequest,
    ExecuteRequest,
    ExecutionCreated,
    ExecutionState,
    Health,
    PoolQueue,
    QueueStats,
    Worker,
    WorkerHeartbeat,
    WorkerRegistration,
    problems,
)
from dagwright.core.graph import InvalidDag, build_dag
from dagwright.core.spec import DNS_LABEL, DAGExecutionSpec
from dagwright.crdgen import GROUP, VERSION
from dagwright.operator.kube import error_message, new_api_client
from dagwright.store.redis_store import Store
from dagwright.store.slots import queue_key

log = logging.getLogger(__name__)

PREFIX = "/api/distributed"


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DAGWRIGHT_API_", populate_by_name=True)

    redis_url: str = Field("redis://127.0.0.1:6379/0", validation_alias="DAGWRIGHT_REDIS_URL")
    namespace: str = "default"
    # A static bearer token with every right, for local use. Other callers
    # present Kubernetes tokens (TokenReview) and need RBAC (SubjectAccessReview).
    token: str | None = None
    worker_heartbeat_timeout_seconds: float = 90.0
    max_body_bytes: int = 4 * 1024 * 1024
    # Per client (who it is once its token is known good, else its address):
    # sustained rate and burst.
    rate_per_second: float = 20.0
    rate_burst: int = 40
    # Addresses (or networks) of the reverse proxies whose X-Forwarded-For is
    # believed; from anyone else the header is ignored. Comma-separated.
    trusted_proxies: str = ""


class RateLimiter:
    """Token buckets per client, in this API process."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, burst
        self.buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, at)

    def take(self, client_key: str) -> float:
        """0 if allowed, else the seconds until a request would be."""
        now = time.monotonic()
        tokens, at = self.buckets.get(client_key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens < 1.0:
            self.buckets[client_key] = (tokens, now)
            return (1.0 - tokens) / self.rate
        self.buckets[client_key] = (tokens - 1.0, now)
        if len(self.buckets) > 10_000:  # forget idle clients rather than grow without bound
            self.buckets = {k: v for k, v in self.buckets.items() if now - v[1] < 60}
        return 0.0


def _client_key(request: Request) -> str:
    """Who a request counts against: its caller when its token is known good,
    else its address (the peer's, or the client a trusted proxy names), so
    that made-up tokens, each a TokenReview, cannot dodge the limit."""
    svc: Services | None = getattr(request.app.state, "services", None)
    caller = svc.auth.known(request.headers.get("authorization", "")) if svc else None
    if caller is not None:
        return "user:" + caller.user
    return "addr:" + (request.client.host if request.client else "?")


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Refuse a request body over ``limit`` bytes as it streams in, chunked or
    not: a Content-Length over it at once, any body once it passes it."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = _problem(413, f"request body over {self.limit} bytes")
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await refused(scope, receive, send)
            return
        received = 0
        over = answered = False

        async def limited() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    over = True
                    raise _TooLarge
            return message

        async def sending(message: Message) -> None:
            # Once the body ran over, whatever the app answers (FastAPI turns
            # a failed read into a 400) gives way to the 413.
            nonlocal answered
            if not over:
                await send(message)
            elif not answered:
                answered = True
                await refused(scope, receive, send)

        try:
            await self.app(scope, limited, sending)
        except _TooLarge:
            if not answered:
                await refused(scope, receive, send)


class Problem(Exception):
    def __init__(self, status_code: int, message: str, detail: Any = None):
        super().__init__(message)
        self.status_code, self.message, self.detail = status_code, message, detail


def _problem(code: int, message: str, detail: Any = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(status_code=code, content=body)


class Services:
    def __init__(self, settings: ApiSettings, redis: aioredis.Redis, kube: client.ApiClient):
        self.settings = settings
        self.redis = redis
        self.store = Store(redis)
        self.kube = kube
        self.objects = client.CustomObjectsApi(kube)
        self.core = client.CoreV1Api(kube)
        self.auth = Authenticator(kube, settings.token)


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


async def authenticated(request: Request) -> Caller:
    caller: Caller | None = getattr(request.state, "caller", None)
    if caller is not None:  # authenticated before its body was read
        return caller
    svc: Services = request.app.state.services
    try:
        return await svc.auth.authenticate(request.headers.get("authorization", ""))
    except AuthError as exc:
        raise Problem(exc.status_code, exc.message) from exc


async def allow(
    svc: Services, caller: Caller, verb: str, resource: str, namespace: str = ""
) -> None:
    try:
        await svc.auth.authorize(caller, verb, resource, namespace)
    except AuthError as exc:
        raise Problem(exc.status_code, exc.message) from exc


Svc = Annotated[Services, Depends(services)]
# Names are checked here so a malformed one is a 422, never a question to the API server.
ExecutionId = Annotated[
    str, Path(pattern=DNS_LABEL, max_length=63, description="Name of the DAGExecution.")
]
WorkerId = Annotated[str, Path(pattern=DNS_LABEL, max_length=63)]
Namespace = Annotated[
    str | None,
    Query(pattern=DNS_LABEL, max_length=63, description="Defaults to the API's namespace."),
]
Who = Annotated[Caller, Depends(authenticated)]
# Every route may answer with these; routes add their own (404, 409) below.
guarded = APIRouter(prefix=PREFIX, responses=problems(400, 401, 403, 413, 422, 429, 502, 503))
open_router = APIRouter(prefix=PREFIX, responses=problems(413, 429))


# --- executions -----------------------------------------------------------------


@guarded.post(
    "/execute",
    status_code=201,
    response_model=ExecutionCreated,
    tags=["executions"],
    responses=problems(404, 409),
)
async def execute(body: ExecuteRequest, svc: Svc, caller: Who) -> ExecutionCreated:
    """Create a DAGExecution from the seed's JSON; returns its executionId."""
    await allow(svc, caller, "create", "dagexecutions", body.namespace or svc.settings.namespace)
    try:
        manifest = body.to_manifest()
        build_dag(DAGExecutionSpec.model_validate(manifest["spec"]))
    except (
        InvalidDag
    ) as exc:  # cycles and unknown dependencies: a 422 now, not a Failed object later
        raise Problem(422, "invalid DAG", exc.problems) from exc
    except ValueError as exc:
        raise Problem(422, "invalid DAG", str(exc)) from exc
    name = manifest["metadata"]["name"]
    namespace = body.namespace or svc.settings.namespace
    try:
        await svc.objects.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "dagexecutions", manifest
        )
    except ApiException as exc:
        if exc.status == 409:
            raise Problem(409, f"execution {name} already exists in {namespace}") from exc
        raise
    return ExecutionCreated(
        execution_id=name,
        namespace=namespace,
        workflow_id=body.workflow_id,
        jobs=len(manifest["spec"]["jobs"]),
    )


async def _get(svc: Services, name: str, namespace: str | None) -> tuple[str, dict[str, Any]]:
    ns = namespace or svc.settings.namespace
    try:
        obj = await svc.objects.get_namespaced_custom_object(
            GROUP, VERSION, ns, "dagexecutions", name
        )
    except ApiException as exc:
        if exc.status == 404:
            raise Problem(404, f"execution {name} not found in {ns}") from exc
        raise
    return ns, obj


def _state(ns: str, obj: dict[str, Any]) -> ExecutionState:
    status_ = obj.get("status") or {}
    spec = obj.get("spec") or {}
    return ExecutionState(
        execution_id=obj["metadata"]["name"],
        namespace=ns,
        workflow_id=(obj["metadata"].get("labels") or {}).get(WORKFLOW_LABEL),
        phase=status_.get("phase"),
        message=status_.get("message", ""),
        progress=status_.get("progress", ""),
        counts=status_.get("counts") or {},
        jobs=status_.get("jobs"),
        suspended=bool(spec.get("suspend")),
        shutdown=spec.get("shutdown"),
    )


@guarded.get(
    "/execute/{execution_id}",
    response_model=ExecutionState,
    tags=["executions"],
    responses=problems(404),
)
async def get_execution(
    execution_id: ExecutionId, svc: Svc, caller: Who, namespace: Namespace = None
) -> ExecutionState:
    await allow(svc, caller, "get", "dagexecutions", namespace or svc.settings.namespace)
    ns, obj = await _get(svc, execution_id, namespace)
    return _state(ns, obj)


async def _patch_spec(
    svc: Services, caller: Caller, name: str, namespace: str | None, patch: dict[str, Any]
) -> ExecutionState:
    await allow(svc, caller, "patch", "dagexecutions", namespace or svc.settings.namespace)
    ns, _ = await _get(svc, name, namespace)
    call: Any = svc.objects.patch_namespaced_custom_object  # the stubs lack _content_type
    obj = await call(
        GROUP,
        VERSION,
        ns,
        "dagexecutions",
        name,
        {"spec": patch},
        _content_type="application/merge-patch+json",
    )
    return _state(ns, obj)


@guarded.post(
    "/execute/{execution_id}/suspend",
    response_model=ExecutionState,
    tags=["executions"],
    responses=problems(404),
)
async def suspend(
    execution_id: ExecutionId, svc: Svc, caller: Who, namespace: Namespace = None
) -> ExecutionState:
    return await _patch_spec(svc, caller, execution_id, namespace, {"suspend": True})


@guarded.post(
    "/execute/{execution_id}/resume",
    response_model=ExecutionState,
    tags=["executions"],
    responses=problems(404),
)
async def resume(
    execution_id: ExecutionId, svc: Svc, caller: Who, namespace: Namespace = None
) -> ExecutionState:
    return await _patch_spec(svc, caller, execution_id, namespace, {"suspend": False})


@guarded.post(
    "/execute/{execution_id}/cancel",
    response_model=ExecutionState,
    tags=["executions"],
    responses=problems(404),
)
async def cancel(
    execution_id: ExecutionId,
    svc: Svc,
    caller: Who,
    body: CancelRequest | None = None,
    namespace: Namespace = None,
) -> ExecutionState:
    mode = (body or CancelRequest()).mode
    return await _patch_spec(svc, caller, execution_id, namespace, {"shutdown": mode.value})


# --- queue ------------------------------------------------------------------------


@guarded.get("/queue/stats", response_model=QueueStats, tags=["queue"])
async def queue_stats(svc: Svc, caller: Who) -> QueueStats:
    await allow(svc, caller, "list", "workerpools")
    return await _queue_stats(svc, caller)


async def _visible_namespace(svc: Services, caller: Caller) -> str | None:
    """Whose executions the caller may count: "" for every namespace, the
    API's namespace, or None for none."""
    for namespace in ("", svc.settings.namespace):
        try:
            await svc.auth.authorize(caller, "list", "dagexecutions", namespace)
            return namespace
        except AuthError:
            continue
    return None


async def _queue_stats(svc: Services, caller: Caller) -> QueueStats:
    pools = (await svc.objects.list_cluster_custom_object(GROUP, VERSION, "workerpools"))["items"]
    rows = []
    for pool in pools:
        st = pool.get("status") or {}
        name = pool["metadata"]["name"]
        queued = int(await svc.redis.zcard(queue_key(name)))
        rows.append(
            PoolQueue(
                pool=name,
                queued=queued,
                slots=st.get("slots", 0),
                slots_used=st.get("slotsUsed", 0),
            )
        )
    # Executions are counted where the caller may list them, not beyond.
    namespace = await _visible_namespace(svc, caller)
    executions: list[dict[str, Any]] = []
    if namespace == "":
        listing = await svc.objects.list_cluster_custom_object(GROUP, VERSION, "dagexecutions")
        executions = listing["items"]
    elif namespace is not None:
        listing = await svc.objects.list_namespaced_custom_object(
            GROUP, VERSION, namespace, "dagexecutions"
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


@guarded.post("/queue/pause", response_model=QueueStats, tags=["queue"])
async def pause(svc: Svc, caller: Who) -> QueueStats:
    """No new job starts anywhere; running jobs finish."""
    await allow(svc, caller, "patch", "workerpools")
    await svc.store.set_paused(True)
    return await _queue_stats(svc, caller)


@guarded.post("/queue/resume", response_model=QueueStats, tags=["queue"])
async def resume_queue(svc: Svc, caller: Who) -> QueueStats:
    await allow(svc, caller, "patch", "workerpools")
    await svc.store.set_paused(False)
    return await _queue_stats(svc, caller)


# --- workers ----------------------------------------------------------------------


@guarded.post("/workers/register", status_code=201, response_model=Worker, tags=["workers"])
async def register(body: WorkerRegistration, svc: Svc, caller: Who) -> Worker:
    await allow(svc, caller, "update", "workerpools")
    timeout = svc.settings.worker_heartbeat_timeout_seconds
    data = body.model_dump(by_alias=True)
    await svc.store.register_worker(body.worker_id, data, ttl_seconds=2 * timeout)
    return _registered(data | {"lastHeartbeat": time.time(), "currentLoad": 0}, timeout)


@guarded.post(
    "/workers/{worker_id}/heartbeat",
    response_model=dict[str, bool],
    tags=["workers"],
    responses=problems(404),
)
async def heartbeat(
    worker_id: WorkerId, body: WorkerHeartbeat, svc: Svc, caller: Who
) -> dict[str, bool]:
    await allow(svc, caller, "update", "workerpools")
    timeout = svc.settings.worker_heartbeat_timeout_seconds
    if not await svc.store.worker_heartbeat(worker_id, body.current_load, ttl_seconds=2 * timeout):
        raise Problem(404, f"worker {worker_id} is not registered (or its registration expired)")
    return {"ok": True}


@guarded.delete("/workers/{worker_id}", status_code=204, tags=["workers"], responses=problems(404))
async def unregister(worker_id: WorkerId, svc: Svc, caller: Who) -> None:
    await allow(svc, caller, "update", "workerpools")
    if not await svc.store.unregister_worker(worker_id):
        raise Problem(404, f"worker {worker_id} is not registered")


def _registered(data: dict[str, Any], timeout: float) -> Worker:
    beat = float(data.get("lastHeartbeat") or 0)
    return Worker(
        worker_id=data["workerId"],
        source="registered",
        hostname=data["hostname"],
        capabilities=data.get("capabilities", []),
        max_concurrency=data.get("maxConcurrency", 1),
        current_load=data.get("currentLoad", 0),
        healthy=time.time() - beat <= timeout,
        last_heartbeat=beat,
    )


@guarded.get("/workers", response_model=list[Worker], tags=["workers"])
async def workers(svc: Svc, caller: Who) -> list[Worker]:
    """Registered workers and the nodes of every WorkerPool, in one list."""
    await allow(svc, caller, "list", "workerpools")
    timeout = svc.settings.worker_heartbeat_timeout_seconds
    result = [_registered(w, timeout) for w in await svc.store.workers()]
    pools = (await svc.objects.list_cluster_custom_object(GROUP, VERSION, "workerpools"))["items"]
    for pool in pools:
        spec, st = pool["spec"], pool.get("status") or {}
        for member in st.get("members", []):
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


# --- health -----------------------------------------------------------------------


@open_router.get(
    "/health", response_model=Health, tags=["health"], responses={503: {"model": Health}}
)
async def health(svc: Svc) -> JSONResponse:
    problems: list[str] = []
    redis_ok = kube_ok = False
    operators = 0
    try:
        redis_ok = bool(await svc.redis.ping())
        operators = len(await svc.store.operators())
    except RedisError as exc:
        problems.append(f"redis: {exc}")
    try:
        await client.VersionApi(svc.kube).get_code()
        kube_ok = True
    except (ApiException, OSError) as exc:
        problems.append(f"kubernetes: {exc}")
    if redis_ok and operators == 0:
        problems.append("no operator instance has sent a heartbeat")
    counts = {"registered": 0, "healthy": 0}
    if redis_ok:
        timeout = svc.settings.worker_heartbeat_timeout_seconds
        registered = [_registered(w, timeout) for w in await svc.store.workers()]
        counts = {"registered": len(registered), "healthy": sum(w.healthy for w in registered)}
    ok = redis_ok and kube_ok and operators > 0
    body = Health(
        status="ok" if ok else "degraded",
        redis=redis_ok,
        kubernetes=kube_ok,
        operators=operators,
        workers=counts,
        problems=problems,
    )
    return JSONResponse(status_code=200 if ok else 503, content=body.model_dump(by_alias=True))


# --- the application -----------------------------------------------------------------


def _kube_problem(exc: ApiException) -> JSONResponse:
    """The Kubernetes API's answer, translated for the caller: what the caller
    got wrong stays a 4xx with the API server's own message."""
    message = error_message(exc)
    if exc.status == 413 or any(
        words in message.lower()
        for words in ("request is too large", "larger than max", "entity too large")
    ):
        return _problem(
            413, "the execution is too large for the Kubernetes API to store (about 1.5 MB)"
        )
    if exc.status in (401, 403):
        return _problem(502, "the API's own Kubernetes identity was refused", message)
    if exc.status in (400, 404, 409, 422):
        return _problem(exc.status, message)
    return _problem(503, "kubernetes API unavailable", f"{exc.status} {message}")


def create_app(
    settings: ApiSettings | None = None, kube: client.ApiClient | None = None
) -> FastAPI:
    settings = settings or ApiSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
        api = kube or await new_api_client()
        app.state.services = Services(settings, redis, api)
        try:
            yield
        finally:
            await redis.aclose()
            if kube is None:
                await api.close()

    app = FastAPI(
        title="dagwright",
        version="0.1.0",
        description="Run DAGs of ML-training jobs on Kubernetes: executions, queue, workers, health.",
        lifespan=lifespan,
    )
    app.include_router(guarded)
    app.include_router(open_router)

    limiter = RateLimiter(settings.rate_per_second, settings.rate_burst)

    # Innermost first: each one added wraps the ones before.
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)

    @app.middleware("http")
    async def authenticate_first(request: Request, call_next: Any) -> Any:
        # FastAPI reads a body before it resolves dependencies: a caller who
        # is not who they say must not get to send one.
        if request.method in ("POST", "PUT", "PATCH") and request.url.path != f"{PREFIX}/health":
            try:
                request.state.caller = await request.app.state.services.auth.authenticate(
                    request.headers.get("authorization", "")
                )
            except AuthError as exc:
                return _problem(exc.status_code, exc.message)
        return await call_next(request)

    @app.middleware("http")
    async def limit_rate(request: Request, call_next: Any) -> Any:
        if request.url.path != f"{PREFIX}/health":
            wait = limiter.take(_client_key(request))
            if wait > 0:
                response = _problem(429, "too many requests", {"retryAfterSeconds": round(wait, 2)})
                response.headers["Retry-After"] = str(max(1, round(wait)))
                return response
        return await call_next(request)

    @app.exception_handler(Problem)
    async def on_problem(_: Request, exc: Problem) -> JSONResponse:
        return _problem(exc.status_code, exc.message, exc.detail)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Unparseable bodies, unknown paths, wrong methods: the same error shape.
        response = _problem(exc.status_code, str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"]} for e in exc.errors()
        ]
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            return _problem(400, "malformed JSON", errors)
        return _problem(422, "invalid request", errors)

    @app.exception_handler(RedisError)
    async def on_redis(_: Request, exc: RedisError) -> JSONResponse:
        # Where Redis is (host, port) is the operator's business, not the caller's.
        log.warning("redis: %s", exc)
        return _problem(503, "redis unavailable")

    @app.exception_handler(ApiException)
    async def on_kube(_: Request, exc: ApiException) -> JSONResponse:
        return _kube_problem(exc)

    @app.exception_handler(Exception)
    async def on_anything(_: Request, exc: Exception) -> JSONResponse:
        return _problem(500, "internal error", type(exc).__name__)

    return app
