"""The ownership lease on a real Redis, without a cluster: one term at a time,
every new term above every earlier one, fencing of the old holder, a higher
epoch on the object honoured, and hand-off only above a fair share.

The object's owner-epoch annotation is kept by ``RecordedObject`` with the
contract of ``Kube.claim_execution`` (tested against the API server in
``tests/e2e/test_trust.py`` and ``test_faults.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, cast

import kopf
import pytest
import redis.asyncio as aioredis

from dagwright.core.ownership import preferred_owner
from dagwright.errors import FencedOut
from dagwright.kube.objects import Kube, parse_epoch
from dagwright.names import OWNER_ANNOTATION, OWNER_EPOCH_ANNOTATION
from dagwright.operator.cluster import ClusterView
from dagwright.operator.context import Context
from dagwright.operator.informer import PodInformer
from dagwright.operator.lease import Lease
from dagwright.operator.pods import Owner
from dagwright.settings import OperatorSettings
from dagwright.store import keys
from dagwright.store.redis_store import Store
from dagwright.store.slots import Slots

LEASE = 1.0  # seconds: the shortest the settings allow is above 0.5
OWNER = Owner(name="train", namespace="default", uid="0b9c7f6e-uid")


class RecordedObject:
    """The DAGExecution's metadata as the watch shows it, and the claim of an
    owner epoch on it: recorded unless a higher one is there (returned)."""

    def __init__(self) -> None:
        self.raw: dict[str, Any] = {"metadata": {"annotations": {}, "resourceVersion": "1"}}
        self.body = kopf.Body(cast(kopf.RawBody, self.raw))
        self.claims = 0

    @property
    def annotations(self) -> dict[str, str]:
        found: dict[str, str] = self.raw["metadata"]["annotations"]
        return found

    async def claim_execution(
        self,
        namespace: str,
        name: str,
        instance: str,
        epoch: int,
        watched: Callable[[], Mapping[str, Any] | None] = lambda: None,
    ) -> int | None:
        self.claims += 1
        recorded = parse_epoch(self.annotations.get(OWNER_EPOCH_ANNOTATION))
        if recorded is not None and recorded > epoch:
            return recorded
        self.annotations.update({OWNER_EPOCH_ANNOTATION: str(epoch), OWNER_ANNOTATION: instance})
        return None


def instance(redis: aioredis.Redis, name: str, obj: RecordedObject) -> tuple[Context, Lease]:
    settings = OperatorSettings(instance_id=name, lease_seconds=LEASE)
    ctx = Context(
        settings=settings,
        kube=cast(Kube, obj),
        store=Store(redis),
        slots=Slots(redis, hold_seconds=60, stale_seconds=60),
        view=ClusterView({}),
        pods=cast(PodInformer, None),  # the lease never looks at pods
    )
    return ctx, Lease(ctx, OWNER, obj.body)


async def test_one_term_at_a_time_and_the_next_one_fences_the_last(
    redis: aioredis.Redis,
) -> None:
    obj = RecordedObject()
    a_ctx, a = instance(redis, "a", obj)
    b_ctx, b = instance(redis, "b", obj)
    assert await a.own()
    first = a.epoch
    assert first is not None
    assert a.valid()
    assert OWNER.uid in a_ctx.owned
    assert obj.annotations[OWNER_EPOCH_ANNOTATION] == str(first)
    # b knows of no peer, so it thinks itself preferred and asks at once: refused.
    assert not await b.own()
    assert b.epoch is None
    assert OWNER.uid not in b_ctx.owned
    assert b.idle_wait(renew_every=10.0) <= LEASE + 0.05

    await asyncio.sleep(LEASE + 0.1)  # a stalls past its lease
    assert a.lost()
    assert await b.own()
    second = b.epoch
    assert second is not None
    assert second > first
    assert obj.annotations == {OWNER_EPOCH_ANNOTATION: str(second), OWNER_ANNOTATION: "b"}
    # a wakes up: the object names a newer term, and its writes are refused.
    assert a.fenced_by_object()
    with pytest.raises(FencedOut):
        await a_ctx.store.save(OWNER.uid, first, {})
    await b_ctx.store.save(OWNER.uid, second, {})
    assert not await a.own()  # b renewed nothing yet, but its lease is live
    assert a.epoch is None
    assert OWNER.uid not in a_ctx.owned


async def test_a_higher_epoch_on_the_object_starts_a_term_above_it(
    redis: aioredis.Redis,
) -> None:
    """Redis lost its data (or someone edited the annotation): the new term
    must still fence whoever wrote the higher epoch."""
    obj = RecordedObject()
    edited = 10**13  # above any epoch Redis issues (at least the time in ms)
    obj.annotations[OWNER_EPOCH_ANNOTATION] = str(edited)
    _, lease = instance(redis, "a", obj)
    assert await lease.own()
    assert lease.epoch is not None
    assert lease.epoch > edited
    assert obj.annotations[OWNER_EPOCH_ANNOTATION] == str(lease.epoch)
    assert not lease.fenced_by_object()


async def test_garbage_in_the_annotation_is_overwritten_not_believed(
    redis: aioredis.Redis,
) -> None:
    obj = RecordedObject()
    obj.annotations[OWNER_EPOCH_ANNOTATION] = "9" * 40
    _, lease = instance(redis, "a", obj)
    assert await lease.own()
    assert lease.epoch is not None
    assert obj.annotations[OWNER_EPOCH_ANNOTATION] == str(lease.epoch)


async def test_a_renewal_inside_a_third_of_the_lease_asks_nothing(redis: aioredis.Redis) -> None:
    obj = RecordedObject()
    ctx, lease = instance(redis, "a", obj)
    assert await lease.own()
    epoch, deadline = lease.epoch, lease.deadline
    await redis.delete(keys.lease(OWNER.uid))  # would be re-taken by a real renewal
    assert await lease.own()
    assert (lease.epoch, lease.deadline) == (epoch, deadline)
    assert await ctx.store.lease_holder(OWNER.uid) == (None, 0.0)


async def test_hand_off_only_above_a_fair_share_and_to_an_instance_under_it(
    redis: aioredis.Redis,
) -> None:
    obj = RecordedObject()
    ctx, lease = instance(redis, "a", obj)
    assert await lease.own()
    ctx.peers = {"a": 0, "b": 0}  # heartbeats from before its claim: it holds 1 of 1
    assert not await lease.hand_off()
    ctx.peers = {"a": 1, "b": 1}  # an even split: nothing to give
    assert not await lease.hand_off()
    assert lease.epoch is not None
    ctx.owned |= {"other-1", "other-2"}
    ctx.peers = {"a": 3, "b": 3}  # above nobody's share
    assert not await lease.hand_off()
    ctx.peers = {"a": 3, "b": 0}
    assert not await lease.hand_off()  # claimed less than a lease ago: kept for now
    lease.claimed_at -= LEASE
    assert await lease.hand_off()
    assert lease.epoch is None
    assert OWNER.uid not in ctx.owned
    assert ctx.peers["a"] == 2
    holder, _ = await ctx.store.lease_holder(OWNER.uid)
    assert holder is None  # released at once: "b" is the claimant and takes it


def test_a_burst_of_new_executions_spreads_evenly_whatever_the_hash_prefers() -> None:
    """Two instances, executions arriving one after another: each goes to the
    instance the hash prefers among those not above an even share."""
    settings = OperatorSettings(instance_id="a", lease_seconds=LEASE)
    ctx = Context(
        settings=settings,
        kube=cast(Kube, None),
        store=cast(Store, None),
        slots=cast(Slots, None),
        view=ClusterView({}),
        pods=cast(PodInformer, None),
    )
    # Executions the hash gives to "a" when both are free: all of them.
    uids = [u for u in (f"uid-{i}" for i in range(200)) if _prefers("a", "b", u)][:6]
    owners: list[str] = []
    for uid in uids:
        ctx.peers["b"] = owners.count("b")
        claimant = ctx.claimant(uid)
        assert claimant is not None
        owners.append(claimant)
        if claimant == "a":
            ctx.owned.add(uid)
    assert owners.count("a") == owners.count("b") == 3
    assert owners[0] == "a"  # the hash decides while both have room


def _prefers(first: str, second: str, uid: str = OWNER.uid) -> bool:
    return preferred_owner(uid, {first, second}) == first
