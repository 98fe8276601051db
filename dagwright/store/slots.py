"""Job slots of WorkerPools, shared by every execution and operator instance.

Per pool:
- ``dw:q:{pool}``      ZSET: jobs waiting for a slot, best first
                       (score: higher priority first, then first come);
- ``dw:qseen:{pool}``  HASH: member -> last time its owner asked (stale ones
                       are dropped, so a dead execution never blocks a queue);
- ``dw:held:{pool}``   HASH: member -> expiry (ms) of a held slot; owners
                       renew the slots of running jobs and release finished ones.

A member is ``{execution uid}/{job}``. Admission is one Lua script: a job
gets a slot only if a slot is free *and* fewer jobs are ahead of it in the
queue than slots are free, so across executions the highest priority starts
first, whichever instance asks first.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import redis.asyncio as aioredis

FREED_CHANNEL = "dw:slots-freed"

# KEYS: queue, seen, held. ARGV: member, score, capacity, now_ms, hold_ms, stale_ms
_ADMIT = """
local member, score = ARGV[1], tonumber(ARGV[2])
local capacity, now = tonumber(ARGV[3]), tonumber(ARGV[4])
local hold, stale = tonumber(ARGV[5]), tonumber(ARGV[6])
if redis.call('HEXISTS', KEYS[3], member) == 1 then
  redis.call('HSET', KEYS[3], member, now + hold)
  return 1
end
local held = redis.call('HGETALL', KEYS[3])
local used = 0
for i = 1, #held, 2 do
  if tonumber(held[i + 1]) < now then
    redis.call('HDEL', KEYS[3], held[i])
  else
    used = used + 1
  end
end
redis.call('ZADD', KEYS[1], 'NX', score, member)
redis.call('HSET', KEYS[2], member, now)
local free = capacity - used
if free <= 0 then
  return 0
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
  redis.call('HSET', KEYS[3], member, now + hold)
  return 1
end
return 0
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

    async def admit(self, pool: str, who: str, priority: int, since: float, capacity: int) -> bool:
        now_ms = int(time.time() * 1000)
        granted = await self._admit(
            keys=_keys(pool),
            args=[who, score(priority, since), capacity, now_ms, self.hold_ms, self.stale_ms],
        )
        return bool(granted)

    async def withdraw(self, pool: str, who: str) -> None:
        """Leave a queue (admitted elsewhere, or no longer ready)."""
        queue, seen, _ = _keys(pool)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(queue, who)
            pipe.hdel(seen, who)
            await pipe.execute()

    async def renew(self, held: Iterable[tuple[str, str]]) -> None:
        """Extend the slots of (pool, member) pairs still running."""
        expiry = int(time.time() * 1000) + self.hold_ms
        async with self.redis.pipeline(transaction=False) as pipe:
            for pool, who in held:
                pipe.hset(_keys(pool)[2], who, expiry)
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

    async def used(self, pool: str) -> int:
        now_ms = int(time.time() * 1000)
        held = await self.redis.hgetall(_keys(pool)[2])
        return sum(1 for expiry in held.values() if int(expiry) >= now_ms)

    async def queued(self, pool: str) -> int:
        return int(await self.redis.zcard(_keys(pool)[0]))
