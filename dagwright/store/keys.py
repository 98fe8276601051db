"""Redis keys and payloads shared by the operator (async client) and the job
runtime inside worker pods (sync client): one definition, two writers."""

from __future__ import annotations

import json
import time
from typing import Any

PREFIX = "dw:x:"
CHECKPOINT_TTL_SECONDS = 7 * 24 * 3600


def execution(uid: str) -> str:
    return f"{PREFIX}{uid}"


def checkpoint(uid: str, job: str) -> str:
    """The latest checkpoint of a job, whatever attempt wrote it."""
    return f"{PREFIX}{uid}:ckpt:{job}"


def heartbeat(uid: str, job: str) -> str:
    """The runtime's sign of life for the job's current attempt (expires)."""
    return f"{PREFIX}{uid}:hb:{job}"


def checkpoint_payload(path: str, step: int | None) -> str:
    return json.dumps({"path": path, "step": step, "at": time.time()})


def heartbeat_payload(attempt: int, **details: Any) -> str:
    return json.dumps({"attempt": attempt, "at": time.time(), **details})
