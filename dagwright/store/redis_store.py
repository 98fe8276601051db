"""Execution state, leases and fencing in Redis (the keys: ``keys.py``).

Ownership: ``acquire`` takes or renews the lease and returns the epoch the
caller holds. Every state write passes that epoch; the Lua script refuses the
write when the epoch moved on (another instance took over), so an instance
that was paused or partitioned past its lease cannot write after waking.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, cast

import redis.asyncio as aioredis

from dagwright.core.admission import score
from dagwright.core.state import JobState
from dagwright.errors import FencedOut
from dagwright.store import keys

# KEYS: lease, epoch. ARGV: instance id, ttl ms, least epoch of a new term.
# Returns the epoch held by this instance, or -(ttl left) when another owns it.
_ACQUIRE = """
local least = tonumber(ARGV[3])
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  local held = redis.call('GET', KEYS[2])
  if held and tonumber(held) >= least then
    return tonumber(held)
  end
  -- The epoch was lost under a surviving lease, or a higher one was issued
  -- (the object records it): start a new term.
elseif owner then
  return -math.max(redis.call('PTTL', KEYS[1]), 1)
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
-- Every epoch is at least the current time in ms, so epochs keep rising even
-- if Redis lost the key or the last increments (flush, failover, AOF everysec
-- losing its last second): a lost epoch never comes back into force.
local now = redis.call('TIME')
local floor = math.max(tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000), least)
local epoch = redis.call('INCR', KEYS[2])
if epoch < floor then
  redis.call('SET', KEYS[2], string.format('%d', floor))
  epoch = floor
end
return epoch
"""

# KEYS: epoch, jobs. ARGV: epoch, then field/value pairs.
_SAVE = """
if tonumber(redis.call('GET', KEYS[1]) or '0') ~= tonumber(ARGV[1]) then
  return 0
end
if #ARGV > 1 then
  redis.call('HSET', KEYS[2], unpack(ARGV, 2))
end
return 1
"""

# KEYS: jobs, the key to set. ARGV: job, attempt, value, ttl ms. Sets the key
# only if the job's state names that attempt as its latest: 1, else 0.
_FENCED_SET = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local attempt = cjson.decode(raw)['attempt']
if tonumber(attempt or 0) ~= tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
return 1
"""

# KEYS: lease. ARGV: instance id.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: epoch, jobs, lease. ARGV: epoch, ttl seconds.
_EXPIRE = """
if tonumber(redis.call('GET', KEYS[1]) or '0') ~= tonumber(ARGV[1]) then
  return 0
end
for i = 1, 3 do
  if tonumber(ARGV[2]) > 0 then
    redis.call('EXPIRE', KEYS[i], ARGV[2])
  else
    redis.call('PERSIST', KEYS[i])
  end
end
return 1
"""

# Ended attempts recorded per job (the newest).
MAX_ATTEMPT_RECORDS = 20

# Redis unpack() has a C-stack limit; write large DAGs in slices.
_SAVE_BATCH = 2000


