"""The DAGExecution and WorkerPool specs: the one canonical source from which
the CRDs are generated (``dagwright.crdgen``) and requests are validated.

Field names are camelCase on the wire (Kubernetes convention) and snake_case
in Python. Everything a schema can check is checked here, so that the CRD
rejects it at ``kubectl apply`` time; what needs the whole graph (cycles,
unknown dependencies) lives in ``graph.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    field_validator,
)

from dagwright.core import expr
from dagwright.core.durations import DURATION_PATTERN, parse_duration
from dagwright.core.podspec import Model, PodSettings, Toleration
from dagwright.core.policy import JobPolicy

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
MAX_JOBS = 10_000
MAX_DEPENDENCIES = 100
KNOWN_CAPABILITIES = ("cpu", "gpu", "high-memory", "ssd", "network")

DnsLabel = Annotated[str, StringConstraints(pattern=DNS_LABEL, min_length=1, max_length=63)]
Capability = Annotated[str, StringConstraints(pattern=DNS_LABEL, min_length=1, max_length=63)]
Duration = Annotated[str, StringConstraints(pattern=DURATION_PATTERN, max_length=32)]
Priority = Annotated[StrictInt, Field(ge=1, le=10)]
Quantity = Annotated[
    str, StringConstraints(pattern=r"^[0-9]+(\.[0-9]+)?([eE][0-9]+|[numkMGTPE]i?)?$", max_length=32)
]
ResourceName = Annotated[
    str, StringConstraints(pattern=r"^([a-z0-9.-]+/)?[a-zA-Z0-9._-]+$", max_length=253)
]


class Backoff(Model):
    """Delay before retry n (n = 1, 2, ...): ``initial * factor**(n-1)``, at most ``max``."""

    initial: Duration = Field("5s", description="Delay before the first retry.")
    factor: StrictFloat = Field(2.0, ge=1.0, le=10.0, description="Multiplier between retries.")
    max: Duration = Field("5m", description="Upper bound of any delay.")

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        initial, cap = parse_duration(self.initial), parse_duration(self.max)
        exponent = max(retry - 1, 0)
        # Bounded exponent: factor**exponent overflows float long before any cap matters.
        return float(min(initial * self.factor ** min(exponent, 64), cap))


class RetryOn(StrEnum):
    """Which failed attempts are retried (see ``core.failures`` for each kind)."""

    ALWAYS = "Always"  # every failed attempt
    ON_FAILURE = "OnFailure"  # the container exited non-zero (OOM kill included) or timed out
    ON_ERROR = "OnError"  # the pod failed around the container: evicted, deleted, never started
    ON_TRANSIENT = "OnTransient"  # OOM-killed, evicted, preempted/deleted, image pull, quota


# What a retry expression may read of the failed attempt.
RETRY_NAMES = ("exitCode", "reason", "kind", "attempt")


class RetryPolicy(Model):
    retry_on: RetryOn = Field(
        RetryOn.ALWAYS, description="Which failed attempts are retried (within `retries`)."
    )
    expression: Annotated[str, StringConstraints(min_length=1, max_length=1024)] | None = Field(
        None,
        description="Retried only if this is also true, over exitCode (null when the container "
        "never ended), reason (OOMKilled, Evicted, Error, ImagePullBackOff...), kind and "
        "attempt, e.g. `exitCode in [137, 143]`.",
    )
    infra_retries: StrictInt | None = Field(
        None,
        ge=0,
        le=100,
        description="Attempts the job may lose to the infrastructure (its node died or went "
        "silent) before it fails; these never use `retries` (default 10).",
    )

    @field_validator("expression")
    @classmethod
    def _parses(cls, value: str | None) -> str | None:
        if value is not None:
            node = expr.parse(value)
            for path in expr.paths(node):
                if len(path.parts) != 1 or path.parts[0] not in RETRY_NAMES:
                    raise ValueError(
                        f"a retry expression reads only {', '.join(RETRY_NAMES)}, not {path}"
                    )
        return value


class Cache(Model):
    """Reuse the outputs of a succeeded run of the same job (same key) from
    an earlier execution in the namespace instead of running it."""

    key: Annotated[str, StringConstraints(min_length=1, max_length=1024)] | None = Field(
        None,
        description="Templates allowed ({{item.x}}, {{jobs.a.outputs.b}}); default: a hash of "
        "the image, command, args, env values, config and the item, resolved.",
    )
    max_age: Duration = Field("24h", description="Oldest result reused.")


class Resources(Model):
    """Container resource requests and limits, e.g. ``{"nvidia.com/gpu": "1"}``."""

    requests: dict[ResourceName, Quantity] = Field(default_factory=dict, max_length=16)
    limits: dict[ResourceName, Quantity] = Field(default_factory=dict, max_length=16)


class Shutdown(StrEnum):
    STOP = "Stop"  # start nothing new, let running jobs finish, end Cancelled
    TERMINATE = "Terminate"  # also delete running pods


class JobSettings(PodSettings):
    """Settings a job may give itself or inherit from ``spec.defaults`` or
    its JobTemplate."""

    image: Annotated[str, StringConstraints(min_length=1, max_length=512)] | None = Field(
        None, description="Container image of the job."
    )
    requires: list[Capability] | None = Field(
        None,
        max_length=16,
        description="Capabilities a worker pool must offer (cpu, gpu, high-memory, ssd, network, or custom).",
    )
    command: list[Annotated[str, StringConstraints(max_length=4096)]] | None = Field(
        None, max_length=64, description="The container's command (default: the image's)."
    )
    args: list[Annotated[str, StringConstraints(max_length=4096)]] | None = Field(
        None, max_length=256
    )
    resources: Resources | None = None
    retries: StrictInt | None = Field(
        None, ge=0, le=100, description="Retries after the first attempt (default 3)."
    )
    backoff: Backoff | None = None
    retry_policy: RetryPolicy | None = Field(
        None, description="Which failures are retried; the budget for lost nodes."
    )
    cache: Cache | None = Field(None, description="Memoization: reuse an earlier run's outputs.")
    timeout: Duration | None = Field(None, description="Longest an attempt may run (default 5m).")
    start_timeout: Duration | None = Field(
        None,
        description="Longest an attempt's pod may take to start running (unschedulable, "
        "pulling its image...) before the attempt fails (default: the operator's, 10m).",
    )

    @field_validator("timeout", "start_timeout")
    @classmethod
    def _positive_timeout(cls, value: str | None) -> str | None:
        if value is not None and parse_duration(value) <= 0:
            raise ValueError("timeout must be greater than zero")
        return value


OutputName = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", min_length=1, max_length=63)
]
MAX_ITEMS = MAX_JOBS


class Finally(StrEnum):
    """When a finally job runs: after every other job has ended."""

    ALWAYS = "Always"
    ON_SUCCESS = "OnSuccess"
    ON_FAILURE = "OnFailure"
    ON_CANCEL = "OnCancel"  # cancelled with shutdown Stop (Terminate runs nothing more)


class JobFlow(Model):
    """What places a job in a pipeline beyond its dependencies: outputs,
    conditions, sweeps, finally (shared by DAGExecution jobs and REST jobs)."""

    outputs: list[OutputName] | None = Field(
        None,
        max_length=32,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Names of the small values the job records (dagwright.worker.set_output, or "
        "JSON written to $DAGWRIGHT_OUTPUTS_FILE; 4 KiB in all); later jobs read them as "
        "{{jobs.NAME.outputs.OUTPUT}}.",
    )
    when: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = Field(
        None,
        description="Run only if this is true, e.g. `jobs.evaluate.outputs.accuracy > 0.9`; "
        "otherwise the job is Skipped.",
    )
    allow_skipped: StrictBool | None = Field(
        None,
        description="Run even if dependencies were skipped (by a `when`, say): skipped ones "
        "count as done.",
    )
    with_items: list[Any] | None = Field(
        None,
        min_length=1,
        max_length=MAX_ITEMS,
        description="A sweep: one job per item, named NAME-0, NAME-1...; {{item}} (or "
        "{{item.key}}) in its settings is the item.",
    )
    matrix: (
        dict[
            Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=63)],
            Annotated[list[Any], Field(min_length=1, max_length=MAX_ITEMS)],
        ]
        | None
    ) = Field(
        None,
        min_length=1,
        max_length=8,
        description="A sweep over every combination: {lr: [...], batch: [...]}; {{item.lr}}.",
    )
    finally_: Finally | None = Field(
        None,
        alias="finally",
        description="A finally job: runs once the other jobs have ended (Always, OnSuccess, "
        "OnFailure, OnCancel), with $DAGWRIGHT_EXECUTION_PHASE and $DAGWRIGHT_FAILED_JOBS.",
    )
    affects_outcome: StrictBool | None = Field(
        None, description="A finally job whose failure fails the execution (default: it does not)."
    )

    @field_validator("when")
    @classmethod
    def _when_parses(cls, value: str | None) -> str | None:
        if value is not None:
            expr.parse(value)
        return value

    @field_validator("matrix")
    @classmethod
    def _scalars(cls, value: dict[str, list[Any]] | None) -> dict[str, list[Any]] | None:
        for key, values in (value or {}).items():
            for v in values:
                if isinstance(v, dict | list):
                    raise ValueError(f"matrix.{key}: values are numbers, strings or booleans")
        return value


class JobSpec(JobSettings, JobFlow):
    name: DnsLabel = Field(description="Unique name of the job within the DAG (a DNS label).")
    # No schema default: a default is stored in every job of every object,
    # and 10,000-job DAGs must stay well under etcd's object size limit.
    type: Annotated[str, StringConstraints(max_length=63)] | None = Field(
        None, description="Free text: preprocessing, training, evaluation... (default generic)"
    )
    depends_on: list[DnsLabel] = Field(
        default_factory=list,
        max_length=MAX_DEPENDENCIES,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Jobs that must succeed before this one starts.",
    )
    priority: Priority | None = Field(
        None, description="Overrides the DAG's priority for this job."
    )
    config: dict[str, Any] | None = Field(
        None, description="Free JSON handed to the job as $DAGWRIGHT_CONFIG."
    )


class PodGCStrategy(StrEnum):
    NEVER = "Never"  # keep every pod (their logs) until the execution is deleted
    ON_JOB_SUCCESS = "OnJobSuccess"  # delete a job's pods once it succeeded
    ON_EXECUTION_SUCCESS = "OnExecutionSuccess"  # delete all pods when the DAG succeeded
    ON_EXECUTION_COMPLETION = "OnExecutionCompletion"  # delete all pods when the DAG finished


class PodGC(Model):
    strategy: PodGCStrategy = Field(
        PodGCStrategy.NEVER, description="When finished pods are deleted."
    )


class DAGExecutionSpec(Model):
    priority: Priority = Field(5, description="1 (lowest) to 10 (highest).")
    parallelism: StrictInt = Field(
        10, ge=1, le=MAX_JOBS, description="Most jobs of this DAG running at once."
    )
    suspend: StrictBool = Field(
        False, description="True: start nothing new; false again: continue."
    )
    shutdown: Shutdown | None = Field(
        None,
        description="Stop: start nothing new, let running jobs finish. Terminate: also delete running pods.",
    )
    defaults: JobSettings = Field(
        default_factory=JobSettings, description="Settings every job inherits."
    )
    retry: StrictInt = Field(
        0,
        ge=0,
        le=10_000,
        description="Raise it (dagwright retry) to run the failed, skipped and cancelled jobs "
        "of an ended execution again; succeeded jobs keep their results.",
    )
    pod_gc: PodGC = Field(
        default_factory=PodGC, alias="podGC", description="Deleting finished pods."
    )
    jobs: list[JobSpec] = Field(
        min_length=1,
        max_length=MAX_JOBS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )


class ScaleTargetRef(Model):
    """Any object with a /scale subresource (a Cluster API MachineDeployment, say)."""

    api_version: Annotated[str, StringConstraints(min_length=1, max_length=253)]
    kind: Annotated[str, StringConstraints(min_length=1, max_length=63)]
    name: Annotated[str, StringConstraints(min_length=1, max_length=253)]
    namespace: Annotated[str, StringConstraints(max_length=63)] | None = None


class Autoscaling(Model):
    min_nodes: StrictInt = Field(0, ge=0, le=10_000)
    max_nodes: StrictInt = Field(ge=1, le=10_000)
    scale_up_delay: Duration = Field(
        "0s", description="How long jobs must queue before adding nodes."
    )
    scale_down_delay: Duration = Field(
        "5m", description="How long a node must be idle before removing it."
    )
    scale_down_step: StrictInt = Field(
        1, ge=1, le=100, description="Most nodes removed per pool interval."
    )
    scale_target_ref: ScaleTargetRef | None = Field(
        None, description="Whose /scale subresource receives the desired node count."
    )


class WorkerPoolSpec(Model):
    """A set of nodes (found by ``nodeSelector``) offering ``capabilities``."""

    capabilities: list[Capability] = Field(
        min_length=1, max_length=32, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    node_selector: dict[
        Annotated[str, StringConstraints(max_length=316)],
        Annotated[str, StringConstraints(max_length=63)],
    ] = Field(min_length=1, max_length=16, description="Labels that identify the pool's nodes.")
    tolerations: list[Toleration] = Field(default_factory=list, max_length=16)
    max_concurrency: StrictInt = Field(4, ge=1, le=1000, description="Job slots per node.")
    force_failover: StrictBool = Field(
        False,
        description="When a node goes NotReady, force-delete its job pods and start replacements at once "
        "(faster failover; a partitioned node could briefly run a second copy). Without it, a replacement "
        "waits until the old pod is gone or the node object is deleted.",
    )
    resources: Resources | None = Field(
        None,
        description="Default resources of every job placed in this pool (a job's own "
        "resources override them by name).",
    )
    capability_resources: dict[Capability, Resources] = Field(
        default_factory=dict,
        max_length=32,
        description="Resources a job placed in this pool receives for each capability it "
        "requires, e.g. gpu: {limits: {nvidia.com/gpu: 1}}: a cpu job placed here gets no GPU.",
    )
    job_defaults: PodSettings | None = Field(
        None,
        description="Pod settings of every job placed in this pool (volumes, env, "
        "tolerations...), below the execution's defaults, the job's template and the job.",
    )
    policy: JobPolicy | None = Field(
        None,
        description="What jobs placed in this pool may use; unset: the install-wide policy.",
    )
    replicas: StrictInt | None = Field(
        None,
        ge=0,
        le=10_000,
        description="Desired nodes when not autoscaling (the /scale subresource).",
    )
    autoscaling: Autoscaling | None = None
    allowed_annotations: list[Annotated[str, StringConstraints(min_length=1, max_length=253)]] = (
        Field(
            default_factory=list,
            max_length=32,
            description="Kubernetes' own annotation keys (or key prefixes, e.g. "
            "container.apparmor.security.beta.kubernetes.io/) that jobs placed in this pool may "
            "set on their pods; without an entry here, a job setting one fails with a clear "
            "message.",
        )
    )


class JobTemplateSpec(JobSettings):
    """A job type: the settings of every job whose ``type`` is this
    template's name, below the job's own (``image``, ``command``...)."""

    description: Annotated[str, StringConstraints(max_length=1024)] | None = None


def visible_templates(
    found: Iterable[tuple[str, str, JobTemplateSpec]], namespace: str, shared: str | None
) -> dict[str, JobTemplateSpec]:
    """The JobTemplates jobs in ``namespace`` see, by name, from (namespace,
    name, spec) triples: the install's (``shared``), then the namespace's
    own, which win."""
    seen = sorted(
        (t for t in found if t[0] in (shared, namespace)), key=lambda t: t[0] == namespace
    )
    return {name: spec for _, name, spec in seen}
