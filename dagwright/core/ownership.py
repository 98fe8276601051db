"""Which live operator instance should own an execution.

Rendezvous (highest-random-weight) hashing: every instance computes the same
answer from the same list, executions spread evenly, and when an instance
leaves only its own executions move (each to the instance that ranks next for
it). It decides who *tries first*; the fenced lease decides who owns."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def _weight(key: str, instance: str) -> int:
    digest = hashlib.blake2b(f"{instance}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def preferred_owner(key: str, instances: Iterable[str]) -> str | None:
    """The instance that ranks first for ``key``; None if there are none."""
    best: tuple[int, str] | None = None
    for instance in instances:
        candidate = (_weight(key, instance), instance)
        if best is None or candidate > best:
            best = candidate
    return best[1] if best else None
