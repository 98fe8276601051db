"""One mapping from what goes wrong to the HTTP answer a caller gets, every
answer shaped as ``ProblemBody``: ``{"error": sentence, "detail": ...}``."""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kubernetes_asyncio.client.exceptions import ApiException
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from dagwright.errors import AuthError, Forbidden, InvalidDag
from dagwright.kube.client import error_message

log = logging.getLogger(__name__)


class Problem(Exception):
    """An answer a route decides on: status, sentence, details."""

    def __init__(self, status_code: int, message: str, detail: Any = None):
        super().__init__(message)
        self.status_code, self.message, self.detail = status_code, message, detail


def problem(code: int, message: str, detail: Any = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(status_code=code, content=body)


def auth_problem(exc: AuthError) -> JSONResponse:
    return problem(403 if isinstance(exc, Forbidden) else 401, exc.message)


def kube_problem(exc: ApiException) -> JSONResponse:
    """The Kubernetes API's answer, translated for the caller: what the caller
    got wrong stays a 4xx with the API server's own message."""
    message = error_message(exc)
    if exc.status == 413 or any(
        words in message.lower()
        for words in ("request is too large", "larger than max", "entity too large")
    ):
        return problem(
            413, "the execution is too large for the Kubernetes API to store (about 1.5 MB)"
        )
    if exc.status in (401, 403):
        return problem(502, "the API's own Kubernetes identity was refused", message)
    if exc.status in (400, 404, 409, 422):
        return problem(exc.status, message)
    return problem(503, "kubernetes API unavailable", f"{exc.status} {message}")


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods the OpenAPI document names for ``path`` (a literal path,
    such as /workers/register, before a template it also fits)."""
    paths = app.openapi().get("paths", {})
    if path in paths:
        return sorted(method.upper() for method in paths[path])
    found: set[str] = set()
    for template, operations in paths.items():
        pattern = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            found.update(method.upper() for method in operations)
    return sorted(found)


def install(app: FastAPI) -> None:
    """Register the handlers that turn each kind of error into its answer."""

    @app.exception_handler(Problem)
    async def on_problem(_: Request, exc: Problem) -> JSONResponse:
        return problem(exc.status_code, exc.message, exc.detail)

    @app.exception_handler(AuthError)
    async def on_auth(_: Request, exc: AuthError) -> JSONResponse:
        return auth_problem(exc)

    @app.exception_handler(InvalidDag)
    async def on_invalid_dag(_: Request, exc: InvalidDag) -> JSONResponse:
        # Cycles and unknown dependencies: a 422 now, not a Failed object later.
        return problem(422, "invalid DAG", exc.problems)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Unparseable bodies, unknown paths, wrong methods: the same error shape.
        response = problem(exc.status_code, str(exc.detail))
        response.headers.update(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names only the first route of the path; a path served
            # by several (GET and DELETE of one execution) allows them all.
            allowed = allowed_methods(app, request.url.path)
            if allowed:
                response.headers["Allow"] = ", ".join(allowed)
        return response

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"]} for e in exc.errors()
        ]
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            return problem(400, "malformed JSON", errors)
        return problem(422, "invalid request", errors)

    @app.exception_handler(RedisError)
    async def on_redis(_: Request, exc: RedisError) -> JSONResponse:
        # Where Redis is (host, port) is the operator's business, not the caller's.
        log.warning("redis: %s", exc)
        return problem(503, "redis unavailable")

    @app.exception_handler(ApiException)
    async def on_kube(_: Request, exc: ApiException) -> JSONResponse:
        return kube_problem(exc)

    @app.exception_handler(Exception)
    async def on_anything(_: Request, exc: Exception) -> JSONResponse:
        return problem(500, "internal error", type(exc).__name__)
