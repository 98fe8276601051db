"""WorkerPool status and autoscaling: one pass per pool per interval, by the
instance holding the pool's lease (any instance may; one does)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from dagwright.core.autoscale import PoolObservation, ScaleDecision, ScaleMemory, decide_scale
from dagwright.core.placement import Pool
from dagwright.core.spec import ScaleTargetRef, WorkerPoolSpec
from dagwright.names import POOL_LABEL, SCALE_DOWN_ANNOTATION
from dagwright.operator import metrics
from dagwright.operator.context import Context

log = logging.getLogger(__name__)


@dataclass
class PoolController:
    ctx: Context
    memory: dict[str, ScaleMemory] = field(default_factory=dict)
    last_status: dict[str, dict[str, Any]] = field(default_factory=dict)
    plurals: dict[tuple[str, str], str] = field(default_factory=dict)

    async def reconcile(
        self, name: str, uid: str, spec: WorkerPoolSpec, status: dict[str, Any]
    ) -> None:
        s = self.ctx.settings
        if await self.ctx.store.acquire(f"pool-{uid}", s.instance_id, s.lease_seconds) is None:
            return
        pool = Pool(name, spec)
        selector = spec.node_selector.items()
        members = [
            n for n in self.ctx.view.nodes() if all(n.labels.get(k) == v for k, v in selector)
        ]
        schedulable = tuple(sorted(n.name for n in members if n.schedulable))
        used = await self.ctx.slots.used(name)
        queued = await self.ctx.slots.queued(name)
        slots = self.ctx.view.capacity(pool)
        in_use = sum(used.get(n.name, 0) for n in members)
        desired: int | None = spec.replicas
        reason = "manual (spec.replicas)" if desired is not None else ""
        if spec.autoscaling is not None:
            # Only nodes made for this pool may go: a broad or mistyped
            # nodeSelector must never cordon another team's machines.
            removable = frozenset(
                n.name for n in members if n.labels.get(POOL_LABEL) == name and n.schedulable
            )
            memory, now = self.memory.get(name, ScaleMemory()), time.time()

            def decide(removable: frozenset[str]) -> ScaleDecision:
                assert spec.autoscaling is not None
                seen = PoolObservation(
                    schedulable, used, queued, spec.max_concurrency, removable=removable
                )
                return decide_scale(spec.autoscaling, seen, status.get("desiredNodes"), memory, now)

            decision = decide(removable)
            # No dagwright slot is not idle: a node running any pod stays.
            occupied = {n for n in decision.drain if await self.ctx.kube.pods_on(n)}
            if occupied:
                decision = decide(removable - occupied)
            self.memory[name] = decision.memory
            desired, reason = decision.desired, decision.reason
            for node in decision.drain:
                await self.ctx.kube.cordon(node, SCALE_DOWN_ANNOTATION)
            if spec.autoscaling.scale_target_ref is not None and desired != status.get(
                "desiredNodes"
            ):
                await self._scale(spec.autoscaling.scale_target_ref, desired)
        metrics.POOL_SLOTS.labels(pool=name).set(slots)
        metrics.POOL_SLOTS_USED.labels(pool=name).set(in_use)
        metrics.POOL_QUEUED.labels(pool=name).set(queued)
        new_status = {
            "nodes": len(members),
            "readyNodes": sum(1 for n in members if n.ready),
            "slots": slots,
            "slotsUsed": in_use,
            "utilization": f"{100 * in_use // slots}%" if slots else "0%",
            "queued": queued,
            "desiredNodes": desired,
            "scaleReason": reason,
            "members": [
                {
                    "name": n.name,
                    "ready": n.ready,
                    "slotsUsed": used.get(n.name, 0),
                    "draining": n.cordoned,
                    "lastHeartbeat": n.last_heartbeat,
                }
                for n in sorted(members, key=lambda n: n.name)
            ],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if schedulable else "False",
                    "reason": "NodesReady" if schedulable else "NoReadyNodes",
                    "message": f"{len(schedulable)} of {len(members)} nodes schedulable",
                }
            ],
        }
        if new_status != self.last_status.get(name):
            await self.ctx.kube.patch_pool_status(name, new_status)
            self.last_status[name] = new_status

    async def _scale(self, ref: ScaleTargetRef, replicas: int) -> None:
        group, _, version = ref.api_version.rpartition("/")
        plural = await self._plural(group, version, ref.kind)
        try:
            await self.ctx.kube.patch_scale(
                group, version, plural, ref.namespace, ref.name, replicas
            )
            log.info("scaled %s/%s to %d", ref.kind, ref.name, replicas)
        except ApiException as exc:
            log.warning("could not scale %s/%s: %s", ref.kind, ref.name, exc.reason)

    async def _plural(self, group: str, version: str, kind: str) -> str:
        key = (f"{group}/{version}", kind)
        if key not in self.plurals:
            self.plurals[key] = await self.ctx.kube.plural(group, version, kind)
        return self.plurals[key]


def pool_spec(spec: Any) -> WorkerPoolSpec | None:
    try:
        return WorkerPoolSpec.model_validate(spec)
    except ValueError:
        return None
