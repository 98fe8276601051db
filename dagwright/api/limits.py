"""What a caller may send: how often (token buckets per client) and how much
(a body size limit enforced as the body streams in)."""

from __future__ import annotations

import time

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dagwright.api.deps import Services
from dagwright.api.errors import problem


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


def client_key(request: Request) -> str:
    """Who a request counts against: its caller when its token is known good,
    else its address (the peer's, or the client a trusted proxy names), so
    that made-up tokens, each a TokenReview, cannot dodge the limit."""
    svc: Services | None = getattr(request.app.state, "services", None)
    who = svc.auth.known(request.headers.get("authorization", "")) if svc else None
    return who or "addr:" + (request.client.host if request.client else "?")


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
        refused = problem(413, f"request body over {self.limit} bytes")
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
