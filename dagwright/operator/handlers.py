"""kopf wiring: a few lines each, the work is in ``runner`` and ``dagwright.core``.

- Pods, nodes and WorkerPools are watched into in-memory indexes.
- Every DAGExecution gets a daemon: its runner (which returns at once for a
  finished execution).
- Watch events on pods and executions wake the runner they concern; a slot
  released anywhere (Redis pub/sub) wakes the runners waiting for capacity.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any, cast

import kopf
import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import AuthenticationError, RedisError

from dagwright.core.placement import Pool
from dagwright.core.spec import JobTemplateSpec, WorkerPoolSpec
from dagwright.kube.client import new_api_client
from dagwright.kube.objects import Kube
from dagwright.names import GROUP, POD_SECURITY_LABEL, POD_SELECTOR, TEMPLATES, VERSION
from dagwright.operator import metrics
from dagwright.operator.cluster import ClusterView, NodeInfo
from dagwright.operator.context import Context
from dagwright.operator.informer import PodInformer
from dagwright.operator.pools import PoolController, pool_spec
from dagwright.operator.runner import ExecutionRunner, ended
from dagwright.settings import OperatorSettings
from dagwright.store import keys
from dagwright.store.redis_store import Store
from dagwright.store.slots import Slots

log = logging.getLogger(__name__)


class GenerationEssence(kopf.AnnotationsDiffBaseStorage):
    """The "essence" kopf diffs to find changes for on.create/update/field
    handlers: here only the generation. kopf builds it on every watch event by
    deep-copying the whole object, which was a sixth of the operator's CPU
    (a pod event, or a 10,000-job spec each time its status is patched).
    The operator has no changing handlers (daemons, indexes and on.event
    only; `tests/test_handlers.py` keeps it so); all kopf does with the
    essence then is decide whether an event is an "essential" change."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return cast(kopf.BodyEssence, {"metadata": {"generation": body.metadata.get("generation")}})


def configure(settings: kopf.OperatorSettings) -> None:
    """kopf's settings for this operator."""
    # Ownership is per execution, through fenced leases in Redis: every
    # instance runs, none is a frozen standby (kopf peering is not used).
    settings.peering.standalone = True
    # Our resources are fixed: no CRD or namespace scanning, so no RBAC for it.
    settings.scanning.disabled = True
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = GenerationEssence(
        prefix=GROUP, key="last-handled-configuration"
    )
    # kopf would post its own log lines as Events on every object; keep Events for job transitions.
    settings.posting.level = logging.ERROR
    # Events say who wrote them ("From" in `kubectl describe`).
    settings.posting.reporting_component = "dagwright-operator"
    settings.watching.connect_timeout = 10
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    config = OperatorSettings()
    configure(settings)
    api = await new_api_client()
    redis = aioredis.Redis.from_url(config.redis_url, decode_responses=True)
    kube = Kube(api, concurrency=config.kube_concurrency)
    # Our pods, filtered by the API server: other workloads' pods never reach this process.
    pods = PodInformer(kube.core, POD_SELECTOR, changed=lambda uid: memo.ctx.wake(uid))
    # A slot outlives a crashed owner by a few leases, then frees itself.
    hold = 3 * config.lease_seconds
    memo.ctx = Context(
        settings=config,
        kube=kube,
        store=Store(redis),
        slots=Slots(redis, hold_seconds=hold, stale_seconds=hold),
        view=ClusterView(running=pods.running_by_pool),
        pods=pods,
        priority_classes=config.priority_classes and await kube.ensure_priority_classes(),
    )
    memo.pools = PoolController(memo.ctx)
    memo.tasks = [
        asyncio.create_task(pods.run()),
        asyncio.create_task(_listen_for_freed_slots(memo.ctx, redis)),
        asyncio.create_task(_heartbeat(memo.ctx)),
    ]
    log.info("dagwright operator %s starting", config.instance_id)


async def _listen_for_freed_slots(ctx: Context, redis: aioredis.Redis) -> None:
    while True:
        try:
            async with redis.pubsub() as pubsub:
                await pubsub.subscribe(keys.FREED_CHANNEL, keys.QUEUE_CHANNEL)
                ctx.paused = await ctx.store.paused()  # after subscribing: no change missed
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    if message.get("channel") == keys.QUEUE_CHANNEL:
                        ctx.paused = message.get("data") == "paused"
                        ctx.wake_owned()
                    else:
                        ctx.wake_waiting()
        except AuthenticationError:
            await asyncio.sleep(30.0)  # the heartbeat says why, once
        except RedisError as exc:
            log.warning("slot notifications interrupted (%s); resubscribing", exc)
            await asyncio.sleep(1.0)


