"""Pod manifests for job attempts, and what a pod tells us back. Pure functions."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dagwright.core.graph import Job
from dagwright.core.spec import Toleration
from dagwright.core.state import PodObservation, PodPhase

MANAGED_BY = "app.kubernetes.io/managed-by"
EXECUTION_LABEL = "dagwright.io/execution"
JOB_LABEL = "dagwright.io/job"
ATTEMPT_LABEL = "dagwright.io/attempt"
EPOCH_LABEL = "dagwright.io/epoch"
POOL_LABEL = "dagwright.io/pool"
MANAGED_SELECTOR = {MANAGED_BY: "dagwright"}
POD_SELECTOR = f"{MANAGED_BY}=dagwright"  # the same, as a label selector


@dataclass(frozen=True)
class Placement:
    """Where a job may run: what the chosen WorkerPool asks of its pods."""

    pool: str | None = None
    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[Toleration, ...] = ()
    resources: dict[str, Any] | None = None
    avoid: tuple[str, ...] = ()  # node names not to run on (they lost an attempt)
    node: str | None = None  # the node whose slot the job holds


@dataclass(frozen=True)
class Owner:
    """The DAGExecution the pods belong to."""

    name: str
    namespace: str
    uid: str
    api_version: str = "dagwright.io/v1alpha1"
    kind: str = "DAGExecution"


def repository(image: str) -> str:
    """``registry/name`` of an image reference, without tag or digest."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def pod_name(execution: str, job: str, attempt: int) -> str:
    """Deterministic: a second create of the same attempt is a 409, never a twin."""
    return f"{execution}-{job}-{attempt}"


def build_pod(
    owner: Owner,
    job: Job,
    attempt: int,
    epoch: int,
    placement: Placement,
    priority_class: str | None = None,
    checkpoint: Mapping[str, Any] | None = None,
    runtime_redis_url: str | None = None,
    runtime_image: str | None = None,
) -> dict[str, Any]:
    env = [{"name": e.name, "value": e.value} for e in job.env]
    env += [
        {"name": "DAGWRIGHT_EXECUTION", "value": owner.name},
        {"name": "DAGWRIGHT_NAMESPACE", "value": owner.namespace},
        {"name": "DAGWRIGHT_JOB", "value": job.name},
        {"name": "DAGWRIGHT_JOB_TYPE", "value": job.type},
        {"name": "DAGWRIGHT_ATTEMPT", "value": str(attempt)},
        {"name": "DAGWRIGHT_EXECUTION_UID", "value": owner.uid},
    ]
    if runtime_redis_url:
        # Where the job runtime (worker image) sends heartbeats and checkpoints.
        env.append({"name": "DAGWRIGHT_REDIS_URL", "value": runtime_redis_url})
    if checkpoint:
        # Resume where the last attempt got to (reported by the job runtime).
        env.append({"name": "DAGWRIGHT_CHECKPOINT_PATH", "value": str(checkpoint.get("path", ""))})
        env.append({"name": "DAGWRIGHT_CHECKPOINT_STEP", "value": str(checkpoint.get("step", ""))})
    if job.config is not None:
        env.append(
            {"name": "DAGWRIGHT_CONFIG", "value": json.dumps(job.config, separators=(",", ":"))}
        )
    container: dict[str, Any] = {
        "name": "job",
        "image": job.image,
        "env": env,
        # runAsNonRoot and seccompProfile are set once, for the pod: every
        # byte of a pod is re-encoded on each of its ~20 watch deliveries.
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }
    if runtime_image and repository(job.image) == repository(runtime_image):
        # The worker image's entrypoint is the job runtime; a `command` would
        # replace it, so the job's command line goes after it, as args.
        line = [*(job.command or []), *(job.args or [])]
        if line:
            container["args"] = line
    else:
        if job.command is not None:
            container["command"] = list(job.command)
        if job.args is not None:
            container["args"] = list(job.args)
    resources = (
        job.resources.model_dump(exclude_defaults=True) if job.resources else placement.resources
    )
    if resources:
        container["resources"] = resources
    labels = {
        MANAGED_BY: "dagwright",
        EXECUTION_LABEL: owner.name,
        JOB_LABEL: job.name,
        ATTEMPT_LABEL: str(attempt),
        EPOCH_LABEL: str(epoch),
    }
    if placement.pool:
        labels[POOL_LABEL] = placement.pool
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    }
    if priority_class:
        spec["priorityClassName"] = priority_class
    if placement.node_selector:
        spec["nodeSelector"] = dict(placement.node_selector)
    fields = []
    if placement.node:
        # Pinned to the node of its slot through required affinity (as the
        # DaemonSet controller does), so kube-scheduler still checks resources.
        fields.append({"key": "metadata.name", "operator": "In", "values": [placement.node]})
    if placement.avoid:
        fields.append(
            {"key": "metadata.name", "operator": "NotIn", "values": list(placement.avoid)}
        )
    if fields:
        spec["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchFields": fields}]
                }
            }
        }
    if placement.tolerations:
        spec["tolerations"] = [
            t.model_dump(by_alias=True, exclude_none=True) for t in placement.tolerations
        ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(owner.name, job.name, attempt),
            "namespace": owner.namespace,
            "labels": labels,
            "annotations": dict(job.annotations),
            "ownerReferences": [
                {
                    "apiVersion": owner.api_version,
                    "kind": owner.kind,
                    "name": owner.name,
                    "uid": owner.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }


def _timestamp(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def observe(pod: dict[str, Any]) -> PodObservation | None:
    """The core's view of a pod dict; None for pods that are not job attempts."""
    labels = pod.get("metadata", {}).get("labels") or {}
    job, attempt = labels.get(JOB_LABEL), labels.get(ATTEMPT_LABEL)
    if not job or not attempt or not attempt.isdigit():
        return None
    status = pod.get("status") or {}
    try:
        phase = PodPhase(status.get("phase") or "Pending")
    except ValueError:  # "Unknown": the node stopped reporting; treat as still running
        phase = PodPhase.RUNNING
    exit_code: int | None = None
    finished: float | None = None
    reason = status.get("reason") or ""
    for container in status.get("containerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated")
        if container.get("name") == "job" and terminated:
            exit_code = terminated.get("exitCode")
            finished = _timestamp(terminated.get("finishedAt"))
            reason = reason or terminated.get("reason") or ""
    return PodObservation(
        job=job,
        attempt=int(attempt),
        phase=phase,
        started_at=_timestamp(status.get("startTime")),
        finished_at=finished,
        exit_code=exit_code,
        reason=reason,
        deleting=bool(pod.get("metadata", {}).get("deletionTimestamp")),
        node=(pod.get("spec") or {}).get("nodeName"),
    )
