"""What jobs may ask of their pods: a platform team's policy, per WorkerPool
(``spec.policy``) or install-wide (the operator's ``jobPolicy``), checked when
an execution is validated and again when a pod is built.

The default keeps what dagwright always did: pods built by the operator, no
host paths, no privilege, nothing outside the execution's namespace. It
allows root (the common training images need it): a pool or an install that
does not sets ``allowRoot: false``, and a namespace's Pod Security level
applies on top of any policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Annotated

from pydantic import Field, StrictBool, StringConstraints

from dagwright.core.podspec import (
    Model,
    ObjectName,
    PodSettings,
    Quantity,
    VolumeType,
)

DEFAULT_VOLUME_TYPES = (
    VolumeType.PERSISTENT_VOLUME_CLAIM,
    VolumeType.SECRET,
    VolumeType.CONFIG_MAP,
    VolumeType.EMPTY_DIR,
    VolumeType.EPHEMERAL,
)
# Label keys the operator sets on every pod it builds (it finds its pods by them).
OPERATOR_LABEL_PREFIX = "dagwright.io/"
# Environment variables the operator sets (the job runtime reads them).
OPERATOR_ENV_PREFIX = "DAGWRIGHT_"
OPERATOR_VOLUME_PREFIX = "dagwright-"

ResourceName = Annotated[
    str, StringConstraints(pattern=r"^([a-z0-9.-]+/)?[a-zA-Z0-9._-]+$", max_length=253)
]


class JobPolicy(Model):
    """What the jobs placed in a pool (or, install-wide, in any pool without
    a policy of its own) may use."""

    volume_types: list[VolumeType] = Field(
        default_factory=lambda: list(DEFAULT_VOLUME_TYPES),
        max_length=16,
        description="Volume sources jobs may use (hostPath, nfs and csi only when listed).",
    )
    allow_root: StrictBool = Field(
        True,
        description="Jobs may run as root (runAsUser 0, or an image's root user). False: "
        "pods get runAsNonRoot unless the job sets a non-zero runAsUser.",
    )
    allow_privileged: StrictBool = Field(
        False,
        description="Jobs may set privileged, allowPrivilegeEscalation or an Unconfined "
        "seccomp profile.",
    )
    allowed_capabilities: list[Annotated[str, StringConstraints(max_length=64)]] = Field(
        default_factory=list,
        max_length=32,
        description="Linux capabilities jobs may add (all are dropped otherwise).",
    )
    service_accounts: list[ObjectName] | None = Field(
        None,
        max_length=64,
        description="Service accounts jobs may run as; unset: any of the execution's "
        "namespace (who may create DAGExecutions there may use them).",
    )
    reserved_prefixes: list[Annotated[str, StringConstraints(min_length=1, max_length=253)]] = (
        Field(
            default_factory=list,
            max_length=32,
            description="Label and annotation key prefixes jobs may not set.",
        )
    )
    max_resources: dict[ResourceName, Quantity] = Field(
        default_factory=dict,
        max_length=16,
        description="Largest request or limit of each resource one job may ask for.",
    )


DEFAULT_POLICY = JobPolicy()

_UNITS = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def quantity(text: str) -> Decimal:
    """A Kubernetes quantity's value (``500m`` is 0.5, ``1Gi`` 2**30)."""
    for suffix in ("Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E"):
        if text.endswith(suffix):
            number, unit = text[: -len(suffix)], _UNITS[suffix]
            break
    else:
        number, unit = text, Decimal(1)
    try:
        return Decimal(number) * unit
    except InvalidOperation:
        raise ValueError(f"not a quantity: {text!r}") from None


def violations(
    pod: PodSettings,
    resources: Mapping[str, Mapping[str, str]],
    policy: JobPolicy,
) -> list[str]:
    """Each setting of a job (its own, its defaults' and its template's, not
    the pool's) that ``policy`` does not allow, as ``field: why (rule)``."""
    found: list[str] = []
    for volume in pod.volumes or ():
        if volume.type not in policy.volume_types:
            allowed = ", ".join(policy.volume_types) or "none"
            found.append(
                f"volumes[{volume.name}].{volume.type}: {volume.type} volumes are not allowed "
                f"(policy.volumeTypes: {allowed})"
            )
    pod_sc, sc = pod.security_context, pod.container_security_context
    if not policy.allow_root:
        for where, context in (("securityContext", pod_sc), ("containerSecurityContext", sc)):
            if context is None:
                continue
            if context.run_as_user == 0:
                found.append(f"{where}.runAsUser: root is not allowed (policy.allowRoot: false)")
            if context.run_as_non_root is False:
                found.append(f"{where}.runAsNonRoot: root is not allowed (policy.allowRoot: false)")
    if not policy.allow_privileged:
        if sc is not None and sc.privileged:
            found.append(
                "containerSecurityContext.privileged: privileged pods are not allowed "
                "(policy.allowPrivileged: false)"
            )
        if sc is not None and sc.allow_privilege_escalation:
            found.append(
                "containerSecurityContext.allowPrivilegeEscalation: privilege escalation is not "
                "allowed (policy.allowPrivileged: false)"
            )
        for where, context in (("securityContext", pod_sc), ("containerSecurityContext", sc)):
            profile = context.seccomp_profile if context is not None else None
            if profile is not None and profile.type == "Unconfined":
                found.append(
                    f"{where}.seccompProfile: Unconfined is not allowed "
                    "(policy.allowPrivileged: false)"
                )
    added = (sc.capabilities.add or []) if sc is not None and sc.capabilities else []
    for capability in added:
        if capability not in policy.allowed_capabilities:
            allowed = ", ".join(policy.allowed_capabilities) or "none"
            found.append(
                f"containerSecurityContext.capabilities.add: {capability} is not allowed "
                f"(policy.allowedCapabilities: {allowed})"
            )
    account = pod.service_account_name
    if account and policy.service_accounts is not None and account not in policy.service_accounts:
        allowed = ", ".join(policy.service_accounts) or "none"
        found.append(
            f"serviceAccountName: {account} is not allowed (policy.serviceAccounts: {allowed})"
        )
    for field, keys in (("labels", pod.labels or {}), ("annotations", pod.annotations or {})):
        for key in keys:
            prefix = next((p for p in policy.reserved_prefixes if key.startswith(p)), None)
            if prefix is not None:
                found.append(
                    f"{field}[{key}]: the prefix {prefix} is reserved (policy.reservedPrefixes)"
                )
    for name, cap in policy.max_resources.items():
        for kind in ("requests", "limits"):
            value = resources.get(kind, {}).get(name)
            if value is not None and quantity(value) > quantity(cap):
                found.append(
                    f"resources.{kind}[{name}]: {value} is more than one job may ask for "
                    f"(policy.maxResources: {name} {cap})"
                )
    return found


def reserved(pod: PodSettings) -> list[str]:
    """Settings no policy allows: what the operator itself sets on every pod."""
    found = [
        f"labels[{key}]: the prefix {OPERATOR_LABEL_PREFIX} is the operator's"
        for key in pod.labels or {}
        if key.startswith(OPERATOR_LABEL_PREFIX)
    ]
    found += [
        f"env[{var.name}]: the prefix {OPERATOR_ENV_PREFIX} is the operator's"
        for var in pod.env or ()
        if var.name.startswith(OPERATOR_ENV_PREFIX)
    ]
    found += [
        f"volumes[{volume.name}]: the prefix {OPERATOR_VOLUME_PREFIX} is the operator's"
        for volume in pod.volumes or ()
        if volume.name.startswith(OPERATOR_VOLUME_PREFIX)
    ]
    return found
