"""One execution's ownership by this instance: a lease in Redis whose every
new term raises an epoch (the fencing token), recorded on the object too.

The runner asks ``own()`` before each pass and ``valid()`` before each side
effect; it reads ``epoch`` for its fenced writes. Which instance claims an
execution first is rendezvous-hashed over the live instances that are not
above an even share; the others wait until the lease has stayed free for
two thirds of a lease.
"""

from __future__ import annotations

import logging
import time

import kopf

from dagwright.errors import FencedOut
from dagwright.kube.objects import parse_epoch
from dagwright.names import OWNER_EPOCH_ANNOTATION
from dagwright.operator import metrics
from dagwright.operator.context import Context
from dagwright.operator.pods import Owner

log = logging.getLogger(__name__)


class Lease:
    def __init__(self, ctx: Context, owner: Owner, body: kopf.Body):
        self.ctx, self.owner, self.body = ctx, owner, body
        self.epoch: int | None = None  # the term we hold, None when we hold none
        self.deadline = 0.0  # monotonic: our term ends (renewal moves it)
        self.free_at = 0.0  # monotonic: when another owner's lease could lapse
        self.free_since: float | None = None  # monotonic: first seen unowned (non-preferred)
        self.claimed_at = 0.0  # monotonic: when our current term began

    async def own(self) -> bool:
        """Take or renew the lease; False if another instance holds it (or
        is preferred and may still take it)."""
        s = self.ctx.settings
        uid = self.owner.uid
        if self.epoch is None and not await self._may_claim():
            return False
        requested = time.monotonic()
        if self.epoch is not None and requested < self.deadline - 2 * s.lease_seconds / 3:
            # Renewed less than a third of a lease ago: passes come far more
            # often than that, and a Redis script per pass per execution was
            # a twentieth of the operator's CPU with 500 small DAGs. Writes
            # stay fenced by the epoch whether or not we renew now.
            return True
        epoch, left = await self.ctx.store.try_acquire(uid, s.instance_id, s.lease_seconds)
        if epoch is None:
            self.drop()
            self.free_at = requested + left
            return False
        if epoch != self.epoch:
            # New term: record it on the object (resourceVersion precondition),
            # so an instance that believes in an older epoch sees it is fenced.
            higher = await self._claim(epoch)
            if higher is not None:
                # The object records a higher epoch than Redis issued: Redis
                # lost its data and the clock went back, or someone edited the
                # annotation. A term above it fences every earlier holder
                # either way (and the claim overwrites the annotation).
                epoch, _ = await self.ctx.store.try_acquire(
                    uid, s.instance_id, s.lease_seconds, least=higher + 1
                )
                if epoch is None or await self._claim(epoch) is not None:
                    await self.ctx.store.release(uid, s.instance_id)
                    raise FencedOut(f"the object records an owner epoch above {epoch}")
            log.info("owning %s/%s (epoch %d)", self.owner.namespace, self.owner.name, epoch)
            self.claimed_at = requested
        self.ctx.owned.add(uid)
        self.epoch = epoch
        self.free_since = None
        # Counted from before the request: a slow round trip shortens our term, never lengthens it.
        self.deadline = requested + s.lease_seconds
        return True

    def drop(self) -> None:
        """We hold no term (lost, fenced out or handed over)."""
        self.epoch = None
        self.ctx.owned.discard(self.owner.uid)

    async def release(self) -> None:
        """Give the lease up (the execution finished or is handed over)."""
        await self.ctx.store.release(self.owner.uid, self.ctx.settings.instance_id)

    async def _claim(self, epoch: int) -> int | None:
        return await self.ctx.kube.claim_execution(
            self.owner.namespace,
            self.owner.name,
            self.ctx.settings.instance_id,
            epoch,
            lambda: self.body.get("metadata"),
        )

    async def hand_off(self) -> bool:
        """Rebalance after instances join: give an execution up, between two
        passes, when we own more than our share and another live instance
        would claim it. That one takes it at once (or, if its view of the
        heartbeats differs, within two thirds of a lease)."""
        s = self.ctx.settings
        if self.epoch is None or not self.ctx.over_fair_share():
            return False
        if time.monotonic() - self.claimed_at < s.lease_seconds:
            # Held for a lease first: views of the heartbeats lag, and an
            # execution handed on at once can go round the instances.
            return False
        preferred = self.ctx.claimant(self.owner.uid, releasing=True)
        if preferred in (None, s.instance_id):
            return False
        log.info(
            "handing %s/%s over to %s (rebalancing)",
            self.owner.namespace,
            self.owner.name,
            preferred,
        )
        metrics.HANDOFFS.inc()
        # Before any await: other runners deciding meanwhile see the new count.
        self.drop()
        self.ctx.peers[s.instance_id] = len(self.ctx.owned)
        await self.release()
        return True

    async def _may_claim(self) -> bool:
        """Whether to try for an execution we do not own. The claimant (see
        ``Context.claimant``) tries at once; others only once the lease has
        stayed free for two thirds of a lease (the claimant is gone or stuck),
        so executions spread evenly and never stay orphaned."""
        s = self.ctx.settings
        if self.ctx.claimant(self.owner.uid) == s.instance_id:
            return True
        holder, left = await self.ctx.store.lease_holder(self.owner.uid)
        now = time.monotonic()
        if holder is not None:
            self.free_since = None
            self.free_at = now + left
            return False
        if self.free_since is None:
            self.free_since = now
            return False
        # Long enough for the claimant's view of the heartbeats to catch up
        # with a claim it has not seen yet (instances heartbeat every sixth
        # of a lease at most), so a burst is not won by whoever races first.
        return now - self.free_since >= 2 * s.lease_seconds / 3

    def idle_wait(self, renew_every: float) -> float:
        """How long a non-owner sleeps: until the owner's lease could lapse
        (the takeover then happens within the lease), at most a renew period."""
        until_free = self.free_at - time.monotonic()
        return min(renew_every, max(until_free, 0.0) + 0.05)

    def fenced_by_object(self) -> bool:
        """The object (live from the watch) names a newer owner epoch than ours."""
        annotations = (self.body.get("metadata") or {}).get("annotations") or {}
        recorded = parse_epoch(annotations.get(OWNER_EPOCH_ANNOTATION))
        return self.epoch is not None and recorded is not None and recorded > self.epoch

    def valid(self) -> bool:
        # Keep a margin so no side effect lands after another instance could take over.
        return time.monotonic() < self.deadline - min(2.0, self.ctx.settings.lease_seconds / 10)

    def lost(self) -> bool:
        return not self.valid()
