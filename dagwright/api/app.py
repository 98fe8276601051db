"""The REST facade: FastAPI over the same Redis state and Kubernetes resources
the operator uses. It keeps no truth of its own: executions are DAGExecution
objects, queues and workers live in Redis.

``uvicorn --factory dagwright.api.app:create_app``

Routes live in ``routes/`` (one router per resource), what they depend on in
``deps.py``, the error answers in ``errors.py``, the request limits in
``limits.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from kubernetes_asyncio import client
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from swagger_ui_bundle import swagger_ui_path

from dagwright.api import errors, metrics
from dagwright.api.deps import Services
from dagwright.api.limits import BodyLimit, RateLimiter, client_key
from dagwright.api.routes import attempts, console, executions, health, live, pools, queue, workers
from dagwright.api.settings import ApiSettings
from dagwright.errors import AuthError
from dagwright.kube.client import new_api_client
from dagwright.version import VERSION


def create_app(
    settings: ApiSettings | None = None, kube: client.ApiClient | None = None
) -> FastAPI:
    settings = settings or ApiSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # A pooled connection that died with a Redis restart fails its next
        # command: retried on a fresh connection, the caller never sees it.
        redis = aioredis.Redis.from_url(
            settings.redis_url,
            decode_responses=True,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            health_check_interval=30,
        )
        api = kube or await new_api_client()
        app.state.services = Services(settings, redis, api)
        try:
            yield
        finally:
            await app.state.services.feed.close()
            await redis.aclose()
            if kube is None:
                await api.close()

    app = FastAPI(
        title="dagwright",
        version=VERSION,
        description="Run DAGs of ML-training jobs on Kubernetes: executions, queue, workers, health.",
        lifespan=lifespan,
        # Served from the package below, not a CDN: it works in an air-gapped cluster.
        docs_url=None,
        redoc_url=None,
    )
    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="dagwright API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )

    for routes in (executions, queue, pools, workers, attempts, live, health):
        app.include_router(routes.router)
    errors.install(app)
    console.install(app)

    limiter = RateLimiter(settings.rate_per_second, settings.rate_burst)

    # Innermost first: each one added wraps the ones before.
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)

    @app.middleware("http")
    async def authenticate_first(request: Request, call_next: Any) -> Any:
        # FastAPI reads a body before it resolves dependencies: a caller who
        # is not who they say must not get to send one.
        if request.method in ("POST", "PUT", "PATCH") and request.url.path != health.PATH:
            auth = request.app.state.services.auth
            header = request.headers.get("authorization", "")
            try:
                if request.url.path.startswith(attempts.PATH + "/"):
                    if (request.method, request.url.path) in attempts.WITH_BODY:
                        request.state.pod = await auth.pod(header)  # a job pod's own token
                    # (anything else there is a 404 or 405, told without a token)
                else:
                    request.state.caller = await auth.authenticate(header)
            except AuthError as exc:
                return errors.auth_problem(exc)
        return await call_next(request)

    @app.middleware("http")
    async def limit_rate(request: Request, call_next: Any) -> Any:
        if request.url.path not in (health.PATH, metrics.PATH):
            wait = limiter.take(client_key(request))
            if wait > 0:
                response = errors.problem(
                    429, "too many requests", {"retryAfterSeconds": round(wait, 2)}
                )
                response.headers["Retry-After"] = str(max(1, round(wait)))
                return response
        return await call_next(request)

    metrics.install(app)  # outermost: it times everything, refusals included
    return app
