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
from dagwright.core.podspec import PodSettings, SecurityContext, Toleration, merge
from dagwright.core.spec import Resources
from dagwright.core.state import PodObservation, PodPhase
from dagwright.kube.objects import identity
from dagwright.names import (
    API_VERSION,
    ATTEMPT_AUDIENCE,
    ATTEMPT_LABEL,
    CONFIG_ANNOTATION,
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
CONFIG_VOLUME = "dagwright-config"
CONFIG_DIR = "/etc/dagwright"
# A job's outputs: JSON written to its termination message file, which the
# kubelet copies into the pod's status when the container ends (4 KiB at most).
OUTPUTS_FILE = "/dev/termination-log"


@dataclass(frozen=True)
class Placement:
    """Where a job may run: what the chosen WorkerPool asks of its pods."""

    pool: str | None = None
    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[Toleration, ...] = ()
    resources: Resources | None = None  # the pool's, for this job's capabilities
    avoid: tuple[str, ...] = ()  # node names not to run on (they lost an attempt)
    node: str | None = None  # the node whose slot the job holds
    defaults: PodSettings | None = None  # the pool's jobDefaults
    non_root: bool = False  # its policy forbids root


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


def _container_security(settings: SecurityContext | None) -> dict[str, Any]:
    """Restricted-compatible unless the job says otherwise (field by field)."""
    context: dict[str, Any] = {"allowPrivilegeEscalation": False}
    capabilities: dict[str, Any] = {"drop": ["ALL"]}
    if settings is not None:
        own = settings.manifest()
        capabilities = {**capabilities, **own.pop("capabilities", {})}
        if settings.privileged and settings.allow_privilege_escalation is None:
            del context["allowPrivilegeEscalation"]  # the API server refuses false with it
        context.update(own)
    context["capabilities"] = capabilities
    return context


def _pod_security(pod: PodSettings, non_root: bool) -> dict[str, Any]:
    context: dict[str, Any] = {"seccompProfile": {"type": "RuntimeDefault"}}
    if pod.security_context is not None:
        context.update(pod.security_context.manifest())
    if non_root:
        container = pod.container_security_context
        said = [c for c in (pod.security_context, container) if c is not None]
        if not any(c.run_as_non_root is not None or c.run_as_user for c in said):
            context["runAsNonRoot"] = True
    return context


def _resources(pool: Resources | None, job: Resources | None) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for kind in ("requests", "limits"):
        values = {**(getattr(pool, kind) if pool else {}), **(getattr(job, kind) if job else {})}
        if values:
            merged[kind] = values
    return merged


def _affinity(pod: PodSettings, placement: Placement) -> dict[str, Any] | None:
    """The job's affinity, with the operator's node pinning added to every
    required node term (terms are alternatives: each must pin)."""
    affinity = pod.affinity.manifest() if pod.affinity is not None else {}
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
        node = affinity.setdefault("nodeAffinity", {})
        required = node.setdefault(
            "requiredDuringSchedulingIgnoredDuringExecution", {"nodeSelectorTerms": [{}]}
        )
        for term in required["nodeSelectorTerms"]:
            term["matchFields"] = [*term.get("matchFields", []), *fields]
    return affinity or None


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
    pod = merge(placement.defaults, job.pod)
    env = [var.manifest() for var in pod.env or ()]
    env += [
        {"name": PodEnv.EXECUTION, "value": owner.name},
        {"name": PodEnv.NAMESPACE, "value": owner.namespace},
        {"name": PodEnv.JOB, "value": job.name},
        {"name": PodEnv.JOB_TYPE, "value": job.type},
        {"name": PodEnv.ATTEMPT, "value": str(attempt)},
        {"name": PodEnv.EXECUTION_UID, "value": owner.uid},
    ]
    volumes = [volume.manifest() for volume in pod.volumes or ()]
    mounts = [mount.manifest() for mount in pod.volume_mounts or ()]
    annotations = dict(pod.annotations or {})
    if placement.pool:
        env.append({"name": PodEnv.POOL, "value": placement.pool})
    if runtime_api_url:
        # Where the job runtime (worker image) sends heartbeats and
        # checkpoints, with the token projected below: job pods hold no
        # credentials to dagwright's state.
        env.append({"name": PodEnv.API_URL, "value": runtime_api_url})
        env.append({"name": PodEnv.TOKEN_FILE, "value": f"{TOKEN_DIR}/token"})
        # A token for dagwright's API only (the Kubernetes API refuses its
        # audience), bound to this pod: it dies with the pod, so an attempt
        # that has been replaced cannot report. The kubelet rotates it.
        volumes.append(
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
        )
        mounts.append({"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True})
    if checkpoint:
        # Resume where the last attempt got to (reported by the job runtime).
        env.append({"name": PodEnv.CHECKPOINT_PATH, "value": str(checkpoint.get("path", ""))})
        env.append({"name": PodEnv.CHECKPOINT_STEP, "value": str(checkpoint.get("step", ""))})
    if job.config is not None:
        # The config as $DAGWRIGHT_CONFIG, and as the file config.json (for
        # programs that read files, and configs too big for a command line).
        config = json.dumps(job.config, separators=(",", ":"))
        env.append({"name": PodEnv.CONFIG, "value": config})
        env.append({"name": PodEnv.CONFIG_FILE, "value": f"{CONFIG_DIR}/config.json"})
        annotations[CONFIG_ANNOTATION] = config
        volumes.append(
            {
                "name": CONFIG_VOLUME,
                "downwardAPI": {
                    "items": [
                        {
                            "path": "config.json",
                            "fieldRef": {
                                "fieldPath": f"metadata.annotations['{CONFIG_ANNOTATION}']"
                            },
                        }
                    ]
                },
            }
        )
        mounts.append({"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True})
    container: dict[str, Any] = {
        "name": "job",
        "image": job.image,
        "env": env,
        "securityContext": _container_security(pod.container_security_context),
    }
    if job.outputs:
        env.append({"name": PodEnv.OUTPUTS_FILE, "value": OUTPUTS_FILE})
        container["terminationMessagePath"] = OUTPUTS_FILE
        container["terminationMessagePolicy"] = "File"
    if pod.env_from:
        container["envFrom"] = [source.manifest() for source in pod.env_from]
    if pod.working_dir:
        container["workingDir"] = pod.working_dir
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
    resources = _resources(placement.resources, job.resources)
    if resources:
        container["resources"] = resources
    if mounts:
        container["volumeMounts"] = mounts
    # The operator's labels last: it finds its pods by them.
    labels = {
        **(pod.labels or {}),
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
        "automountServiceAccountToken": bool(pod.automount_service_account_token),
        "enableServiceLinks": False,
        "securityContext": _pod_security(pod, placement.non_root),
    }
    if volumes:
        spec["volumes"] = volumes
    for key, value in (
        ("serviceAccountName", pod.service_account_name),
        ("runtimeClassName", pod.runtime_class_name),
        ("schedulerName", pod.scheduler_name),
        ("priorityClassName", pod.priority_class_name or priority_class),
    ):
        if value:
            spec[key] = value
    if pod.image_pull_secrets:
        spec["imagePullSecrets"] = [secret.manifest() for secret in pod.image_pull_secrets]
    if placement.node_selector:
        spec["nodeSelector"] = dict(placement.node_selector)
    affinity = _affinity(pod, placement)
    if affinity:
        spec["affinity"] = affinity
    tolerations = [t.manifest() for t in (*placement.tolerations, *(pod.tolerations or ()))]
    if tolerations:
        spec["tolerations"] = tolerations
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(owner, job.name, attempt),
            "namespace": owner.namespace,
            "labels": labels,
            "annotations": annotations,
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


def parse_time(value: str | None) -> float | None:
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
    message = ""
    for container in status.get("containerStatuses") or []:
        if container.get("name") != "job":
            continue
        state = container.get("state") or {}
        terminated = state.get("terminated")
        if terminated:
            exit_code = terminated.get("exitCode")
            finished = parse_time(terminated.get("finishedAt"))
            reason = reason or terminated.get("reason") or ""
            message = terminated.get("message") or ""
        elif state.get("waiting"):
            waiting = _why(state["waiting"])
    unschedulable: float | None = None
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            unschedulable = parse_time(condition.get("lastTransitionTime")) or 0.0
            waiting = waiting or _why(condition)
    return PodObservation(
        job=job,
        attempt=attempt,
        phase=phase,
        started_at=parse_time(status.get("startTime")),
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
        message=message,
    )
