"""The pod settings a job may use, in the shape of the Kubernetes types they
become (``volumes``, ``env`` with ``valueFrom``, ``securityContext``...), and
how the layers that set them are merged.

Each model keeps the fields of its Kubernetes type that a batch job has a use
for, typed, so the CRD refuses a wrong value at ``kubectl apply`` time with
its field path. What a pod could do but a job should not (host namespaces,
``hostPort``, ...) has no field at all; what only some clusters allow
(``hostPath``, root, added capabilities) has a field that a ``JobPolicy``
permits or refuses (``policy.py``).

Merge order, lowest first: the WorkerPool's ``jobDefaults`` < the execution's
``spec.defaults`` < the job's JobTemplate < the job. Scalars: the last one
set wins. Maps (labels, annotations): merged by key. Lists of named things
(env, volumes, volumeMounts by mountPath, imagePullSecrets): merged by name,
a later entry replacing an earlier one of that name. ``envFrom`` and
``tolerations``: every layer's entries. Security contexts: merged field by
field. ``affinity``: each of nodeAffinity, podAffinity, podAntiAffinity is
taken from the last layer that sets it, and the operator's own node pinning
is added to it, never replaced by it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    model_validator,
)
from pydantic.alias_generators import to_camel

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
QUANTITY = r"^[0-9]+(\.[0-9]+)?([eE][0-9]+|[numkMGTPE]i?)?$"
# A qualified name (``prefix/name``), as label and annotation keys are.
QUALIFIED = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"

DnsLabel = Annotated[str, StringConstraints(pattern=DNS_LABEL, min_length=1, max_length=63)]
ObjectName = Annotated[str, StringConstraints(pattern=DNS_SUBDOMAIN, min_length=1, max_length=253)]
Quantity = Annotated[str, StringConstraints(pattern=QUANTITY, max_length=32)]
Path = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
Key = Annotated[str, StringConstraints(pattern=QUALIFIED, min_length=1, max_length=316)]
LabelValue = Annotated[
    str,
    StringConstraints(pattern=r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$", max_length=63),
]
ShortText = Annotated[str, StringConstraints(max_length=253)]
FileMode = Annotated[StrictInt, Field(ge=0, le=0o777)]
Id = Annotated[StrictInt, Field(ge=0, le=2_147_483_647)]


class Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )

    def manifest(self) -> dict[str, Any]:
        """The Kubernetes JSON of this object."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# --- environment ------------------------------------------------------------


class KeyRef(Model):
    name: ObjectName
    key: Annotated[str, StringConstraints(min_length=1, max_length=253)]
    optional: StrictBool | None = None


class FieldRef(Model):
    field_path: Annotated[str, StringConstraints(min_length=1, max_length=253)]
    api_version: ShortText | None = None


class ResourceFieldRef(Model):
    resource: Annotated[str, StringConstraints(min_length=1, max_length=253)]
    container_name: ShortText | None = None
    divisor: Quantity | None = None


def _one_of(*fields: str) -> dict[str, Any]:
    # The CRD refuses two sources (or none) at apply time; pydantic says the same.
    return {"oneOf": [{"required": [f]} for f in fields]}


class EnvVarSource(Model):
    model_config = ConfigDict(
        json_schema_extra=_one_of("secretKeyRef", "configMapKeyRef", "fieldRef", "resourceFieldRef")
    )

    secret_key_ref: KeyRef | None = None
    config_map_key_ref: KeyRef | None = None
    field_ref: FieldRef | None = None
    resource_field_ref: ResourceFieldRef | None = None

    @model_validator(mode="after")
    def _one_source(self) -> EnvVarSource:
        _exactly_one(self, "valueFrom")
        return self


