"""Job slots of WorkerPools, shared by every execution and operator instance.

Per pool (``keys.pool_slots``):
- the queue, a ZSET of jobs waiting for a slot, best first (score: higher
  priority first, then first come);
- ``seen``: member -> last time its owner asked (stale ones are dropped, so a
  dead execution never blocks a queue);
- ``held``: member -> "<expiry ms>|<node>" of a held slot; owners renew the
  slots of running jobs and release finished ones;
- ``expiries``: member -> expiry ms of its held slot, so lapsed slots are
  found without reading every held one;
- ``used``: node -> held slots on it.

A member is ``{execution uid}/{job}``. Every change to a held slot is a Lua
script that keeps the three held structures in step, so admission costs
O(nodes), not O(held slots): reading every held slot per admission made a
10,000-job fan-out spend minutes of Redis CPU.

A job gets a slot only if a slot is free *and* fewer jobs are ahead of it in
the queue than slots are free, so across executions the highest priority
starts first, whichever instance asks first. The slot is on the least loaded
node with a free one, so per-node ``maxConcurrency`` holds across instances too.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import cast

import redis.asyncio as aioredis

from dagwright.core.admission import member, score
from dagwright.store import keys

# Shared by the scripts. KEYS[3..5]: held, expiries, used counts.
_HELD = """
local function drop(member)
  local value = redis.call('HGET', KEYS[3], member)
  if not value then return nil end
  local node = string.match(value, '|(.*)$')
  redis.call('HDEL', KEYS[3], member)
  redis.call('ZREM', KEYS[4], member)
  redis.call('HINCRBY', KEYS[5], node, -1)
  return node
end
local function hold(member, node, expiry)
  local value = redis.call('HGET', KEYS[3], member)
  if value and string.match(value, '|(.*)$') ~= node then
    drop(member)
    value = nil
  end
  if not value then
    redis.call('HINCRBY', KEYS[5], node, 1)
  end
  redis.call('HSET', KEYS[3], member, expiry .. '|' .. node)
  redis.call('ZADD', KEYS[4], expiry, member)
