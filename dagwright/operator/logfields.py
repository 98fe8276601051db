"""What a log line is about, as fields of the JSON log (not only in its
message): set once per execution runner and per pod create, read by the
formatter. Context variables: each asyncio task carries its own."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

EXECUTION: ContextVar[tuple[str, str] | None] = ContextVar("execution", default=None)
ATTEMPT: ContextVar[tuple[str, int] | None] = ContextVar("attempt", default=None)


def fields() -> dict[str, Any]:
    """``namespace``, ``execution``, ``job`` and ``attempt``, where known."""
    found: dict[str, Any] = {}
    execution = EXECUTION.get()
    if execution is not None:
        found["namespace"], found["execution"] = execution
    attempt = ATTEMPT.get()
    if attempt is not None:
        found["job"], found["attempt"] = attempt
    return found
