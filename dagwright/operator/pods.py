"""Pod manifests for job attempts, and what a pod tells us back. Pure functions.

A pod's identity is what nobody but its creator can change: its name (unique
per execution instance: it carries a hash of the execution's UID), its
controller owner reference (the execution's UID) and the job and attempt in
its container's environment (a pod's spec is immutable). Labels are only a
way to find our pods with a selector; anyone can edit them, so nothing is
decided by them.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dagwright.core.graph import Job
from dagwright.core.spec import Toleration
from dagwright.core.state import PodObservation, PodPhase
from dagwright.kube.objects import identity
from dagwright.names import (
    API_VERSION,
    ATTEMPT_AUDIENCE,
    ATTEMPT_LABEL,
    EPOCH_LABEL,
    EXECUTION_KIND,
    EXECUTION_LABEL,
    JOB_LABEL,
    MANAGED_BY,
    POOL_LABEL,
    PodEnv,
)

TOKEN_VOLUME = "dagwright-token"
TOKEN_DIR = "/var/run/secrets/dagwright"


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
    api_version: str = API_VERSION
    kind: str = EXECUTION_KIND


def repository(image: str) -> str:
    """``registry/name`` of an image reference, without tag or digest."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


@functools.lru_cache(maxsize=4096)  # asked for at every pod create and delete
def instance_hash(uid: str) -> str:
    """Eight DNS-safe characters (40 bits) of the execution's UID."""
    digest = hashlib.sha256(uid.encode()).digest()
    return base64.b32encode(digest).decode()[:8].lower()


def pod_name(owner: Owner, job: str, attempt: int) -> str:
    """Deterministic: a second create of the same attempt is a 409, never a
    twin. The UID's hash makes it unique per execution instance: a deleted
    and re-applied execution, or ``a`` with job ``b-c`` beside ``a-b`` with
    job ``c``, never share a name. (At most 63 + 63 + 8 + 3 + 3 characters:
    a pod name may have 253.)"""
    return f"{owner.name}-{job}-{instance_hash(owner.uid)}-{attempt}"


def build_pod(
    owner: Owner,
    job: Job,
    attempt: int,
    epoch: int,
    placement: Placement,
    priority_class: str | None = None,
    checkpoint: Mapping[str, Any] | None = None,
    runtime_api_url: str | None = None,
    runtime_image: str | None = None,
) -> dict[str, Any]:
    env = [{"name": e.name, "value": e.value} for e in job.env]
    env += [
        {"name": PodEnv.EXECUTION, "value": owner.name},
        {"name": PodEnv.NAMESPACE, "value": owner.namespace},
        {"name": PodEnv.JOB, "value": job.name},
        {"name": PodEnv.JOB_TYPE, "value": job.type},
        {"name": PodEnv.ATTEMPT, "value": str(attempt)},
        {"name": PodEnv.EXECUTION_UID, "value": owner.uid},
    ]
    if placement.pool:
        env.append({"name": PodEnv.POOL, "value": placement.pool})
    if runtime_api_url:
        # Where the job runtime (worker image) sends heartbeats and
        # checkpoints, with the token projected below: job pods hold no
        # credentials to dagwright's state.
        env.append({"name": PodEnv.API_URL, "value": runtime_api_url})
        env.append({"name": PodEnv.TOKEN_FILE, "value": f"{TOKEN_DIR}/token"})
    if checkpoint:
        # Resume where the last attempt got to (reported by the job runtime).
        env.append({"name": PodEnv.CHECKPOINT_PATH, "value": str(checkpoint.get("path", ""))})
        env.append({"name": PodEnv.CHECKPOINT_STEP, "value": str(checkpoint.get("step", ""))})
    if job.config is not None:
        env.append({"name": PodEnv.CONFIG, "value": json.dumps(job.config, separators=(",", ":"))})
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
    if runtime_api_url:
        container["volumeMounts"] = [
            {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True}
        ]
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    }
    if runtime_api_url:
        # A token for dagwright's API only (the Kubernetes API refuses its
        # audience), bound to this pod: it dies with the pod, so an attempt
        # that has been replaced cannot report. The kubelet rotates it.
        spec["volumes"] = [
            {
                "name": TOKEN_VOLUME,
                "projected": {
                    "sources": [
                        {
                            "serviceAccountToken": {
                                "audience": ATTEMPT_AUDIENCE,
                                "expirationSeconds": 3600,
                                "path": "token",
                            }
                        }
                    ]
                },
            }
        ]
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
            "name": pod_name(owner, job.name, attempt),
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


def _why(waiting: Mapping[str, Any]) -> str:
    reason, message = waiting.get("reason") or "", waiting.get("message") or ""
    return f"{reason}: {message}"[:500] if message else reason[:500]


def observe(pod: dict[str, Any], removed: bool = False) -> PodObservation | None:
    """The core's view of a pod dict; None for pods that are not job attempts.
    ``removed``: the pod's last state, as its deletion was reported."""
    found = identity(pod)
    if found is None:
        return None
    job, attempt, pool = found
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    try:
        phase = PodPhase(status.get("phase") or "Pending")
    except ValueError:  # "Unknown": the node stopped reporting; treat as still running
        phase = PodPhase.RUNNING
    exit_code: int | None = None
    finished: float | None = None
    reason = status.get("reason") or ""
    waiting = ""
    for container in status.get("containerStatuses") or []:
        if container.get("name") != "job":
            continue
        state = container.get("state") or {}
        terminated = state.get("terminated")
        if terminated:
            exit_code = terminated.get("exitCode")
            finished = _timestamp(terminated.get("finishedAt"))
            reason = reason or terminated.get("reason") or ""
        elif state.get("waiting"):
            waiting = _why(state["waiting"])
    unschedulable: float | None = None
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            unschedulable = _timestamp(condition.get("lastTransitionTime")) or 0.0
            waiting = waiting or _why(condition)
    return PodObservation(
        job=job,
        attempt=attempt,
        phase=phase,
        started_at=_timestamp(status.get("startTime")),
        finished_at=finished,
        exit_code=exit_code,
        reason=reason,
        deleting=bool(meta.get("deletionTimestamp")),
        node=(pod.get("spec") or {}).get("nodeName"),
        pool=pool,
        waiting=waiting,
        unschedulable_since=unschedulable,
        name=meta.get("name") or "",
        uid=meta.get("uid") or "",
        removed=removed,
    )