def _heartbeat_interval(ctx: Context) -> float:
    # A dead instance must drop out of the live set well before its leases
    # lapse, so the takeover goes straight to the next preferred instance.
    return min(ctx.settings.heartbeat_seconds, ctx.settings.lease_seconds / 6)


async def _beat_once(ctx: Context) -> None:
    interval = _heartbeat_interval(ctx)
    await ctx.store.heartbeat(
        ctx.settings.instance_id, owned=len(ctx.owned), ttl_seconds=3 * interval
    )
    ctx.peers = await ctx.store.live_instances()
    # What workers registered over REST say of their nodes (liveness, load, drain).
    if ctx.view.register(await ctx.store.workers()):
        ctx.wake_owned()


async def _heartbeat(ctx: Context) -> None:
    """Tell Redis (and so peers and the REST API's health check) that this
    instance lives, and learn which peers do. Claims wait until the live set
    held still for two beats after the first (at most six beats): instances
    started together (within about two beats: a busy machine starts one
    process seconds after another) then know of each other before either
    claims."""
    refused = False
    beats = 0
    seen: set[str] = set()
    held: set[str] = set()  # the live set one beat before ``seen``
    while True:
        wait = _heartbeat_interval(ctx)
        try:
            await _beat_once(ctx)
            refused = False
        except AuthenticationError as exc:
            # Not going to fix itself: say so once, clearly; the probe fails.
            if not refused:
                log.error("%s: %s", REDIS_REFUSED, exc)
            refused, wait = True, 30.0
        except RedisError as exc:
            log.warning("heartbeat to Redis failed: %s", exc)
        beats += 1
        # (Redis failing counts too: the runners' passes will say so.)
        if (beats >= 3 and seen == set(ctx.peers) == held) or beats >= 6:
            ctx.settled.set()
        held, seen = seen, set(ctx.peers)
        metrics.EXECUTIONS_OWNED.set(len(ctx.owned))
        metrics.QUEUE_DEPTH.set(sum(ctx.wanted.values()))
        await asyncio.sleep(wait)


REDIS_REFUSED = (
    "Redis refused the operator's credentials: check the password in DAGWRIGHT_REDIS_URL"
)


@kopf.on.probe(id="redis")
async def redis_ready(memo: Any, **_: Any) -> str:
    """Part of /healthz: the operator is no use without its Redis."""
    try:
        await memo.ctx.store.redis.ping()
    except AuthenticationError as exc:
        raise kopf.PermanentError(REDIS_REFUSED) from exc  # fails /healthz at once
    return "ok"


@kopf.on.cleanup()
async def cleanup(memo: Any, **_: Any) -> None:
    ctx: Context = memo.ctx
    for task in memo.tasks:
        task.cancel()
    await ctx.store.redis.aclose()
    await ctx.kube.api.close()


@kopf.index(GROUP, VERSION, "workerpools")
async def workerpools(name: str, spec: kopf.Spec, **_: Any) -> dict[None, Pool] | None:
    try:
        return {None: Pool(name, WorkerPoolSpec.model_validate(dict(spec)))}
    except ValidationError as exc:
        log.warning("ignoring invalid WorkerPool %s: %s", name, exc)
        return None


_POOL_INTERVAL = OperatorSettings().pool_interval_seconds


@kopf.timer(GROUP, VERSION, "workerpools", interval=_POOL_INTERVAL)
async def pool_status(
    name: str, uid: str, spec: kopf.Spec, status: kopf.Status, memo: Any, **kwargs: Any
) -> None:
    """Status, desired nodes and scaling of one WorkerPool."""
    ctx: Context = memo.ctx
    ctx.view.bind(
        kwargs["workerpools"], kwargs["nodes"], kwargs["jobtemplates"], kwargs["pod_security"]
    )
    parsed = pool_spec(dict(spec))
    if parsed is not None:
        await memo.pools.reconcile(name, uid, parsed, dict(status))


@kopf.index(GROUP, VERSION, TEMPLATES)
async def jobtemplates(
    name: str, namespace: str | None, spec: kopf.Spec, **_: Any
) -> dict[tuple[str, str], JobTemplateSpec] | None:
    try:
        return {(namespace or "", name): JobTemplateSpec.model_validate(dict(spec))}
    except ValidationError as exc:
        log.warning("ignoring invalid JobTemplate %s/%s: %s", namespace, name, exc)
        return None


