"""Server-sent events for the web console (``text/event-stream``):

- ``execution``: an execution of the namespace changed (its summary);
- ``jobs``: with ``execution=``, the jobs one of its passes changed,
  ``{name: [phase, attempt]}``;
- ``resync``: events were missed: fetch the state again.

A comment line every 15 s keeps proxies from closing a quiet stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Query, Request
from fastapi.responses import StreamingResponse

from dagwright.api.deps import Namespace, Svc, Who, guarded_router
from dagwright.api.models import problems
from dagwright.api.routes.executions import _get
from dagwright.core.spec import DNS_LABEL
from dagwright.names import EXECUTIONS
from dagwright.store import keys

router = guarded_router("/live", "live")
KEEPALIVE_SECONDS = 15.0


@router.get(
    "",
    response_class=StreamingResponse,
    responses={**problems(404), 200: {"content": {"text/event-stream": {}}}},
)
async def live(
    request: Request,
    svc: Svc,
    caller: Who,
    namespace: Namespace = None,
    execution: Annotated[str | None, Query(pattern=DNS_LABEL, max_length=63)] = None,
) -> StreamingResponse:
    ns = svc.namespace(namespace)
    await svc.allow(caller, "list", EXECUTIONS, ns)
    await svc.allow(caller, "watch", EXECUTIONS, ns)
    uid = (await _get(svc, execution, ns))["metadata"]["uid"] if execution else None
    subscriber = svc.feed.subscribe(ns)

    async def relay_jobs() -> None:
        assert uid is not None
        pubsub = svc.redis.pubsub()
        try:
            await pubsub.subscribe(keys.events(uid))
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    subscriber.send(("jobs", json.loads(message["data"])))
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def stream() -> AsyncIterator[str]:
        relay = asyncio.create_task(relay_jobs()) if uid else None
        try:
            yield ": connected\n\n"
            while not await request.is_disconnected():
                if subscriber.lagged:
                    subscriber.lagged = False
                    while not subscriber.queue.empty():
                        subscriber.queue.get_nowait()
                    yield "event: resync\ndata: {}\n\n"
                try:
                    name, data = await asyncio.wait_for(subscriber.queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                yield f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
        finally:
            svc.feed.unsubscribe(ns, subscriber)
            if relay is not None:
                relay.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await relay

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
