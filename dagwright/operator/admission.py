"""One execution's slots in the pools: asking the queues for them (in the
order ``core.admission`` decides), holding, renewing and releasing them."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import kopf

from dagwright.core.admission import member, plan_admission, unschedulable_message
from dagwright.core.graph import Dag
from dagwright.core.placement import Pool
from dagwright.core.reconcile import Plan
from dagwright.core.state import JobPhase, JobState, PodObservation, Slot
from dagwright.operator.context import Context


class Admitter:
    def __init__(self, ctx: Context, uid: str, body: kopf.Body):
        self.ctx, self.uid, self.body = ctx, uid, body
        self.admitted: dict[str, Slot] = {}  # granted a slot, pod not yet created
        self.holding: dict[str, Slot] = {}  # job -> the slot it holds
        # Wanted jobs -> the pools whose queues hold their place.
        self.queued: dict[str, set[str]] = {}
        self.requeue_at = 0.0  # monotonic: when every wanted job asks again
        self.renew_at = 0.0  # monotonic: when every held slot is renewed
        self.unschedulable = ""  # why wanted jobs cannot get a slot, if no pool can take them

    async def admit(self, dag: Dag, plan: Plan, pools: list[Pool]) -> bool:
        """Ask the pools' queues for slots for the wanted jobs; True if any
        granted. Jobs no pool can take now are named in ``unschedulable``."""
        view = self.ctx.view
        # Once per pass, not per wanted job: both scan every node.
        members = {p.name: view.members(p) for p in pools}
        loads = {p.name: view.load(p) for p in pools}
        reported = view.reported()
        admission = plan_admission(
            self.uid,
            dag,
            plan.wants,
            plan.jobs,
            pools,
            members,
            loads,
            time.time(),
            self.ctx.settings.job_policy,
        )
        # A refusal holds for the rest of the pass: we ask in the queue's own
        # order, so once a job of ours is refused in a pool, ours after it are
        # too. Asking each anyway was a Lua call per waiting job per pass
        # (thousands on a wide fan-out). Those behind a refusal only take
        # their place in the queue (one pipeline), and keep it fresh once per
        # renew period.
        refresh = time.monotonic() >= self.requeue_at
        if refresh:
            self.requeue_at = time.monotonic() + self.ctx.settings.lease_seconds / 3
        refused: set[str] = set()
        granted = False
        behind: list[tuple[str, str, int, float]] = []  # (pool, member, priority, since)
        for request in admission.requests:
            name, who = request.job, request.member
            places = self.queued.setdefault(name, set())
            for i, pool in enumerate(request.pools):
                if pool.name in refused:
                    if refresh or pool.name not in places:
                        behind.append((pool.name, who, request.priority, request.since))
                        places.add(pool.name)
                    continue
                nodes = [
                    (n, view.slots(pool, n)) for n in members[pool.name] if n not in request.avoid
                ]
                node = await self.ctx.slots.admit(
                    pool.name, who, request.priority, request.since, nodes, reported
                )
                if node is not None:
                    self.admitted[name] = Slot(pool.name, node)
                    granted = True
                    del self.queued[name]
                    await self.ctx.slots.withdraw_all(
                        (other.name, who) for other in request.pools[:i]
                    )
                    break
                places.add(pool.name)  # the queue keeps its place
                if not request.avoid:  # a job avoiding nodes may be refused for that alone
                    refused.add(pool.name)
        await self.ctx.slots.enqueue(behind)
        self._report(unschedulable_message(admission.blocked))
        return granted

    def settled(self) -> None:
        """No job wants a slot any more."""
        self.unschedulable = ""

    async def withdraw_unwanted(self, wants: Iterable[str]) -> None:
        """Take the queue places of jobs that no longer wait for a slot
        (cancelled, skipped, suspended), so nobody counts them as queued."""
        wanted = set(wants)
        gone = [
            (p, member(self.uid, j)) for j, ps in self.queued.items() if j not in wanted for p in ps
        ]
        if gone:
            self.queued = {j: ps for j, ps in self.queued.items() if j in wanted}
            await self.ctx.slots.withdraw_all(gone)

    async def adopt(self, pools: Iterable[str]) -> None:
        """A new term: what this execution holds in the pools is ours now,
        whoever asked for it. The next ``account`` renews the slots of jobs
        still running and releases the others (jobs that ended while no one
        owned the execution), at once rather than when they lapse. Slots
        granted in an earlier term but not yet used are void."""
        held = await self.ctx.slots.held_by(self.uid, pools)
        self.holding = {job: Slot(pool, node or None) for job, (pool, node) in held.items()}
        self.admitted = {}
        self.renew_at = 0.0

    async def forget(self, pools: Iterable[str]) -> None:
        """The execution ended (or its spec is invalid): every slot and queue
        place it has goes, including any an earlier owner left."""
        self.holding, self.admitted, self.queued = {}, {}, {}
        await self.ctx.slots.forget(self.uid, pools)

    def _report(self, message: str) -> None:
        if message and message != self.unschedulable:
            kopf.event(self.body, type="Warning", reason="Unschedulable", message=message)
        self.unschedulable = message

    async def release_unused(self, jobs: Mapping[str, JobState], suspend: bool) -> None:
        """Give back slots granted to jobs that no longer start (or are held)."""
        unused = [n for n in self.admitted if jobs[n].phase is not JobPhase.READY or suspend]
        if unused:
            await self.ctx.slots.release(
                (self.admitted.pop(n).pool, member(self.uid, n)) for n in unused
            )

    async def account(
        self,
        states: Mapping[str, JobState],
        pods: Mapping[tuple[str, int], PodObservation],
    ) -> None:
        """Renew the slots of jobs still running, release the others."""
        holding: dict[str, Slot] = {}
        for name, state in states.items():
            if state.pool is None or not state.attempt:
                continue
            pod = pods.get((name, state.attempt))
            if state.phase in (JobPhase.STARTING, JobPhase.RUNNING) or (
                pod is not None and pod.alive
            ):
                holding[name] = Slot(state.pool, state.node or (pod.node if pod else None))
        uid = self.uid
        released = [
            (s.pool, member(uid, n)) for n, s in self.holding.items() if holding.get(n) != s
        ]
        if released:
            await self.ctx.slots.release(released)
        # Renewing every held slot on every pass was O(jobs) Redis writes per
        # pass; slots are held for several leases, so a few renewals per lease do.
        now = time.monotonic()
        renew: Iterable[tuple[str, Slot]]
        if now >= self.renew_at:
            renew = holding.items()
            self.renew_at = now + self.ctx.settings.lease_seconds / 3
        else:
            renew = [(n, s) for n, s in holding.items() if self.holding.get(n) != s]
        entries = [(s.pool, member(uid, n), s.node or "") for n, s in renew]
        if entries:
            await self.ctx.slots.renew(entries)
        self.holding = holding