@kopf.index("", "v1", "namespaces")
async def pod_security(name: str, labels: kopf.Labels, **_: Any) -> dict[str, str] | None:
    """Each namespace's enforced Pod Security level, where one is set: in a
    `restricted` namespace, pods of jobs that name no user get runAsNonRoot
    (without it, admission would refuse every one of them)."""
    level = labels.get(POD_SECURITY_LABEL)
    return {name: level} if level else None


@kopf.on.event(GROUP, VERSION, TEMPLATES)
async def template_changed(memo: Any, **_: Any) -> None:
    """An execution may be waiting for its job type's template."""
    memo.ctx.wake_waiting()


@kopf.index("", "v1", "nodes")
async def nodes(name: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[None, NodeInfo]:
    cordoned = bool((body.get("spec") or {}).get("unschedulable"))
    conditions = (body.get("status") or {}).get("conditions") or []
    beat = next((c.get("lastHeartbeatTime") for c in conditions if c.get("type") == "Ready"), None)
    return {None: NodeInfo(name, dict(labels), _node_ready(body), cordoned, beat)}


def _node_ready(body: kopf.Body) -> bool:
    conditions = (body.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


@kopf.on.event("", "v1", "nodes")
async def node_changed(memo: Any, name: str, body: kopf.Body, type: str, **_: Any) -> None:
    """A node turning NotReady (or deleted) concerns the runners with pods on it:
    wake every runner this instance owns; each checks its own pods."""
    ready = _node_ready(body) and type != "DELETED"
    seen: dict[str, bool] = memo.ctx.node_readiness
    if seen.get(name, ready) != ready:
        memo.ctx.wake_owned()
    if ready and not seen.get(name):
        memo.ctx.wake_waiting()  # new capacity
    seen[name] = ready


@kopf.on.event(GROUP, VERSION, "workerpools")
async def pool_changed(memo: Any, **_: Any) -> None:
    """A pool created or changed may take the jobs waiting for one."""
    memo.ctx.wake_waiting()


@kopf.on.event(GROUP, VERSION, "dagexecutions")
async def execution_changed(memo: Any, uid: str, **_: Any) -> None:
    memo.ctx.wake(uid)


# Only executions that have not ended (or are retried) have a runner. kopf
# stops it once its final status is seen; a runner finishing first waits for
# that (one that returned on its own would never be started again), and the
# cancellation backoff leaves its last writes time to complete.
def _runs(body: kopf.Body, **_: Any) -> bool:
    return not ended(body)


# On deletion kopf signals the daemon, and with no backoff cancels it at
# once: a runner mid-pass would never get to release what it holds. Five
# seconds is many passes.
@kopf.daemon(
    GROUP,
    VERSION,
    "dagexecutions",
    cancellation_backoff=5.0,
    cancellation_timeout=10.0,
    when=_runs,
)
async def run_execution(
    stopped: kopf.DaemonStopped,
    body: kopf.Body,
    namespace: str | None,
    name: str,
    uid: str,
    memo: Any,
    **kwargs: Any,
) -> None:
    ctx: Context = memo.ctx
    # kopf passes each index as a keyword named after its function; they are
    # live views, so binding them once serves every runner.
    ctx.view.bind(
        kwargs["workerpools"], kwargs["nodes"], kwargs["jobtemplates"], kwargs["pod_security"]
    )
    await ctx.pods.synced.wait()  # no pass before every existing pod is known
    await ctx.settled.wait()  # nor before the live peers are
    runner = ExecutionRunner(ctx, body, pods=lambda: ctx.pods.pods_of(uid))
    try:
        await runner.run(stopped)
    finally:
        if (
            stopped.reason is not None
            and stopped.reason & kopf.DaemonStoppingReason.RESOURCE_DELETED
        ):
            ctx.pods.forget(uid)
            # A task of its own, so that it completes even if kopf cancels
            # this daemon: its slots and queue places go now, not when they
            # lapse, and the next execution waiting for them starts at once.
            ctx.spawn(_forget_execution(ctx, uid))


async def _forget_execution(ctx: Context, uid: str) -> None:
    try:
        await ctx.slots.forget(uid, [p.name for p in ctx.view.pools()])
        await ctx.store.delete(uid)
    except RedisError as exc:  # they lapse on their own (slots after 3 leases, state after a TTL)
        log.warning("releasing the slots and state of deleted execution %s failed: %s", uid, exc)
