"""Pool slots on a real Redis: per-node capacity, queue order, lapsed slots,
and the per-node counts staying in step with the held slots."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import cast

import redis.asyncio as aioredis

from dagwright.store.slots import Slots

NODES = [("n1", 2), ("n2", 2)]


async def consistent(redis: aioredis.Redis, pool: str = "p") -> dict[str, int]:
    """Held slots per node, after checking the three held structures agree."""
    held = await redis.hgetall(f"dw:held:{pool}")
    expiries = cast(
        list[tuple[str, float]], await redis.zrange(f"dw:hexp:{pool}", 0, -1, withscores=True)
    )
    assert {m: int(v.partition("|")[0]) for m, v in held.items()} == {
        m: int(s) for m, s in expiries
    }
    per_node = Counter(v.partition("|")[2] for v in held.values())
    counts = {n: int(c) for n, c in (await redis.hgetall(f"dw:used:{pool}")).items()}
    assert {n: c for n, c in counts.items() if c} == dict(per_node)
    return dict(per_node)


async def test_capacity_per_node_holds_and_a_release_frees_a_slot(redis: aioredis.Redis) -> None:
    slots = Slots(redis, hold_seconds=60, stale_seconds=60)
    granted = [await slots.admit("p", f"e/j{i}", 5, float(i), NODES) for i in range(5)]
    assert sorted(g for g in granted if g) == ["n1", "n1", "n2", "n2"]
    assert granted[4] is None
    assert await slots.queued("p") == 1
    assert await consistent(redis) == {"n1": 2, "n2": 2}
    await slots.release([("p", "e/j0")])
    assert await slots.admit("p", "e/j4", 5, 4.0, NODES) == granted[0]
    assert await slots.queued("p") == 0
    assert await slots.used("p") == {"n1": 2, "n2": 2}


async def test_a_job_behind_better_ones_waits_even_with_a_free_slot(
    redis: aioredis.Redis,
) -> None:
    slots = Slots(redis, hold_seconds=60, stale_seconds=60)
    one = [("n1", 1)]
    # Another execution's priority-9 job took its place first (without asking).
    await slots.enqueue([("p", "other/urgent", 9, 100.0)])
    assert await slots.admit("p", "e/low", 5, 1.0, one) is None
    assert await slots.admit("p", "other/urgent", 9, 100.0, one) == "n1"
    await slots.release([("p", "other/urgent")])
    assert await slots.admit("p", "e/low", 5, 1.0, one) == "n1"


async def test_places_nobody_refreshes_go_stale(redis: aioredis.Redis) -> None:
    slots = Slots(redis, hold_seconds=60, stale_seconds=0.2)
    one = [("n1", 1)]
    await slots.enqueue([("p", "dead/job", 9, 1.0), ("p", "live/job", 9, 2.0)])
    await asyncio.sleep(0.3)
    await slots.enqueue([("p", "live/job", 9, 2.0)])  # its owner is still asking
    assert await slots.admit("p", "e/low", 1, 0.0, one) is None  # live/job is ahead
    assert await slots.admit("p", "live/job", 9, 2.0, one) == "n1"


async def test_lapsed_slots_are_reclaimed_and_renewal_takes_one_back(
    redis: aioredis.Redis,
) -> None:
    slots = Slots(redis, hold_seconds=0.2, stale_seconds=60)
    one = [("n1", 1)]
    assert await slots.admit("p", "dead/job", 5, 1.0, one) == "n1"
    assert await slots.admit("p", "e/job", 5, 2.0, one) is None
    await asyncio.sleep(0.3)  # dead/job's owner never renewed
    assert await slots.used("p") == {}
    assert await slots.admit("p", "e/job", 5, 2.0, one) == "n1"
    await slots.renew([("p", "e/job", "n1")])
    await asyncio.sleep(0.3)
    # Renewing a slot that lapsed (the owner was slow) takes it again.
    await slots.renew([("p", "e/job", "n1")])
    assert await consistent(redis) == {"n1": 1}


async def test_counts_follow_any_sequence_of_operations(redis: aioredis.Redis) -> None:
    slots = Slots(redis, hold_seconds=60, stale_seconds=60)
    nodes = [("n1", 3), ("n2", 2), ("n3", 1)]
    rng = random.Random(7)
    members = [f"e/j{i}" for i in range(12)]
    for _ in range(300):
        who = rng.choice(members)
        op = rng.random()
        if op < 0.45:
            offered = rng.sample(nodes, rng.randint(1, 3))  # nodes come and go
            await slots.admit("p", who, rng.randint(1, 10), rng.random(), offered)
        elif op < 0.75:
            await slots.release([("p", who)])
        else:
            await slots.renew([("p", who, rng.choice(nodes)[0])])
        await consistent(redis)
    # Admission alone never exceeds a node's slots (renewals re-take, by design).
    await redis.delete("dw:held:p", "dw:hexp:p", "dw:used:p", "dw:q:p", "dw:qseen:p")
    for who in members:
        await slots.admit("p", who, 5, 0.0, nodes)
    per_node = await consistent(redis)
    assert per_node == {"n1": 3, "n2": 2, "n3": 1}


async def test_held_slots_from_before_the_counts_are_counted(redis: aioredis.Redis) -> None:
    """An operator upgraded while slots are held: the counts are rebuilt."""
    far = 2**41
    await redis.hset("dw:held:p", mapping={"e/a": f"{far}|n1", "e/b": f"{far}|n1"})
    slots = Slots(redis, hold_seconds=60, stale_seconds=60)
    assert await slots.admit("p", "e/c", 5, 0.0, [("n1", 2)]) is None
    assert await slots.admit("p", "e/c", 5, 0.0, [("n1", 2), ("n2", 1)]) == "n2"
    assert await consistent(redis) == {"n1": 2, "n2": 1}