class EnvVar(Model):
    name: Annotated[str, StringConstraints(pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", max_length=253)]
    value: Annotated[str, StringConstraints(max_length=32_768)] | None = None
    value_from: EnvVarSource | None = None

    @model_validator(mode="after")
    def _value_or_source(self) -> EnvVar:
        if self.value is not None and self.value_from is not None:
            raise ValueError(f"env {self.name}: set value or valueFrom, not both")
        return self


class NameRef(Model):
    name: ObjectName
    optional: StrictBool | None = None


class EnvFromSource(Model):
    model_config = ConfigDict(json_schema_extra=_one_of("secretRef", "configMapRef"))

    prefix: Annotated[str, StringConstraints(max_length=253)] | None = None
    secret_ref: NameRef | None = None
    config_map_ref: NameRef | None = None

    @model_validator(mode="after")
    def _one_source(self) -> EnvFromSource:
        _exactly_one(self, "envFrom", exclude={"prefix"})
        return self


class LocalObjectReference(Model):
    name: ObjectName


# --- volumes ----------------------------------------------------------------


class KeyToPath(Model):
    key: Annotated[str, StringConstraints(min_length=1, max_length=253)]
    path: Path
    mode: FileMode | None = None


class SecretVolume(Model):
    secret_name: ObjectName
    items: list[KeyToPath] | None = Field(None, max_length=64)
    default_mode: FileMode | None = None
    optional: StrictBool | None = None


class ConfigMapVolume(Model):
    name: ObjectName
    items: list[KeyToPath] | None = Field(None, max_length=64)
    default_mode: FileMode | None = None
    optional: StrictBool | None = None


class ClaimVolume(Model):
    claim_name: ObjectName
    read_only: StrictBool | None = None


class EmptyDirVolume(Model):
    medium: Annotated[str, StringConstraints(pattern=r"^(|Memory)$")] | None = Field(
        None, description='"Memory" for a tmpfs (e.g. /dev/shm for data loaders).'
    )
    size_limit: Quantity | None = None


class ClaimResources(Model):
    requests: dict[Annotated[str, StringConstraints(max_length=63)], Quantity] = Field(
        default_factory=dict, max_length=4
    )


class ClaimSpec(Model):
    access_modes: list[
        Annotated[
            str,
            StringConstraints(
                pattern=r"^(ReadWriteOnce|ReadOnlyMany|ReadWriteMany|ReadWriteOncePod)$"
            ),
        ]
    ] = Field(min_length=1, max_length=4)
    storage_class_name: ObjectName | None = None
    volume_mode: Annotated[str, StringConstraints(pattern=r"^(Filesystem|Block)$")] | None = None
    resources: ClaimResources


class ClaimTemplateMetadata(Model):
    labels: dict[Key, LabelValue] | None = Field(None, max_length=32)
    annotations: dict[Key, Annotated[str, StringConstraints(max_length=4096)]] | None = Field(
        None, max_length=32
    )


class ClaimTemplate(Model):
    metadata: ClaimTemplateMetadata | None = None
    spec: ClaimSpec


class EphemeralVolume(Model):
    volume_claim_template: ClaimTemplate


class HostPathVolume(Model):
    path: Path
    type: (
        Annotated[
            str,
            StringConstraints(
                pattern=r"^(|DirectoryOrCreate|Directory|FileOrCreate|File|Socket|CharDevice|BlockDevice)$"
            ),
        ]
        | None
    ) = None


class NFSVolume(Model):
    server: Annotated[str, StringConstraints(min_length=1, max_length=253)]
    path: Path
    read_only: StrictBool | None = None


class CSIVolume(Model):
    driver: ObjectName
    read_only: StrictBool | None = None
    fs_type: Annotated[str, StringConstraints(max_length=63)] | None = None
    volume_attributes: (
        dict[ShortText, Annotated[str, StringConstraints(max_length=4096)]] | None
    ) = Field(None, max_length=32)
    node_publish_secret_ref: LocalObjectReference | None = None


class VolumeType(StrEnum):
    PERSISTENT_VOLUME_CLAIM = "persistentVolumeClaim"
    SECRET = "secret"
    CONFIG_MAP = "configMap"
    EMPTY_DIR = "emptyDir"
    EPHEMERAL = "ephemeral"
    CSI = "csi"
    NFS = "nfs"
    HOST_PATH = "hostPath"


class Volume(Model):
    """One of the volume sources below, under a name the job's mounts use."""

    model_config = ConfigDict(json_schema_extra=_one_of(*(t.value for t in VolumeType)))

    name: DnsLabel
    persistent_volume_claim: ClaimVolume | None = None
    secret: SecretVolume | None = None
    config_map: ConfigMapVolume | None = None
    empty_dir: EmptyDirVolume | None = None
    ephemeral: EphemeralVolume | None = None
    csi: CSIVolume | None = None
    nfs: NFSVolume | None = None
    host_path: HostPathVolume | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Volume:
        _exactly_one(self, f"volume {self.name}", exclude={"name"})
        return self

    @property
    def type(self) -> VolumeType:
        (name,) = (n for n in self.model_fields_set if n != "name" and getattr(self, n) is not None)
        return VolumeType(to_camel(name))


class VolumeMount(Model):
    name: DnsLabel
    mount_path: Path
    sub_path: Annotated[str, StringConstraints(max_length=4096)] | None = None
    read_only: StrictBool | None = None


# --- security ---------------------------------------------------------------


class SeccompProfile(Model):
    type: Annotated[str, StringConstraints(pattern=r"^(RuntimeDefault|Localhost|Unconfined)$")]
    localhost_profile: Annotated[str, StringConstraints(max_length=4096)] | None = None


class PodSecurityContext(Model):
    run_as_user: Id | None = None
    run_as_group: Id | None = None
    run_as_non_root: StrictBool | None = None
    fs_group: Id | None = None
    fs_group_change_policy: (
        Annotated[str, StringConstraints(pattern=r"^(OnRootMismatch|Always)$")] | None
    ) = None
    supplemental_groups: list[Id] | None = Field(None, max_length=32)
    seccomp_profile: SeccompProfile | None = None


class Capabilities(Model):
    add: list[Annotated[str, StringConstraints(pattern=r"^[A-Z_]+$", max_length=64)]] | None = (
        Field(None, max_length=32)
    )
    drop: list[Annotated[str, StringConstraints(pattern=r"^[A-Z_]+$", max_length=64)]] | None = (
        Field(None, max_length=32)
    )


class SecurityContext(Model):
    """The job container's security context."""

    run_as_user: Id | None = None
    run_as_group: Id | None = None
    run_as_non_root: StrictBool | None = None
    privileged: StrictBool | None = None
    allow_privilege_escalation: StrictBool | None = None
    read_only_root_filesystem: StrictBool | None = None
    capabilities: Capabilities | None = None
    seccomp_profile: SeccompProfile | None = None


# --- scheduling -------------------------------------------------------------

Operator = Annotated[str, StringConstraints(pattern=r"^(In|NotIn|Exists|DoesNotExist|Gt|Lt)$")]


class NodeSelectorRequirement(Model):
    key: Annotated[str, StringConstraints(min_length=1, max_length=316)]
    operator: Operator
    values: list[Annotated[str, StringConstraints(max_length=253)]] | None = Field(
        None, max_length=64
    )


class NodeSelectorTerm(Model):
    match_expressions: list[NodeSelectorRequirement] | None = Field(None, max_length=16)
    match_fields: list[NodeSelectorRequirement] | None = Field(None, max_length=16)


class NodeSelector(Model):
    node_selector_terms: list[NodeSelectorTerm] = Field(min_length=1, max_length=16)


class PreferredSchedulingTerm(Model):
    weight: Annotated[StrictInt, Field(ge=1, le=100)]
    preference: NodeSelectorTerm


class NodeAffinity(Model):
    required_during_scheduling_ignored_during_execution: NodeSelector | None = None
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] | None = (
        Field(None, max_length=16)
    )


class LabelSelectorRequirement(Model):
    key: Key
    operator: Annotated[str, StringConstraints(pattern=r"^(In|NotIn|Exists|DoesNotExist)$")]
    values: list[Annotated[str, StringConstraints(max_length=63)]] | None = Field(
        None, max_length=64
    )


class LabelSelector(Model):
    match_labels: dict[Key, LabelValue] | None = Field(None, max_length=16)
    match_expressions: list[LabelSelectorRequirement] | None = Field(None, max_length=16)


class PodAffinityTerm(Model):
    label_selector: LabelSelector | None = None
    namespaces: list[DnsLabel] | None = Field(None, max_length=16)
    namespace_selector: LabelSelector | None = None
    topology_key: Annotated[str, StringConstraints(min_length=1, max_length=316)]


class WeightedPodAffinityTerm(Model):
    weight: Annotated[StrictInt, Field(ge=1, le=100)]
    pod_affinity_term: PodAffinityTerm


class PodAffinity(Model):
    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] | None = Field(
        None, max_length=16
    )
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] | None = (
        Field(None, max_length=16)
    )


