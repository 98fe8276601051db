"""Prometheus metrics of the API process, served at ``/metrics`` (outside
the documented API: no token, no rate limit, like a kubelet's)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

REQUESTS = Counter(
    "dagwright_api_requests_total",
    "REST requests answered, by method, route template and status code",
    ["method", "route", "code"],
)
LATENCY = Histogram(
    "dagwright_api_request_duration_seconds",
    "Time to answer a REST request (to its first byte, for streamed logs)",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PATH = "/metrics"


def install(app: FastAPI) -> None:
    @app.get(PATH, include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.middleware("http")
    async def measure(request: Request, call_next: Any) -> Any:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        # The route's template, never the path: execution names are unbounded.
        template = getattr(route, "path", None) or "unmatched"
        if template != PATH:
            REQUESTS.labels(request.method, template, str(response.status_code)).inc()
            LATENCY.labels(request.method, template).observe(time.perf_counter() - started)
        return response
