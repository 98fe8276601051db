"""What routes depend on: the process's clients (``Services``), the caller
(authenticated once per request) and the checked path and query parameters."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Annotated, Generic, TypeVar

import redis.asyncio as aioredis
from fastapi import APIRouter, Depends, Path, Query, Request
from kubernetes_asyncio import client

from dagwright.api.auth import Attempt, Authenticator, Caller
from dagwright.api.feed import ExecutionFeed
from dagwright.api.models import problems
from dagwright.api.settings import PREFIX, ApiSettings
from dagwright.core.spec import DNS_LABEL
from dagwright.names import GROUP
from dagwright.store.redis_store import Store

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True)
class GraphShape:
    """An execution's jobs and dependencies: fixed for a generation of its spec."""

    names: list[str]
    deps: list[list[int]]
    sweeps: dict[str, list[int]]
    finally_jobs: list[int]


class Recent(Generic[K, V]):
    """The last ``size`` entries put (a small LRU)."""

    def __init__(self, size: int):
        self.size = size
        self.entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        found = self.entries.get(key)
        if found is not None:
            self.entries.move_to_end(key)
        return found

    def put(self, key: K, value: V) -> None:
        self.entries[key] = value
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)


class Services:
    """The clients one API process shares across requests."""

    def __init__(self, settings: ApiSettings, redis: aioredis.Redis, kube: client.ApiClient):
        self.settings = settings
        self.redis = redis
        self.store = Store(redis)
        self.kube = kube
        self.objects = client.CustomObjectsApi(kube)
        self.core = client.CoreV1Api(kube)
        self.auth = Authenticator(kube, settings.token)
        # Job pod UID -> the attempt it runs (routes/attempts.py).
        self.attempts: dict[str, Attempt] = {}
        self.feed = ExecutionFeed(self.objects)  # the console's live views (routes/live.py)
        # Executions' graphs by (uid, generation): a 10,000-job spec is parsed
        # and checked once, not on every page load.
        self.graphs: Recent[tuple[str, int | None], GraphShape] = Recent(16)

    def namespace(self, asked: str | None) -> str:
        """The namespace a request means: the one it names, else the API's."""
        return asked or self.settings.namespace

    async def allow(
        self,
        caller: Caller,
        verb: str,
        resource: str,
        namespace: str = "",
        group: str = GROUP,
        subresource: str = "",
    ) -> None:
        """Return if RBAC lets ``caller`` do it; AuthError (403) if not."""
        await self.auth.authorize(caller, verb, resource, namespace, group, subresource)


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


async def authenticated(request: Request) -> Caller:
    caller: Caller | None = getattr(request.state, "caller", None)
    if caller is not None:  # authenticated before its body was read (see app.py)
        return caller
    svc: Services = request.app.state.services
    return await svc.auth.authenticate(request.headers.get("authorization", ""))


Svc = Annotated[Services, Depends(services)]
Who = Annotated[Caller, Depends(authenticated)]
# Names are checked here so a malformed one is a 422, never a question to the API server.
ExecutionId = Annotated[
    str, Path(pattern=DNS_LABEL, max_length=63, description="Name of the DAGExecution.")
]
WorkerId = Annotated[str, Path(pattern=DNS_LABEL, max_length=63)]
Namespace = Annotated[
    str | None,
    Query(pattern=DNS_LABEL, max_length=63, description="Defaults to the API's namespace."),
]


def guarded_router(prefix: str, tag: str) -> APIRouter:
    """A router for routes that need a caller; every one of them may answer
    with these errors (routes add their own, such as 404 and 409)."""
    return APIRouter(
        prefix=PREFIX + prefix,
        tags=[tag],
        responses=problems(400, 401, 403, 413, 422, 429, 502, 503),
    )