class Affinity(Model):
    node_affinity: NodeAffinity | None = None
    pod_affinity: PodAffinity | None = None
    pod_anti_affinity: PodAffinity | None = None


class Toleration(Model):
    key: Annotated[str, StringConstraints(max_length=316)] | None = None
    operator: Annotated[str, StringConstraints(pattern=r"^(Exists|Equal)$")] | None = None
    value: Annotated[str, StringConstraints(max_length=63)] | None = None
    effect: (
        Annotated[str, StringConstraints(pattern=r"^(NoSchedule|PreferNoSchedule|NoExecute)?$")]
        | None
    ) = None
    toleration_seconds: StrictInt | None = None


# --- the settings -----------------------------------------------------------


class PodSettings(Model):
    """What a job's pod may be given beyond its image and command: set on a
    WorkerPool (``jobDefaults``), an execution (``spec.defaults``), a
    JobTemplate or a job, merged in that order."""

    env: list[EnvVar] | None = Field(
        None,
        max_length=128,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    env_from: list[EnvFromSource] | None = Field(
        None, max_length=16, description="Every key of a Secret or ConfigMap as env."
    )
    volumes: list[Volume] | None = Field(
        None,
        max_length=32,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    volume_mounts: list[VolumeMount] | None = Field(
        None,
        max_length=32,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["mountPath"],
        },
    )
    working_dir: Path | None = None
    service_account_name: ObjectName | None = Field(
        None, description="The pod's service account (cloud IAM for buckets, say)."
    )
    automount_service_account_token: StrictBool | None = Field(
        None, description="Mount the service account's Kubernetes API token (default false)."
    )
    image_pull_secrets: list[LocalObjectReference] | None = Field(
        None,
        max_length=8,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    security_context: PodSecurityContext | None = Field(
        None, description="The pod's security context."
    )
    container_security_context: SecurityContext | None = Field(
        None, description="The job container's security context."
    )
    runtime_class_name: DnsLabel | None = None
    scheduler_name: ObjectName | None = Field(
        None, description="Another scheduler (a batch scheduler, say) than kube-scheduler."
    )
    priority_class_name: ObjectName | None = Field(
        None, description="Instead of the operator's dagwright-priority-N class."
    )
    affinity: Affinity | None = Field(
        None, description="Added to the operator's own node pinning, never replacing it."
    )
    tolerations: list[Toleration] | None = Field(None, max_length=16)
    labels: dict[Key, LabelValue] | None = Field(
        None, max_length=32, description="Extra labels for the job's pods."
    )
    annotations: dict[Key, Annotated[str, StringConstraints(max_length=4096)]] | None = Field(
        None, max_length=32, description="Extra annotations for the job's pods."
    )


POD_FIELDS = frozenset(PodSettings.model_fields)
NO_POD_SETTINGS = PodSettings()


def _exactly_one(model: BaseModel, what: str, exclude: Iterable[str] = ()) -> None:
    skip = set(exclude)
    chosen = [
        to_camel(n)
        for n in type(model).model_fields
        if n not in skip and getattr(model, n) is not None
    ]
    if len(chosen) != 1:
        options = ", ".join(to_camel(n) for n in type(model).model_fields if n not in skip)
        found = f"got {', '.join(chosen)}" if chosen else "got none"
        raise ValueError(f"{what}: set exactly one of {options} ({found})")


def _by_key(key: Callable[[Any], str], *layers: list[Any] | None) -> list[Any] | None:
    merged: dict[str, Any] = {}
    for layer in layers:
        for item in layer or ():
            merged[key(item)] = item
    return list(merged.values()) if merged or any(x is not None for x in layers) else None


def _concat(*layers: list[Any] | None) -> list[Any] | None:
    out: list[Any] = []
    for layer in layers:
        out.extend(item for item in layer or () if item not in out)
    return out if out or any(x is not None for x in layers) else None


def _fields(*layers: Model | None) -> Any:
    set_ = [layer for layer in layers if layer is not None]
    if len(set_) <= 1:
        return set_[0] if set_ else None
    values: dict[str, Any] = {}
    for layer in set_:
        values.update({n: getattr(layer, n) for n in layer.model_fields_set})
    return type(set_[0]).model_validate(values)


def _dicts(*layers: dict[str, str] | None) -> dict[str, str] | None:
    if all(layer is None for layer in layers):
        return None
    merged: dict[str, str] = {}
    for layer in layers:
        merged.update(layer or {})
    return merged


def _affinity(*layers: Affinity | None) -> Affinity | None:
    parts: dict[str, Any] = {}
    for layer in layers:
        if layer is not None:
            parts.update({n: getattr(layer, n) for n in layer.model_fields_set})
    return Affinity.model_validate(parts) if parts else None


def merge(*layers: PodSettings | None) -> PodSettings:
    """The layers' settings, lowest first (see the module's doc)."""
    # Layers may be JobSettings (the pod settings' subclass): only the pod
    # settings count, and a single layer that has some is shared as it is.
    present = [
        layer for layer in layers if layer is not None and POD_FIELDS & layer.model_fields_set
    ]
    if len(present) <= 1:  # the usual case: only one layer (or none) sets any
        return present[0] if present else NO_POD_SETTINGS
    scalars = {
        "working_dir",
        "service_account_name",
        "automount_service_account_token",
        "runtime_class_name",
        "scheduler_name",
        "priority_class_name",
    }
    values: dict[str, Any] = {}
    for name in scalars:
        for layer in present:
            if getattr(layer, name) is not None:
                values[name] = getattr(layer, name)

    def each(name: str) -> list[Any]:
        return [getattr(layer, name) for layer in present]

    values["env"] = _by_key(lambda e: e.name, *each("env"))
    values["volumes"] = _by_key(lambda v: v.name, *each("volumes"))
    values["volume_mounts"] = _by_key(lambda m: m.mount_path, *each("volume_mounts"))
    values["image_pull_secrets"] = _by_key(lambda s: s.name, *each("image_pull_secrets"))
    values["env_from"] = _concat(*each("env_from"))
    values["tolerations"] = _concat(*each("tolerations"))
    values["labels"] = _dicts(*each("labels"))
    values["annotations"] = _dicts(*each("annotations"))
    values["security_context"] = _fields(*each("security_context"))
    values["container_security_context"] = _fields(*each("container_security_context"))
    values["affinity"] = _affinity(*each("affinity"))
    return PodSettings.model_validate({k: v for k, v in values.items() if v is not None})
