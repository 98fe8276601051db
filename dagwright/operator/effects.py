"""The side effects of one execution's plans: its pods created and deleted,
its job Events. Creates run beside the passes (a pass that waited for its
creates kept jobs readied meanwhile waiting for the next one); each is
checked against the lease as its request goes out."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any

import kopf
from kubernetes_asyncio.client.exceptions import ApiException

from dagwright.core import expr, inputs
from dagwright.core.graph import Dag, Job, merge_resources, resources_of
from dagwright.core.placement import (
    BASELINE,
    Pool,
    choose_pool,
    forbidden_annotations,
    policy_of,
)
from dagwright.core.policy import violations
from dagwright.core.reconcile import DeletePod, Emit, Plan, Refusal, StartPod
from dagwright.core.state import JobPhase, JobState, PodObservation
from dagwright.errors import NameTaken
from dagwright.kube.client import error_message
from dagwright.kube.objects import log_tail
from dagwright.operator import logfields, metrics
from dagwright.operator.context import Context, failpoint
from dagwright.operator.informer import AttemptKey
from dagwright.operator.lease import Lease
from dagwright.operator.pods import Owner, Placement, build_pod, pod_name

log = logging.getLogger(__name__)

# The tail of a failed attempt's log kept in Redis, and how many per execution.
KEPT_LOG_BYTES = 16 * 1024
KEPT_LOGS = 500


class Effects:
    def __init__(
        self, ctx: Context, owner: Owner, body: kopf.Body, lease: Lease, wakeup: asyncio.Event
    ):
        self.ctx, self.owner, self.body, self.lease, self.wakeup = ctx, owner, body, lease, wakeup
        self.creating: dict[str, asyncio.Task[None]] = {}  # pod name -> its create
        # Attempts whose pod the API server refused, with its reason (the core fails them).
        self.refused: dict[AttemptKey, Refusal] = {}
        self.kept: set[AttemptKey] = set()  # failed attempts whose log tail was kept

    def cancel(self) -> None:
        for task in self.creating.values():
            task.cancel()

    def settle(self, plan: Plan) -> None:
        """Forget refusals the core has acted on (their attempt failed)."""
        if self.refused:
            self.refused = {
                key: why
                for key, why in self.refused.items()
                if plan.jobs[key[0]].attempt == key[1]
                and plan.jobs[key[0]].phase is JobPhase.STARTING
            }

    async def delete(
        self, actions: Iterable[DeletePod], pods: Mapping[AttemptKey, PodObservation]
    ) -> None:
        """Delete the pods seen for these attempts, each only while it is the
        pod we saw (UID precondition). One not seen yet is left: the core asks
        again once the watch shows it."""
        deletes = []
        for action in actions:
            pod = pods.get((action.job, action.attempt))
            if pod is None or pod.removed or not pod.uid:
                continue
            deletes.append(
                self.ctx.kube.delete_pod(self.owner.namespace, pod.name, pod.uid, action.force)
            )
        if deletes:
            await asyncio.gather(*deletes)

    async def apply(
        self, dag: Dag, plan: Plan, pods: Mapping[AttemptKey, PodObservation], epoch: int
    ) -> None:
        """The plan's actions: deletes first, then creates (beside the passes),
        and Events (for DAGs small enough that one per transition helps)."""
        pools = {p.name: p for p in self.ctx.view.pools()}
        starts = []
        deletes = []
        for action in plan.actions:
            if isinstance(action, StartPod):
                starts.append(action)
            elif isinstance(action, DeletePod):
                deletes.append(action)
            elif (
                isinstance(action, Emit) and len(dag.jobs) <= self.ctx.settings.job_events_max_jobs
            ):
                kopf.event(
                    self.body,
                    type="Warning" if action.warning else "Normal",
                    reason=action.reason,
                    message=action.message,
                )
            if isinstance(action, Emit):
                metrics.count_job_event(action.reason)
        await self._keep_logs(plan, pods)
        # Deletes first: a replacement is never created before the pod it
        # replaces was (force-)deleted, even as seen by a watcher.
        await self.delete(deletes, pods)
        starts = [
            a
            for a in starts
            # Still being created: a second POST would only get a 409.
            if pod_name(self.owner, a.job, a.attempt) not in self.creating
        ]
        # One round trip for all, here: a read per create task would open a
        # Redis connection per pod being created (a thousand on a wide layer).
        checkpoints = await self.ctx.store.checkpoints(self.owner.uid, [a.job for a in starts])
        for action in starts:
            name = pod_name(self.owner, action.job, action.attempt)
            try:
                # Templates read upstream outputs: resolved now, as it starts.
                job = inputs.render(dag, plan.jobs, dag.jobs[action.job])
            except expr.ExprError as exc:
                self._refuse(action.job, action.attempt, f"cannot resolve: {exc}", final=True)
                self.wakeup.set()
                continue
            task = asyncio.create_task(
                self._start(
                    job,
                    action,
                    pools,
                    epoch,
                    plan.jobs[action.job],
                    checkpoints.get(action.job),
                )
            )
            self.creating[name] = task
            task.add_done_callback(partial(self._created, name))

    async def _keep_logs(self, plan: Plan, pods: Mapping[AttemptKey, PodObservation]) -> None:
        """Copy the log tail of each attempt that failed in this pass into
        Redis, before its pod may be deleted (a timeout deletes it at once;
        pod GC later): `dagwright logs` serves it once the pod is gone.
        Bounded: KEPT_LOG_BYTES per attempt, KEPT_LOGS per execution."""
        wanted = []
        for name in plan.changed:
            state = plan.jobs[name]
            key = (name, state.attempt)
            if state.phase not in (JobPhase.BACKOFF, JobPhase.FAILED) or key in self.kept:
                continue
            pod = pods.get(key)
            if pod is not None and not pod.removed and pod.name:
                wanted.append((key, pod.name))
        wanted = wanted[: max(KEPT_LOGS - len(self.kept), 0)]
        if wanted:
            self.kept.update(key for key, _ in wanted)
            await asyncio.gather(*(self._keep_log(key, pod) for key, pod in wanted))

    async def _keep_log(self, key: AttemptKey, pod: str) -> None:
        try:
            text = await asyncio.wait_for(
                log_tail(self.ctx.kube.core, self.owner.namespace, pod, 400, KEPT_LOG_BYTES),
                timeout=5.0,
            )
            await self.ctx.store.keep_log(
                self.owner.uid, *key, text, self.ctx.settings.finished_ttl_seconds
            )
        except Exception as exc:
            # The log was unreachable (a lost node, the API server or Redis
            # away): nothing to keep, and nothing else to do about it.
            log.info("keeping the log of %s/%s failed: %s", self.owner.namespace, pod, exc)

    def _created(self, name: str, _: asyncio.Task[None]) -> None:
        self.creating.pop(name, None)

    def _placement(self, job: Job, action: StartPod, pools: Mapping[str, Pool]) -> Placement:
        pool = pools.get(action.pool) if action.pool else choose_pool(job.requires, pools.values())
        # Pods of jobs that name no user run as non-root where root is not
        # allowed: by the pool's policy, or by the namespace's Pod Security.
        restricted = self.ctx.view.restricted(self.owner.namespace)
        if pool is None:
            return Placement(
                avoid=action.avoid,
                node=action.node,
                non_root=restricted or not self.ctx.settings.job_policy.allow_root,
            )
        spec = pool.spec
        # The pool's resources for every job, then for each capability this
        # one requires (a cpu job placed in a gpu pool gets no GPU).
        per_capability = [
            spec.capability_resources.get(c) for c in sorted(job.requires or BASELINE)
        ]
        return Placement(
            pool=pool.name,
            node_selector=tuple(sorted(spec.node_selector.items())),
            tolerations=tuple(spec.tolerations),
            resources=merge_resources(spec.resources, *per_capability),
            avoid=action.avoid,
            node=action.node,
            defaults=spec.job_defaults,
            non_root=restricted or not policy_of(pool, self.ctx.settings.job_policy).allow_root,
        )

    def _forbidden(self, job: Job, pool: Pool | None) -> str | None:
        """Why the pool (as it is now: it may have changed since the
        execution was validated) does not take this job's pod, or None."""
        forbidden = forbidden_annotations(job.annotations, pool)
        if forbidden:
            where = f"WorkerPool {pool.name}" if pool is not None else "a job outside any pool"
            return (
                f"annotation {', '.join(forbidden)} is Kubernetes' own and {where} does not "
                "allow it (WorkerPool spec.allowedAnnotations)"
            )
        default = self.ctx.settings.job_policy
        policy = policy_of(pool, default) if pool is not None else default
        found = violations(job.pod, resources_of(job), policy)
        if found:
            where = f"WorkerPool {pool.name}'s policy" if pool is not None else "the policy"
            return f"{where} does not allow {'; '.join(found)}"
        return None

    async def _start(
        self,
        job: Job,
        action: StartPod,
        pools: Mapping[str, Pool],
        epoch: int,
        state: JobState,
        checkpoint: Mapping[str, Any] | None,
    ) -> None:
        """Create one attempt's pod. A create the API server refuses for good
        (4xx other than a conflict or a throttle) fails the attempt: the core
        counts it against the job's retries and says why. Other failures are
        logged: the job stays STARTING and the core creates its pod again when
        the watch has not shown it after a while (RECREATE_AFTER_SECONDS)."""
        logfields.ATTEMPT.set((job.name, action.attempt))  # this task's log lines
        name = pod_name(self.owner, job.name, action.attempt)
        placement = self._placement(job, action, pools)
        pool = pools.get(placement.pool) if placement.pool else None
        forbidden = self._forbidden(job, pool)
        if forbidden:
            self._refuse(job.name, action.attempt, forbidden, final=True)
            self.wakeup.set()
            return
        try:
            manifest = build_pod(
                self.owner,
                job,
                action.attempt,
                epoch,
                placement,
                f"dagwright-priority-{job.priority}" if self.ctx.priority_classes else None,
                checkpoint,
                runtime_api_url=self.ctx.settings.job_api_url,
                runtime_image=self.ctx.settings.worker_image,
            )
            await self._create(manifest, state)
        except NameTaken as exc:
            self._refuse(job.name, action.attempt, str(exc))
        except ApiException as exc:
            if exc.status is not None and 400 <= exc.status < 500 and exc.status not in (409, 429):
                message = error_message(exc)
                why = f"the API server refused pod {name}: {message}"
                self._refuse(job.name, action.attempt, why, final=_final(exc.status, message))
            else:
                log.warning("creating pod %s/%s failed: %s", self.owner.namespace, name, exc.reason)
        except OSError as exc:
            log.warning("creating pod %s/%s failed: %s", self.owner.namespace, name, exc)
        else:
            failpoint(self.ctx.settings, "after-create")
        finally:
            self.wakeup.set()  # so the next pass sees the create's outcome

    def _refuse(self, job: str, attempt: int, why: str, final: bool = False) -> None:
        self.refused[(job, attempt)] = Refusal(why, final)
        kopf.event(self.body, type="Warning", reason="PodCreateFailed", message=why[:1000])

    async def _create(self, manifest: dict[str, Any], state: JobState) -> None:
        # The lease is checked per pod, when the request is about to go out
        # (after waiting for a free connection): a process paused meanwhile
        # must not create on waking. The next owner (or our next term)
        # recreates the pod from the persisted state.
        created = await self.ctx.kube.create_pod(manifest, unless=self.lease.lost)
        if created:
            metrics.JOBS_STARTED.inc()
            if state.ready_at is not None and state.attempt == 1:
                metrics.SCHEDULING_LATENCY.observe(max(time.time() - state.ready_at, 0.0))


def _final(status: int, message: str) -> bool:
    """Would the same pod be refused again? A 403 is admission (Pod Security,
    a webhook, a policy) or RBAC, and answers the same next time, except a
    ResourceQuota's, which frees up as other pods end. Other refusals (an
    invalid value, say) are retried: the next attempt may be placed where
    the pool's defaults differ."""
    return status == 403 and "exceeded quota" not in message