class Store:
    def __init__(self, redis: aioredis.Redis):
        self.redis = redis
        self._acquire = redis.register_script(_ACQUIRE)
        self._save = redis.register_script(_SAVE)
        self._release = redis.register_script(_RELEASE)
        self._expire = redis.register_script(_EXPIRE)
        self._fenced_set = redis.register_script(_FENCED_SET)

    async def acquire(self, uid: str, instance: str, ttl_seconds: float) -> int | None:
        """Take or renew the lease; the epoch held, or None if another owns it."""
        return (await self.try_acquire(uid, instance, ttl_seconds))[0]

    async def try_acquire(
        self, uid: str, instance: str, ttl_seconds: float, least: int = 0
    ) -> tuple[int | None, float]:
        """(epoch held, 0) or (None, seconds until the other owner's lease
        lapses). ``least``: the held epoch must be at least this, or a new
        term above it begins."""
        result = int(
            await self._acquire(
                keys=[keys.lease(uid), keys.epoch(uid)],
                args=[instance, int(ttl_seconds * 1000), least],
            )
        )
        return (result, 0.0) if result > 0 else (None, -result / 1000)

    async def lease_holder(self, uid: str) -> tuple[str | None, float]:
        """Who holds the lease (None: nobody) and for how many more seconds."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(keys.lease(uid))
            pipe.pttl(keys.lease(uid))
            holder, pttl = await pipe.execute()
        return (str(holder) if holder else None), max(int(pttl), 0) / 1000

    async def live_instances(self) -> dict[str, int]:
        """Live operator instances and how many executions each owns."""
        return {
            str(o["instance"]): int(str(o.get("owned", 0)))
            for o in await self.operators()
            if o.get("instance")
        }

    async def release(self, uid: str, instance: str) -> None:
        await self._release(keys=[keys.lease(uid)], args=[instance])

    async def load(self, uid: str) -> dict[str, JobState]:
        raw = cast(
            Mapping[str, str], await self.redis.hgetall(keys.jobs(uid))
        )  # decode_responses=True
        return {name: JobState.from_json(json.loads(value)) for name, value in raw.items()}

    async def save(self, uid: str, epoch: int, states: Mapping[str, JobState]) -> None:
        """Write job states if ``epoch`` is still current; FencedOut otherwise."""
        items = list(states.items())
        for start in range(0, max(len(items), 1), _SAVE_BATCH):
            args: list[str | int] = [epoch]
            for name, state in items[start : start + _SAVE_BATCH]:
                args += [name, json.dumps(state.to_json(), separators=(",", ":"))]
            if not await self._save(keys=[keys.epoch(uid), keys.jobs(uid)], args=args):
                raise FencedOut(f"epoch {epoch} of execution {uid} is stale")

    async def expire(self, uid: str, epoch: int, ttl_seconds: int) -> None:
        """A finished execution's state expires after ``ttl_seconds``; 0:
        never again (it runs again: retried)."""
        fenced = [keys.epoch(uid), keys.jobs(uid), keys.lease(uid)]
        if not await self._expire(keys=fenced, args=[epoch, ttl_seconds]):
            raise FencedOut(f"epoch {epoch} of execution {uid} is stale")

    async def delete(self, uid: str) -> None:
        kept = [
            k
            for pattern in (keys.checkpoints(uid), keys.logs(uid), keys.all_attempts(uid))
            async for k in self.redis.scan_iter(match=pattern, count=500)
        ]
        await self.redis.delete(keys.jobs(uid), keys.lease(uid), keys.epoch(uid), *kept)

    async def record_attempts(
        self, uid: str, records: list[tuple[str, dict[str, Any]]], ttl_seconds: int
    ) -> None:
        """Append each ended attempt's record to its job's (the last
        MAX_ATTEMPT_RECORDS kept), in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for job, entry in records:
                key = keys.attempts(uid, job)
                pipe.rpush(key, json.dumps(entry))
                pipe.ltrim(key, -MAX_ATTEMPT_RECORDS, -1)
                pipe.expire(key, ttl_seconds)
            await pipe.execute()

    async def attempt_records(self, uid: str, jobs: list[str]) -> dict[str, list[dict[str, Any]]]:
        if not jobs:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for job in jobs:
                pipe.lrange(keys.attempts(uid, job), 0, -1)
            lists = await pipe.execute()
        return {
            job: [json.loads(v) for v in values] for job, values in zip(jobs, lists, strict=True)
        }

    async def publish_jobs(self, uid: str, changed: Mapping[str, JobState]) -> None:
        """Tell whoever listens (the API's live views) which jobs changed:
        name -> [phase, attempt]. Nobody listening costs Redis nothing."""
        payload = {name: [state.phase.value, state.attempt] for name, state in changed.items()}
        await self.redis.publish(keys.events(uid), json.dumps(payload, separators=(",", ":")))

    async def cached(self, namespace: str, cache_keys: list[str]) -> list[dict[str, Any] | None]:
        """The entries of cached jobs' runs, by key (None: none), in one round trip."""
        if not cache_keys:
            return []
        found = await self.redis.mget([keys.cache(namespace, k) for k in cache_keys])
        return [json.loads(raw) if raw else None for raw in found]

    async def cache(self, namespace: str, entries: list[tuple[str, dict[str, Any], int]]) -> None:
        """Record succeeded runs of cached jobs: (key, entry, seconds to keep it)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, entry, ttl in entries:
                pipe.set(keys.cache(namespace, key), json.dumps(entry), ex=max(int(ttl), 1))
            await pipe.execute()

    async def keep_log(self, uid: str, job: str, attempt: int, text: str, ttl_seconds: int) -> None:
        """Keep a failed attempt's log tail (its pod may be collected)."""
        await self.redis.set(keys.log(uid, job, attempt), text, ex=ttl_seconds)

    async def kept_log(self, uid: str, job: str, attempt: int) -> str | None:
        value = await self.redis.get(keys.log(uid, job, attempt))
        return str(value) if value is not None else None

    async def heartbeat(self, instance: str, owned: int, ttl_seconds: float) -> None:
        payload = json.dumps({"instance": instance, "owned": owned, "at": time.time()})
        await self.redis.set(keys.operator(instance), payload, px=int(ttl_seconds * 1000))

    async def operators(self) -> list[dict[str, object]]:
        """Live operator instances (their heartbeats have not expired)."""
        found = [k async for k in self.redis.scan_iter(match=keys.OPERATORS, count=100)]
        values = await self.redis.mget(found) if found else []
        return [json.loads(v) for v in values if v]

    async def save_checkpoint(
        self, uid: str, job: str, attempt: int, path: str, step: int | None = None
    ) -> bool:
        """What a job attempt reports: the latest checkpoint of the job. Kept
        only while ``attempt`` is the job's current one (False otherwise): a
        superseded attempt, still running on a partitioned node, must not
        replace what its successor resumes from."""
        # Kept as long as a finished execution's state (7 days by default).
        payload = keys.checkpoint_payload(path, step, attempt)
        ttl_ms = keys.CHECKPOINT_TTL_SECONDS * 1000
        return await self._report(uid, job, attempt, keys.checkpoint(uid, job), payload, ttl_ms)

    async def _report(
        self, uid: str, job: str, attempt: int, key: str, payload: str, ttl_ms: int
    ) -> bool:
        fenced = [keys.jobs(uid), key]
        return bool(await self._fenced_set(keys=fenced, args=[job, attempt, payload, ttl_ms]))

    async def checkpoints(self, uid: str, jobs: list[str]) -> dict[str, dict[str, Any]]:
        """The latest checkpoint of each of ``jobs`` that has one (one MGET)."""
        if not jobs:
            return {}
        values = await self.redis.mget([keys.checkpoint(uid, job) for job in jobs])
        return {job: json.loads(v) for job, v in zip(jobs, values, strict=True) if v}

    async def job_heartbeat(
        self, uid: str, job: str, attempt: int, ttl_seconds: float, **details: Any
    ) -> bool:
        """What the job runtime sends every interval while the job runs; False
        (and not recorded) if ``attempt`` is no longer the job's current one."""
        payload = keys.heartbeat_payload(attempt, **details)
        ttl_ms = int(ttl_seconds * 1000)
        return await self._report(uid, job, attempt, keys.heartbeat(uid, job), payload, ttl_ms)

    async def job_heartbeats(self, uid: str, jobs: list[str]) -> dict[str, dict[str, Any]]:
        """The latest heartbeat of each of ``jobs`` that has one."""
        if not jobs:
            return {}
        values = await self.redis.mget([keys.heartbeat(uid, job) for job in jobs])
        return {job: json.loads(v) for job, v in zip(jobs, values, strict=True) if v}

    # --- the cluster-wide queue switch --------------------------------------

    async def set_paused(self, paused: bool) -> None:
        """Pause: no new job starts anywhere (running jobs finish)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            if paused:
                pipe.set(keys.PAUSED, "1")
            else:
                pipe.delete(keys.PAUSED)
            pipe.publish(keys.QUEUE_CHANNEL, "paused" if paused else "resumed")
            await pipe.execute()

    async def paused(self) -> bool:
        return bool(await self.redis.exists(keys.PAUSED))

    async def queued_by_priority(self, pools: list[str]) -> dict[str, dict[int, int]]:
        """Jobs waiting in each pool's queue, by priority (10 counts a pool,
        one round trip): a queue's score starts with 10 - priority."""
        if not pools:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for pool in pools:
                for priority in range(10, 0, -1):
                    low = score(priority, 0)
                    pipe.zcount(keys.queue(pool), low, f"({score(priority - 1, 0)}")
            counts = await pipe.execute()
        found: dict[str, dict[int, int]] = {}
        for i, pool in enumerate(pools):
            row = counts[i * 10 : (i + 1) * 10]
            found[pool] = {p: n for p, n in zip(range(10, 0, -1), row, strict=True) if n}
        return found

    async def queued(self, pools: list[str]) -> dict[str, int]:
        """How many jobs wait for a slot in each of ``pools`` (one round trip)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for pool in pools:
                pipe.zcard(keys.queue(pool))
            counts = await pipe.execute()
        return {pool: int(n) for pool, n in zip(pools, counts, strict=True)}

    # --- workers registered over REST ---------------------------------------

    async def register_worker(
        self, worker_id: str, data: dict[str, Any], ttl_seconds: float
    ) -> None:
        data = {**data, "lastHeartbeat": time.time(), "currentLoad": 0}
        await self.redis.set(keys.worker(worker_id), json.dumps(data), px=int(ttl_seconds * 1000))

    async def worker_heartbeat(self, worker_id: str, load: int, ttl_seconds: float) -> bool:
        """Record a heartbeat; False if not registered (or lapsed). The
        registration then lives twice its own timeout, else ``ttl_seconds``."""
        key = keys.worker(worker_id)
        raw = await self.redis.get(key)
        if raw is None:
            return False
        data = {**json.loads(raw), "lastHeartbeat": time.time(), "currentLoad": load}
        if data.get("timeoutSeconds"):
            ttl_seconds = 2 * float(data["timeoutSeconds"])
        await self.redis.set(key, json.dumps(data), px=int(ttl_seconds * 1000))
        return True

    async def drain_worker(self, worker_id: str) -> bool:
        """Mark a registered worker draining (no new jobs on its node; running
        ones finish) until its registration expires; False if unknown."""
        key = keys.worker(worker_id)
        raw = await self.redis.get(key)
        if raw is None:
            return False
        await self.redis.set(key, json.dumps({**json.loads(raw), "draining": True}), keepttl=True)
        return True

    async def workers(self) -> list[dict[str, Any]]:
        found = [k async for k in self.redis.scan_iter(match=keys.WORKERS, count=500)]
        values = await self.redis.mget(found) if found else []
        return [json.loads(v) for v in values if v]
