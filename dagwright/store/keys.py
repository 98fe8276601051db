"""Every Redis key and channel dagwright uses, one function each, and the
payloads of what job attempts report (through the REST API: job pods hold no
Redis credentials). Nothing else spells a key.

Per execution, keyed by the DAGExecution's UID (a deleted and re-created
execution of the same name never sees old state):

- ``dw:x:{uid}:jobs``         HASH job name -> JobState JSON
- ``dw:x:{uid}:lease``        owner instance id, with a TTL
- ``dw:x:{uid}:epoch``        fencing token, incremented on every change of owner
- ``dw:x:{uid}:ckpt:{job}``   the job's latest checkpoint (any attempt)
- ``dw:x:{uid}:hb:{job}``     the runtime's sign of life for the current attempt
- ``dw:x:{uid}:log:{job}:{n}`` the tail of failed attempt n's log (its pod may go)
- ``dw:x:{uid}:att:{job}``    LIST the records of the job's ended attempts (the last 20)
- ``dw:ev:{uid}``             CHANNEL the jobs each pass changed (the web console's live view)

Per WorkerPool (see ``slots.py``):

- ``dw:q:{pool}``      ZSET jobs waiting for a slot, best first
- ``dw:qseen:{pool}``  HASH member -> last time its owner asked
- ``dw:held:{pool}``   HASH member -> "<expiry ms>|<node>" of a held slot
- ``dw:hexp:{pool}``   ZSET member -> expiry ms of its held slot
- ``dw:used:{pool}``   HASH node -> held slots on it

Per namespace: ``dw:cache:{namespace}:{key}`` the outputs of a cached
job's succeeded run, found by its cache key (``core.inputs.cache_key``),
expiring after its ``maxAge``.

Cluster-wide: ``dw:operator:{instance}`` (an operator's heartbeat),
``dw:worker:{id}`` (a worker registered over REST), ``dw:queue:paused`` (the
pause switch); channels ``dw:queue`` (paused/resumed) and ``dw:slots-freed``
(a pool whose slots were released).
"""

from __future__ import annotations

import json
import time
from typing import Any

CHECKPOINT_TTL_SECONDS = 7 * 24 * 3600

_EXECUTION = "dw:x:"
_OPERATOR = "dw:operator:"
_WORKER = "dw:worker:"

PAUSED = "dw:queue:paused"
QUEUE_CHANNEL = "dw:queue"
FREED_CHANNEL = "dw:slots-freed"


# --- per execution -----------------------------------------------------------------


def jobs(uid: str) -> str:
    return f"{_EXECUTION}{uid}:jobs"


def lease(uid: str) -> str:
    return f"{_EXECUTION}{uid}:lease"


def epoch(uid: str) -> str:
    return f"{_EXECUTION}{uid}:epoch"


def checkpoint(uid: str, job: str) -> str:
    """The latest checkpoint of a job, whatever attempt wrote it."""
    return f"{_EXECUTION}{uid}:ckpt:{job}"


def log(uid: str, job: str, attempt: int) -> str:
    """The tail of a failed attempt's log, kept beyond its pod."""
    return f"{_EXECUTION}{uid}:log:{job}:{attempt}"


def attempts(uid: str, job: str) -> str:
    """The records of a job's ended attempts."""
    return f"{_EXECUTION}{uid}:att:{job}"


def all_attempts(uid: str) -> str:
    """A SCAN pattern matching every job's attempt records."""
    return attempts(uid, "*")


def logs(uid: str) -> str:
    """A SCAN pattern matching every kept log of the execution."""
    return f"{_EXECUTION}{uid}:log:*"


def checkpoints(uid: str) -> str:
    """A SCAN pattern matching every checkpoint of the execution."""
    return checkpoint(uid, "*")


def heartbeat(uid: str, job: str) -> str:
    """The runtime's sign of life for the job's current attempt (expires)."""
    return f"{_EXECUTION}{uid}:hb:{job}"


# --- per pool ----------------------------------------------------------------------


def events(uid: str) -> str:
    return f"dw:ev:{uid}"


def cache(namespace: str, key: str) -> str:
    return f"dw:cache:{namespace}:{key}"


def queue(pool: str) -> str:
    return f"dw:q:{pool}"


def pool_slots(pool: str) -> list[str]:
    """The keys the slot scripts take, in their KEYS order: queue, seen,
    held, expiries, used."""
    return [queue(pool), *(f"dw:{kind}:{pool}" for kind in ("qseen", "held", "hexp", "used"))]


# --- cluster-wide ------------------------------------------------------------------


def operator(instance: str) -> str:
    return f"{_OPERATOR}{instance}"


OPERATORS = operator("*")  # SCAN pattern


def worker(worker_id: str) -> str:
    return f"{_WORKER}{worker_id}"


WORKERS = worker("*")  # SCAN pattern


# --- shared payloads ---------------------------------------------------------------


def checkpoint_payload(path: str, step: int | None, attempt: int) -> str:
    return json.dumps({"path": path, "step": step, "attempt": attempt, "at": time.time()})


def heartbeat_payload(attempt: int, **details: Any) -> str:
    return json.dumps({"attempt": attempt, "at": time.time(), **details})
