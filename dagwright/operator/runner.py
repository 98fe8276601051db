"""One execution's loop: own it, reconcile, act, persist, sleep until woken.

read (spec, Redis states, pods from the watch index) -> pure ``reconcile`` ->
persist the new states (fenced) -> apply actions idempotently -> patch the
status when its summary changed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import kopf
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError
from redis.exceptions import RedisError

from dagwright.core import attempts, inputs, record, sweeps
from dagwright.core.expr import ExprError
from dagwright.core.graph import Dag, build_dag
from dagwright.core.inputs import CacheHit
from dagwright.core.rebuild import rebuild
from dagwright.core.reconcile import (
    DeletePod,
    Plan,
    Snapshot,
    StartPod,
    collect_pods,
    reconcile,
    rerun,
    start_admitted,
)
from dagwright.core.spec import DAGExecutionSpec
from dagwright.core.state import ENDED_PHASES, JobState, PodObservation, PodPhase
from dagwright.errors import FencedOut, InvalidDag
from dagwright.operator import logfields, metrics
from dagwright.operator.admission import Admitter
from dagwright.operator.context import Context, failpoint
from dagwright.operator.effects import Effects
from dagwright.operator.informer import AttemptKey, ExecutionPods
from dagwright.operator.lease import Lease
from dagwright.operator.pods import Owner, parse_time
from dagwright.operator.publisher import Publisher

log = logging.getLogger(__name__)


# A job type's JobTemplate applied with the execution (one `kubectl apply -f`
# of a directory) may reach the template watch later: wait this long for it.
TEMPLATE_GRACE_SECONDS = 10.0

# Passes are spaced by a multiple of their compute time (settings), up to this.
MAX_PASS_SPACING = 0.5


class ExecutionRunner:
    def __init__(
        self,
        ctx: Context,
        body: kopf.Body,
        pods: Callable[[], ExecutionPods],
    ):
        self.ctx = ctx
        self.body = body
        self.pods = pods
        self.view = ctx.view
        meta = body["metadata"]
        self.owner = Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])
        self.key = (self.owner.namespace, self.owner.name)
        self.uid = self.owner.uid
        self.wakeup = ctx.wakeups[self.uid] = asyncio.Event()
        self.lease = Lease(ctx, self.owner, body)
        # The job states as of the last pass: a cache of what Redis holds,
        # good only within the term it was read in (``states_epoch``); see
        # ``_forget_states``, its one reset.
        self.states: dict[str, JobState] | None = None
        self.states_epoch: int | None = None
        self.generation: int | None = None
        self.dag: Dag | None = None
        self.spec: DAGExecutionSpec | None = None
        self.publisher = Publisher(ctx, body, self.lease, self.wakeup)
        self.slots = Admitter(ctx, self.uid, body)
        self.needs_pools = False
        self.effects = Effects(ctx, self.owner, body, self.lease, self.wakeup)
        # A pass reads every job (O(jobs) of CPU): the next one waits
        # settings.pass_spacing times as long as the last one computed, so a
        # big DAG's runner takes a bounded share of a core and handles the
        # events of that wait together.
        self.computed = 0.0  # seconds the last pass spent computing
        self.warned: set[str] = set()  # Warning events already sent (bad metadata)
        self.beats: dict[AttemptKey, float] = {}  # last heartbeat seen of running attempts
        # Cached jobs looked up: a hit, or None for a miss.
        self.cache: dict[str, CacheHit | None] = {}

    # --- ownership -------------------------------------------------------

    def _finished(self) -> bool:
        return ended(self.body)

    # --- main loop -------------------------------------------------------

    async def run(self, stopped: kopf.DaemonStopped) -> None:
        """Until the execution ends; then until kopf stops this daemon (its
        filter, ``ended``, no longer matches). Returning earlier would make
        kopf never start it again, and a retry needs it started again."""
        logfields.EXECUTION.set(self.key)  # this task's log lines are about it
        await self._run(stopped)
        if not stopped:
            await stopped.wait()

    async def _run(self, stopped: kopf.DaemonStopped) -> None:
        if self._finished():
            return
        s = self.ctx.settings
        renew_every = s.lease_seconds / 3
        failures = 0
        fenced = 0
        try:
            while not stopped:
                if self.lease.epoch is None and self._finished():
                    return  # another instance finished it (and released the lease)
                if await self.lease.hand_off():
                    await self._sleep(renew_every, stopped)
                    continue
                wait = renew_every
                await asyncio.sleep(
                    min(self.ctx.settings.pass_spacing * self.computed, MAX_PASS_SPACING)
                )
                # Cleared before reading state: a wake-up that arrives while we
                # work is kept for the sleep below, never lost.
                self.wakeup.clear()
                try:
                    if await self.lease.own():
                        finished, wake_at = await self.step()
                        if finished:
                            return
                        if wake_at is not None:
                            wait = min(wait, max(wake_at - time.time(), 0.0))
                    else:
                        wait = self.lease.idle_wait(renew_every)
                    failures = fenced = 0
                except FencedOut as exc:
                    log.warning("lost ownership of %s/%s: %s", *self.key, exc)
                    self.lease.drop()
                    # Fenced again and again (the object keeps naming a newer
                    # owner nobody holds): back off, up to a renew period.
                    fenced += 1
                    wait = max(
                        self.lease.idle_wait(renew_every), min(0.05 * 2**fenced, renew_every)
                    )
                except (OSError, ApiException, RedisError) as exc:
                    # Transient (API server or Redis away): retry soon, from persisted state.
                    failures += 1
                    wait = min(0.5 * 2**failures, 10.0)
                    log.warning(
                        "reconciling %s/%s failed (%s); retrying in %.1fs", *self.key, exc, wait
                    )
                    self._forget_states()
                except Exception as exc:
                    # Whatever this execution's object or state holds, it may
                    # cost the operator a bounded share: log, say so, back off.
                    failures += 1
                    wait = min(0.5 * 2**failures, 60.0)
                    log.exception("reconciling %s/%s failed; retrying in %.1fs", *self.key, wait)
                    self._warn_once("ReconcileError", f"{type(exc).__name__}: {exc}")
                    self._forget_states()
                await self._sleep(wait, stopped)
        finally:
            self.effects.cancel()
            self.publisher.cancel()
            if self.ctx.wakeups.get(self.uid) is self.wakeup:
                del self.ctx.wakeups[self.uid]
            self.ctx.owned.discard(self.uid)
            self.ctx.waiting.discard(self.uid)
            self.ctx.wanted.pop(self.uid, None)

    def _forget_states(self) -> None:
        """Read the job states from Redis again next pass (after an error:
        what we hold may not be what was persisted)."""
        self.states, self.states_epoch = None, None

    def _warn_once(self, reason: str, message: str) -> None:
        if message not in self.warned:
            self.warned.add(message)
            kopf.event(self.body, type="Warning", reason=reason, message=message[:1000])

    async def _sleep(self, seconds: float, stopped: kopf.DaemonStopped) -> None:
        waiters = [asyncio.ensure_future(self.wakeup.wait()), asyncio.ensure_future(stopped.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    # --- one reconcile pass ---------------------------------------------

    def _load_dag(self) -> Dag | str | None:
        """The execution's DAG; a string: why it is invalid; None: not yet
        known (a job type's JobTemplate, applied with it, not seen yet)."""
        generation = self.body["metadata"].get("generation")
        if self.dag is not None and generation == self.generation:
            return self.dag
        settings = self.ctx.settings
        templates = self.view.templates(self.owner.namespace, settings.template_namespace)
        try:
            spec = DAGExecutionSpec.model_validate(_plain(self.body["spec"]))
            dag = build_dag(spec, self.view.pools(), templates, settings.job_policy)
        except ValidationError as exc:
            return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        except InvalidDag as exc:
            if self._young() and any(
                job.type and job.type not in templates and not job.image for job in spec.jobs
            ):
                return None
            return str(exc)
        self.dag, self.spec, self.generation = dag, spec, generation
        # Jobs that require capabilities run only in pools: with none left, they wait.
        self.needs_pools = any(job.requires for job in dag.jobs.values())
        return dag

    def _young(self) -> bool:
        """Created so recently that objects applied with it may not have
        reached our watches yet."""
        created = parse_time(self.body["metadata"].get("creationTimestamp"))
        return created is not None and time.time() - created < TEMPLATE_GRACE_SECONDS

    async def step(self) -> tuple[bool, float | None]:
        """Returns (finished, wake_at)."""
        epoch = self.lease.epoch
        assert epoch is not None
        dag = self._load_dag()
        if dag is None:
            return False, time.time() + 1.0
        if isinstance(dag, str):
            await self._invalid(dag)
            return True, None
        spec = self.spec
        assert spec is not None
        computing = time.perf_counter()
        health = self.view.node_health()
        watched = self.pods()
        pods = dict(watched.all)  # a copy: the watch goes on while we wait below
        unfinished = list(watched.unfinished)
        for key in unfinished:
            pod = pods[key]
            if pod.node:
                lost, gone, silent = health(pod.node)
                if lost:
                    pods[key] = replace(pod, node_lost=True, node_gone=gone, node_silent=silent)
        if self.states is None or self.states_epoch != epoch:
            # A new term (ours or, between ours, someone else's): start from
            # what is persisted.
            self.states = await self._restore(dag, pods.values(), epoch)
            self.states_epoch = epoch
            if any(state.attempt for state in self.states.values()):
                # Not a first run: an earlier term may have left slots held.
                await self.slots.adopt(p.name for p in self.view.pools())
        if spec.retry > self.publisher.retried:
            await self._retry(spec.retry, epoch)
        await self._add_heartbeats(pods, unfinished)
        if not self.states.keys() <= dag.jobs.keys():
            # The spec lost jobs while the execution ran (admission refuses
            # that; a cluster without CEL rules may not): their pods would
            # run on unseen. End it, and them.
            removed = ", ".join(sorted(self.states.keys() - dag.jobs.keys()))
            await self._invalid(f"jobs were removed from a running execution: {removed}")
            return True, None
        now = time.time()
        pools = self.view.pools()
        snap = Snapshot(
            dag=dag,
            jobs=self.states,
            pods=pods,
            now=now,
            parallelism=spec.parallelism,
            suspend=spec.suspend or self.ctx.paused,
            shutdown=spec.shutdown,
            admitted=self.slots.admitted if pools or self.needs_pools else None,
            pod_gc=spec.pod_gc.strategy,
            forced_failover=frozenset(p.name for p in pools if p.spec.force_failover),
            heartbeat_timeout=self.ctx.settings.job_heartbeat_timeout_seconds,
            refused=self.effects.refused,
            execution=self.key,
            recorded=self.publisher.recorded,
            start_timeout=self.ctx.settings.job_start_timeout_seconds,
            cache=self.cache,
        )
        plan = reconcile(snap)
        if plan.lookups:
            await self._look_up(dag, plan, now)
            snap = replace(snap, cache=dict(self.cache))
            plan = start_admitted(snap, plan)
        self.effects.settle(plan)
        self.computed = time.perf_counter() - computing
        metrics.PASS_SECONDS.observe(self.computed)
        finished = attempts.ended(self.states, plan.jobs, plan.changed, pods, now)
        if plan.wants:
            if await self.slots.admit(dag, plan, pools):
                computing = time.perf_counter()
                plan = start_admitted(replace(snap, admitted=self.slots.admitted), plan)
                self.computed += time.perf_counter() - computing
            if plan.wants:
                self.ctx.waiting.add(self.uid)
        if not plan.wants:
            self.ctx.waiting.discard(self.uid)
            self.slots.settled()
        await self.slots.withdraw_unwanted(plan.wants)
        self.ctx.wanted[self.uid] = len(plan.wants)
        # Persist before acting: a crash after this write and before a pod
        # create re-creates the same deterministic name (409, adopt); the
        # reverse order could start an attempt the state does not know of.
        if plan.changed:
            changed = {n: plan.jobs[n] for n in plan.changed}
            await self.ctx.store.save(self.owner.uid, epoch, changed)
            await self.ctx.store.publish_jobs(self.owner.uid, changed)
            if any(isinstance(a, StartPod) for a in plan.actions):
                failpoint(self.ctx.settings, "after-save")
        await self._remember_cached(dag, plan, now)
        if finished:  # recorded once their end is persisted
            metrics.count_outcomes(finished)
            await self.ctx.store.record_attempts(
                self.owner.uid, finished, self.ctx.settings.finished_ttl_seconds
            )
        self.states = plan.jobs
        if self.lease.fenced_by_object():
            raise FencedOut("the object names a newer owner")
        if not self.lease.valid():
            return False, None  # renew first; the actions are recomputed next pass
        for action in plan.actions:
            if isinstance(action, StartPod):
                self.slots.admitted.pop(action.job, None)  # its slot is held from now on
        await self.effects.apply(dag, plan, pods, epoch)
        await self.slots.account(plan.jobs, pods)
        await self.slots.release_unused(plan.jobs, spec.suspend)
        retry_publish_at = await self.publisher.publish(
            dag, spec, plan, now, self.slots.unschedulable
        )
        if plan.phase.terminal:
            # The final status (and its record) is in: the pods the policy
            # collects at the end may go now.
            final = replace(snap, recorded=self.publisher.recorded)
            await self.effects.delete(collect_pods(final, plan.phase, plan.jobs), pods)
            await self.slots.forget(p.name for p in pools)
            self.ctx.waiting.discard(self.uid)
            await self.ctx.store.expire(
                self.owner.uid, epoch, self.ctx.settings.finished_ttl_seconds
            )
            await self.lease.release()
            return True, None
        wake_at = min(t for t in (plan.wake_at, retry_publish_at, float("inf")) if t is not None)
        return False, None if wake_at == float("inf") else wake_at

    async def _look_up(self, dag: Dag, plan: Plan, now: float) -> None:
        """Find the earlier runs of the cached jobs the plan asks about."""
        keyed: dict[str, str] = {}
        for name in plan.lookups:
            try:
                keyed[name] = inputs.cache_key(dag, plan.jobs, dag.jobs[name])
            except ExprError:
                self.cache[name] = None  # it fails as it starts, saying why
        found = await self.ctx.store.cached(self.owner.namespace, list(keyed.values()))
        for name, entry in zip(keyed, found, strict=True):
            self.cache[name] = inputs.cache_hit(dag.jobs[name], entry, now)

    async def _remember_cached(self, dag: Dag, plan: Plan, now: float) -> None:
        """Record the runs of cached jobs that succeeded in this pass."""
        execution = f"{self.owner.namespace}/{self.owner.name}"
        entries = inputs.cache_entries(
            dag, self.states or {}, plan.jobs, plan.changed, execution, now
        )
        if entries:
            await self.ctx.store.cache(self.owner.namespace, entries)

    async def _add_heartbeats(
        self, pods: dict[AttemptKey, PodObservation], unfinished: Iterable[AttemptKey]
    ) -> None:
        """Heartbeats of running attempts (one MGET), when their runtime sends
        them. An attempt known to have heartbeated whose key is gone (it
        expired: the runtime went silent) counts as silent since we first saw
        it missing, so the timeout fires whatever the key's lifetime."""
        running = [key for key in unfinished if pods[key].phase is PodPhase.RUNNING]
        self.beats = {key: at for key, at in self.beats.items() if key in running}
        if not running:
            return
        beats = await self.ctx.store.job_heartbeats(self.owner.uid, [job for job, _ in running])
        states = self.states or {}
        now = time.time()
        for job, attempt in running:
            beat = beats.get(job)
            if beat and beat.get("attempt") == attempt:
                at = self.beats[(job, attempt)] = float(beat["at"])
            else:
                state = states.get(job)
                if state is None or state.attempt != attempt or not state.heartbeats:
                    continue
                at = self.beats.setdefault((job, attempt), now)
            pods[(job, attempt)] = replace(pods[(job, attempt)], heartbeat_at=at)

    async def _restore(
        self, dag: Dag, pods: Iterable[PodObservation], epoch: int
    ) -> dict[str, JobState]:
        states = await self.ctx.store.load(self.owner.uid)
        if states:
            return states
        # Nothing in Redis: a first run, or Redis lost it. The pods and the
        # status record (never the status's phases, a report) are the record.
        assert self.spec is not None
        outcomes = record.decode(
            sweeps.names(_plain(self.body["spec"]).get("jobs") or []),
            (self.body.get("status") or {}).get("record"),
            cancelled=self.spec.shutdown is not None,
        )
        self.publisher.recorded = frozenset(outcomes or ())
        states = rebuild(dag, pods, outcomes, now=time.time())
        if any(s.attempt or s.phase.terminal for s in states.values()):
            log.warning("rebuilt state of %s/%s from its pods and status", *self.key)
            await self.ctx.store.save(self.owner.uid, epoch, states)
        return states

    async def _retry(self, retry: int, epoch: int) -> None:
        """Apply ``spec.retry``: the failed, skipped and cancelled jobs run
        again, the succeeded keep their results; the state is kept (no
        longer expiring) while it runs. Persisted before the status says so:
        an owner taking over in between resets only jobs that ended again."""
        assert self.states is not None
        assert self.dag is not None
        reset = rerun(self.states, self.dag.finally_jobs)
        if reset:
            await self.ctx.store.save(self.owner.uid, epoch, reset)
            self.states = {**self.states, **reset}
        await self.ctx.store.expire(self.owner.uid, epoch, 0)
        self.publisher.retried = retry
        self.publisher.event(
            "ExecutionRetried",
            f"retry {retry}: {len(reset)} failed, skipped or cancelled jobs run again",
        )
        log.info("%s/%s retry %d: %d jobs run again", *self.key, retry, len(reset))

    async def _invalid(self, message: str) -> None:
        """Fail the execution for its spec, stopping whatever of it still runs:
        no pod outlives the execution's run unseen."""
        alive = self.pods().all
        await self.effects.delete(
            (DeletePod(job, attempt, "invalid") for (job, attempt), p in alive.items() if p.alive),
            alive,
        )
        await self.slots.forget(p.name for p in self.view.pools())
        await self.publisher.invalid(message)


def ended(body: Mapping[str, Any]) -> bool:
    """Whether the status shows a finished execution, its record agrees that
    every job ended (a phase alone, a hand edit say, is a report, not a
    reason to stop running it), and no retry of it is pending."""
    status = body.get("status") or {}
    if status.get("phase") not in ENDED_PHASES:
        return False
    if retry_pending(body):
        return False
    names = _job_names(body)
    outcomes = record.decode(names, status.get("record"))
    return outcomes is not None and len(outcomes) == len(names)


def retry_pending(body: Mapping[str, Any]) -> bool:
    """``spec.retry`` raised beyond what the status says was applied."""
    asked = (body.get("spec") or {}).get("retry") or 0
    done = (body.get("status") or {}).get("retried") or 0
    return isinstance(asked, int) and isinstance(done, int) and asked > done


def _job_names(body: Mapping[str, Any]) -> list[str]:
    jobs = (body.get("spec") or {}).get("jobs") or []
    return sweeps.names(list(jobs)) if isinstance(jobs, Sequence) else []


def _plain(value: Any) -> Any:
    """kopf's live views as plain JSON values (pydantic wants dicts and lists)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