end
local function reclaim(now)
  -- Counts kept before they existed (an upgrade): rebuild them once.
  if redis.call('EXISTS', KEYS[5]) == 0 and redis.call('HLEN', KEYS[3]) > 0 then
    local held = redis.call('HGETALL', KEYS[3])
    for i = 1, #held, 2 do
      local expiry, node = string.match(held[i + 1], '^(%d+)|(.*)$')
      redis.call('ZADD', KEYS[4], expiry, held[i])
      redis.call('HINCRBY', KEYS[5], node, 1)
    end
  end
  -- Slots whose owner stopped renewing them (it died with them).
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', '(' .. now)) do
    drop(member)
  end
end
"""

# KEYS: queue, seen, held, expiries, used. ARGV: member, score, now_ms,
# hold_ms, stale_ms, then (node, slots, reported load) triples: the pool's
# schedulable nodes.
# Returns the granted node, or false.
_ADMIT = (
    _HELD
    + """
local member, score = ARGV[1], tonumber(ARGV[2])
local now, hold_ms, stale = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
reclaim(now)
-- Asked again for a slot it holds (a retry after a crash): the same slot, if
-- its node is still offered; a slot on a node now lost or avoided is dropped.
local mine = redis.call('HGET', KEYS[3], member)
if mine then
  local node = string.match(mine, '|(.*)$')
  for i = 6, #ARGV, 3 do
    if ARGV[i] == node then
      hold(member, node, now + hold_ms)
      return node
    end
  end
  drop(member)
end
local free, best, best_load = 0, nil, nil
for i = 6, #ARGV, 3 do
  local node, slots = ARGV[i], tonumber(ARGV[i + 1])
  -- What the node's registered worker reports busy, if more than we hold there.
  local n = math.max(tonumber(redis.call('HGET', KEYS[5], node) or '0'), tonumber(ARGV[i + 2]))
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
  hold(member, best, now + hold_ms)
  return best
end
return false
"""
)

# KEYS: queue, seen, held, expiries, used. ARGV: expiry ms, then (member, node)
# pairs. Extends held slots; one that lapsed meanwhile is taken again (its job
# is still running there).
_RENEW = (
    _HELD
    + """
for i = 2, #ARGV, 2 do
  hold(ARGV[i], ARGV[i + 1], tonumber(ARGV[1]))
end
"""
)

# KEYS: queue, seen, held, expiries, used. ARGV: members.
_RELEASE = (
    _HELD
    + """
for _, member in ipairs(ARGV) do
  drop(member)
end
"""
)

# KEYS: queue, seen. ARGV: now ms, stale ms. Drops the waiters whose owner
# stopped asking (it died, or ended without withdrawing) and counts the rest.
_LIVE = """
local now, stale = tonumber(ARGV[1]), tonumber(ARGV[2])
local seen = redis.call('HGETALL', KEYS[2])
for i = 1, #seen, 2 do
  if tonumber(seen[i + 1]) < now - stale then
    redis.call('ZREM', KEYS[1], seen[i])
    redis.call('HDEL', KEYS[2], seen[i])
  end
end
return redis.call('ZCARD', KEYS[1])
"""

# KEYS: queue, seen, held, expiries, used. ARGV: now ms. Returns node, count pairs.
_USED = (
    _HELD
    + """
reclaim(tonumber(ARGV[1]))
return redis.call('HGETALL', KEYS[5])
"""
)


def _by_pool(entries: Iterable[tuple[str, ...]]) -> dict[str, list[str]]:
    """(pool, *fields) tuples -> pool: the fields of all its entries, flat."""
    grouped: dict[str, list[str]] = {}
    for pool, *fields in entries:
        grouped.setdefault(pool, []).extend(fields)
    return grouped


class Slots:
    def __init__(self, redis: aioredis.Redis, hold_seconds: float, stale_seconds: float):
        self.redis = redis
        self.hold_ms = int(hold_seconds * 1000)
        self.stale_ms = int(stale_seconds * 1000)
        self._admit = redis.register_script(_ADMIT)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self._used = redis.register_script(_USED)
        self._live = redis.register_script(_LIVE)

    async def admit(
        self,
        pool: str,
        who: str,
        priority: int,
        since: float,
        nodes: Sequence[tuple[str, int]],
        reported: Mapping[str, int] | None = None,
    ) -> str | None:
        """A slot on the least loaded of ``nodes`` (name, slots), or None.
        ``reported``: node -> the load its registered worker reports, which
        counts when it is more than the slots held there."""
        now_ms = int(time.time() * 1000)
        args: list[str | int | float] = [
            who,
            score(priority, since),
            now_ms,
            self.hold_ms,
            self.stale_ms,
        ]
        for node, slots in nodes:
            args += [node, slots, (reported or {}).get(node, 0)]
        granted = await self._admit(keys=keys.pool_slots(pool), args=args)
        return str(granted) if granted else None

    async def enqueue(self, waiting: Iterable[tuple[str, str, int, float]]) -> None:
        """Take or keep the queue places of (pool, member, priority, since)
        without asking for a slot: for jobs behind one just refused, which
        would be refused too (one pipeline instead of a script call each)."""
        now_ms = int(time.time() * 1000)
        places: dict[str, dict[str, float]] = {}
        for pool, who, priority, since in waiting:
            places.setdefault(pool, {})[who] = score(priority, since)
        if not places:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for pool, scores in places.items():
                queue, seen, *_ = keys.pool_slots(pool)
                pipe.zadd(queue, scores, nx=True)
                pipe.hset(seen, mapping=dict.fromkeys(scores, now_ms))
            await pipe.execute()

    async def withdraw(self, pool: str, who: str) -> None:
        """Leave a queue (admitted elsewhere, or no longer ready)."""
        await self.withdraw_all([(pool, who)])

    async def renew(self, held: Iterable[tuple[str, str, str]]) -> None:
        """Extend the slots of (pool, member, node) triples still running."""
        expiry = int(time.time() * 1000) + self.hold_ms
        for pool, pairs in _by_pool(held).items():
            await self._renew(keys=keys.pool_slots(pool), args=[expiry, *pairs])

    async def release(self, held: Iterable[tuple[str, str]]) -> None:
        """Free the slots of (pool, member) pairs and tell the waiting runners."""
        grouped = _by_pool(held)
        for pool, members in grouped.items():
            await self._release(keys=keys.pool_slots(pool), args=members)
        await self._announce(grouped)

    async def _announce(self, pools: Iterable[str]) -> None:
        """Tell every instance's waiting runners that slots were freed in ``pools``."""
        freed = list(pools)
        if not freed:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for pool in freed:
                pipe.publish(keys.FREED_CHANNEL, pool)
            await pipe.execute()

    async def used(self, pool: str) -> dict[str, int]:
        """Held slots per node (lapsed ones reclaimed first)."""
        flat = cast(
            list[str], await self._used(keys=keys.pool_slots(pool), args=[int(time.time() * 1000)])
        )
        counts = {flat[i]: int(flat[i + 1]) for i in range(0, len(flat), 2)}
        return {node: n for node, n in counts.items() if n > 0}

    async def queued(self, pool: str) -> int:
        """Jobs waiting in the pool's queue whose owners still ask (others are dropped)."""
        queue, seen, *_ = keys.pool_slots(pool)
        now_ms = int(time.time() * 1000)
        return int(await self._live(keys=[queue, seen], args=[now_ms, self.stale_ms]))

    async def held_by(self, uid: str, pools: Iterable[str]) -> dict[str, tuple[str, str]]:
        """The slots an execution holds: job -> (pool, node). A new owner
        adopts them, so it renews or releases what the last one held."""
        prefix = member(uid, "")
        found: dict[str, tuple[str, str]] = {}
        for pool in pools:
            held = keys.pool_slots(pool)[2]
            async for who, value in self.redis.hscan_iter(held, match=prefix + "*", count=500):
                found[who[len(prefix) :]] = (pool, value.partition("|")[2])
        return found

    async def forget(self, uid: str, pools: Iterable[str]) -> None:
        """Release every slot and queue place of an execution that ended or
        was deleted, and tell the waiting runners."""
        prefix = member(uid, "") + "*"
        freed: list[str] = []
        for pool in pools:
            queue, seen, held, *_ = keys.pool_slots(pool)
            holding = [who async for who, _ in self.redis.hscan_iter(held, match=prefix)]
            waiting = [who async for who, _ in self.redis.zscan_iter(queue, match=prefix)]
            if holding:
                await self._release(keys=keys.pool_slots(pool), args=holding)
                freed.append(pool)
            if waiting:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.zrem(queue, *waiting)
                    pipe.hdel(seen, *waiting)
                    await pipe.execute()
        await self._announce(freed)

    async def withdraw_all(self, places: Iterable[tuple[str, str]]) -> None:
        """Leave the queues of (pool, member) pairs: jobs that stopped waiting."""
        by_pool = _by_pool(places)
        if not by_pool:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for pool, members in by_pool.items():
                queue, seen, *_ = keys.pool_slots(pool)
                pipe.zrem(queue, *members)
                pipe.hdel(seen, *members)
            await pipe.execute()
