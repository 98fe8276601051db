"""Job slots of WorkerPools, shared by every execution and operator instance.

Per pool:
- ``dw:q:{pool}``      ZSET: jobs waiting for a slot, best first
                       (score: higher priority first, then first come);
- ``dw:qseen:{pool}``  HASH: member -> last time its owner asked (stale ones
                       are dropped, so a dead execution never blocks a queue);
- ``dw:held:{pool}``   HASH: member -> "<expiry ms>|<node>" of a held slot;
                       owners renew the slots of running jobs and release
                       finished ones.

A member is ``{execution uid}/{job}``. Admission is one Lua script: a job
gets a slot only if a slot is free *and* fewer jobs are ahead of it in the
queue than slots are free, so across executions the highest priority starts
first, whichever instance asks first. The slot is on the least loaded node
with a free one, so per-node ``maxConcurrency`` holds across instances too.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import cast

import redis.asyncio as aioredis

FREED_CHANNEL = "dw:slots-freed"

# KEYS: queue, seen, held. ARGV: member, score, now_ms, hold_ms, stale_ms,
# then (node, slots) pairs: the pool's schedulable nodes.
# Held values are "<expiry ms>|<node>". Returns the granted node, or false.
_ADMIT = """
local member, score = ARGV[1], tonumber(ARGV[2])
local now, hold, stale = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
-- Asked again for a slot it holds (a retry after a crash): the same slot, if
-- its node is still offered; a slot on a node now lost or avoided is dropped.
local mine = redis.call('HGET', KEYS[3], member)
if mine then
  local node = string.match(mine, '|(.*)$')
  for i = 6, #ARGV, 2 do
    if ARGV[i] == node then
      redis.call('HSET', KEYS[3], member, (now + hold) .. '|' .. node)
      return node
    end
  end
  redis.call('HDEL', KEYS[3], member)
end
local used = {}
local held = redis.call('HGETALL', KEYS[3])
for i = 1, #held, 2 do
  local expiry, node = string.match(held[i + 1], '^(%d+)|(.*)$')
  if expiry == nil or tonumber(expiry) < now then
    redis.call('HDEL', KEYS[3], held[i])
  else
    used[node] = (used[node] or 0) + 1
  end
end
local free, best, best_load = 0, nil, nil
for i = 6, #ARGV, 2 do
  local node, slots = ARGV[i], tonumber(ARGV[i + 1])
  local n = used[node] or 0
  if n < slots then
    free = free + slots - n
    if best_load == nil or n / slots < best_load then
      best, best_load = node, n / slots
    end
  end
end
redis.call('ZADD', KEYS[1], 'NX', score, member)
redis.call('HSET', KEYS[2], member, now)
if free <= 0 then
  return false
end
-- Drop waiters whose owner stopped asking, among those that could be ahead.
local head = redis.call('ZRANGE', KEYS[1], 0, free + 32)
for _, m in ipairs(head) do
  local seen = tonumber(redis.call('HGET', KEYS[2], m) or '0')
  if seen < now - stale then
    redis.call('ZREM', KEYS[1], m)
    redis.call('HDEL', KEYS[2], m)
  end
end
local rank = redis.call('ZRANK', KEYS[1], member)
if rank and rank < free then
  redis.call('ZREM', KEYS[1], member)
  redis.call('HDEL', KEYS[2], member)
  redis.call('HSET', KEYS[3], member, (now + hold) .. '|' .. best)
  return best
end
return false
"""


def _keys(pool: str) -> list[str]:
    return [f"dw:q:{pool}", f"dw:qseen:{pool}", f"dw:held:{pool}"]


def member(uid: str, job: str) -> str:
    return f"{uid}/{job}"


def score(priority: int, since: float) -> float:
    """Lower is better: priority 10 before 1, then earlier before later."""
    return (10 - priority) * 1e13 + since * 1000


class Slots:
    def __init__(self, redis: aioredis.Redis, hold_seconds: float, stale_seconds: float):
        self.redis = redis
        self.hold_ms = int(hold_seconds * 1000)
        self.stale_ms = int(stale_seconds * 1000)
        self._admit = redis.register_script(_ADMIT)

    async def admit(
        self, pool: str, who: str, priority: int, since: float, nodes: Sequence[tuple[str, int]]
    ) -> str | None:
        """A slot on the least loaded of ``nodes`` (name, slots), or None."""
        now_ms = int(time.time() * 1000)
        args: list[str | int | float] = [
            who,
            score(priority, since),
            now_ms,
            self.hold_ms,
            self.stale_ms,
        ]
        for node, slots in nodes:
            args += [node, slots]
        granted = await self._admit(keys=_keys(pool), args=args)
        return str(granted) if granted else None

    async def withdraw(self, pool: str, who: str) -> None:
        """Leave a queue (admitted elsewhere, or no longer ready)."""
        queue, seen, _ = _keys(pool)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(queue, who)
            pipe.hdel(seen, who)
            await pipe.execute()

    async def renew(self, held: Iterable[tuple[str, str, str]]) -> None:
        """Extend the slots of (pool, member, node) triples still running."""
        expiry = int(time.time() * 1000) + self.hold_ms
        async with self.redis.pipeline(transaction=False) as pipe:
            for pool, who, node in held:
                pipe.hset(_keys(pool)[2], who, f"{expiry}|{node}")
            await pipe.execute()

    async def release(self, held: Iterable[tuple[str, str]]) -> None:
        pools = set()
        async with self.redis.pipeline(transaction=False) as pipe:
            for pool, who in held:
                pipe.hdel(_keys(pool)[2], who)
                pools.add(pool)
            for pool in pools:
                pipe.publish(FREED_CHANNEL, pool)
            await pipe.execute()

    async def used(self, pool: str) -> dict[str, int]:
        """Held slots per node."""
        now_ms = int(time.time() * 1000)
        per_node: dict[str, int] = {}
        held = cast(dict[str, str], await self.redis.hgetall(_keys(pool)[2]))  # decode_responses
        for value in held.values():
            expiry, _, node = value.partition("|")
            if int(expiry) >= now_ms:
                per_node[node] = per_node.get(node, 0) + 1
        return per_node

    async def queued(self, pool: str) -> int:
        return int(await self.redis.zcard(_keys(pool)[0]))
