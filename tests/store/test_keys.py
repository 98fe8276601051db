"""The key layout is a contract with running systems: an operator upgraded
while executions run must find the state, leases and slots the old one
wrote, and worker images of either version must report to the same keys."""

from __future__ import annotations

import redis.asyncio as aioredis

from dagwright.core.state import JobPhase, JobState
from dagwright.store import keys
from dagwright.store.redis_store import Store
from dagwright.store.slots import Slots


def test_the_layout_is_what_earlier_versions_wrote() -> None:
    uid = "5f1d"
    assert [keys.jobs(uid), keys.lease(uid), keys.epoch(uid)] == [
        "dw:x:5f1d:jobs",
        "dw:x:5f1d:lease",
        "dw:x:5f1d:epoch",
    ]
    assert keys.checkpoint(uid, "train") == "dw:x:5f1d:ckpt:train"
    assert keys.heartbeat(uid, "train") == "dw:x:5f1d:hb:train"
    assert keys.pool_slots("gpu") == [
        "dw:q:gpu",
        "dw:qseen:gpu",
        "dw:held:gpu",
        "dw:hexp:gpu",
        "dw:used:gpu",
    ]
    assert (keys.operator("op-1"), keys.worker("w-1")) == ("dw:operator:op-1", "dw:worker:w-1")
    assert (keys.PAUSED, keys.QUEUE_CHANNEL, keys.FREED_CHANNEL) == (
        "dw:queue:paused",
        "dw:queue",
        "dw:slots-freed",
    )


async def test_deleting_an_execution_leaves_its_namesakes_and_other_pools_alone(
    redis: aioredis.Redis,
) -> None:
    store = Store(redis)
    for uid in ("old", "older"):
        epoch = await store.acquire(uid, "a", ttl_seconds=30)
        assert epoch is not None
        await store.save(uid, epoch, {"train": JobState(phase=JobPhase.RUNNING, attempt=1)})
        assert await store.save_checkpoint(uid, "train", 1, "/ckpt/1", 1)
    await store.delete("old")
    assert await redis.keys("dw:x:old:*") == []
    assert sorted(await redis.keys("dw:x:older:*")) == [
        "dw:x:older:ckpt:train",
        "dw:x:older:epoch",
        "dw:x:older:jobs",
        "dw:x:older:lease",
    ]


async def test_queue_lengths_per_pool_in_one_round_trip(redis: aioredis.Redis) -> None:
    slots = Slots(redis, hold_seconds=60, stale_seconds=60)
    await slots.enqueue([("gpu", "e/a", 5, 0.0), ("gpu", "e/b", 9, 1.0), ("cpu", "e/c", 1, 0.0)])
    assert await Store(redis).queued(["gpu", "cpu", "empty"]) == {"gpu": 2, "cpu": 1, "empty": 0}


async def test_only_the_current_attempt_reports(redis: aioredis.Redis) -> None:
    """A superseded attempt (its node given up for lost, a newer one started)
    may still run somewhere: its checkpoints and heartbeats are refused."""
    store = Store(redis)
    epoch = await store.acquire("x", "a", ttl_seconds=30)
    assert epoch is not None
    assert not await store.save_checkpoint("x", "train", 1, "/ckpt/1", 1)  # no such job yet
    await store.save("x", epoch, {"train": JobState(phase=JobPhase.RUNNING, attempt=1)})
    assert await store.save_checkpoint("x", "train", 1, "/ckpt/1", 1)
    assert await store.job_heartbeat("x", "train", 1, ttl_seconds=5, progress={})
    await store.save("x", epoch, {"train": JobState(phase=JobPhase.STARTING, attempt=2)})
    assert not await store.save_checkpoint("x", "train", 1, "/ckpt/2", 2)
    assert not await store.job_heartbeat("x", "train", 1, ttl_seconds=5, progress={})
    assert (await store.checkpoints("x", ["train"]))["train"]["step"] == 1
    assert await store.save_checkpoint("x", "train", 2, "/ckpt/3", 3)
    assert (await store.checkpoints("x", ["train"]))["train"]["attempt"] == 2
