"""Every name dagwright writes into Kubernetes, in one place: the API group,
the resources, the labels and annotations, and the environment a job pod is
given. Plain constants, no imports: the worker runtime in job pods reads the
environment contract from here too.

Labels and annotations are for finding and for people; identity is the owner
reference's UID and the pod's immutable environment (see ``operator/pods.py``).
"""

from __future__ import annotations

from typing import Final

GROUP: Final = "dagwright.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
EXECUTION_KIND: Final = "DAGExecution"
POOL_KIND: Final = "WorkerPool"
TEMPLATE_KIND: Final = "JobTemplate"
EXECUTIONS: Final = "dagexecutions"  # plurals, as the API paths spell them
POOLS: Final = "workerpools"
TEMPLATES: Final = "jobtemplates"

# --- labels ---------------------------------------------------------------------
MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_SELECTOR: Final = {MANAGED_BY: "dagwright"}
POD_SELECTOR: Final = f"{MANAGED_BY}=dagwright"  # the same, as a label selector
EXECUTION_LABEL: Final = f"{GROUP}/execution"
JOB_LABEL: Final = f"{GROUP}/job"
ATTEMPT_LABEL: Final = f"{GROUP}/attempt"
EPOCH_LABEL: Final = f"{GROUP}/epoch"
# On a job pod: the pool it was placed in. On a node: the pool whose machine
# template made it (only such nodes are ever cordoned for scale-down).
POOL_LABEL: Final = f"{GROUP}/pool"
WORKFLOW_LABEL: Final = f"{GROUP}/workflow"  # a REST execution's workflowId
SIMULATED_LABEL: Final = f"{GROUP}/simulated"  # nodes the dev cluster's KWOK fakes

# On a namespace: the Pod Security level its pods must meet (Kubernetes').
POD_SECURITY_LABEL: Final = "pod-security.kubernetes.io/enforce"

# --- annotations ------------------------------------------------------------------
# Not under "dagwright.io/": kopf keeps its handler progress there and purges it.
OWNER_ANNOTATION: Final = f"ownership.{GROUP}/instance"
OWNER_EPOCH_ANNOTATION: Final = f"ownership.{GROUP}/epoch"
SCALE_DOWN_ANNOTATION: Final = f"{GROUP}/scale-down"  # on a node cordoned for removal
DISPLAY_NAME_ANNOTATION: Final = f"{GROUP}/display-name"  # a REST job's display name
# On a job pod: its config as JSON, which a downward API volume makes a file.
CONFIG_ANNOTATION: Final = f"{GROUP}/config"


# The audience of the token projected into job pods: only dagwright's REST
# API accepts it (the Kubernetes API refuses it).
ATTEMPT_AUDIENCE: Final = "dagwright"


# All of a job's outputs together, as JSON: the kubelet's limit on a
# container's termination message, which carries them.
MAX_OUTPUT_BYTES = 4096


class PodEnv:
    """The environment variables a job pod's container is given. The
    operator writes them (``operator/pods.py``), the runtime and SDK read them
    (``worker/``), ``dagwright run --local`` sets the same ones."""

    EXECUTION: Final = "DAGWRIGHT_EXECUTION"
    EXECUTION_UID: Final = "DAGWRIGHT_EXECUTION_UID"
    NAMESPACE: Final = "DAGWRIGHT_NAMESPACE"
    JOB: Final = "DAGWRIGHT_JOB"
    JOB_TYPE: Final = "DAGWRIGHT_JOB_TYPE"
    ATTEMPT: Final = "DAGWRIGHT_ATTEMPT"
    POOL: Final = "DAGWRIGHT_POOL"
    CONFIG: Final = "DAGWRIGHT_CONFIG"  # the job's free JSON config
    CONFIG_FILE: Final = "DAGWRIGHT_CONFIG_FILE"  # the same, as a file (config.json)
    API_URL: Final = "DAGWRIGHT_API_URL"  # the REST API: heartbeats and checkpoints go there
    TOKEN_FILE: Final = "DAGWRIGHT_TOKEN_FILE"  # the pod's projected token for it
    CHECKPOINT_PATH: Final = "DAGWRIGHT_CHECKPOINT_PATH"  # the last checkpoint, to resume
    CHECKPOINT_STEP: Final = "DAGWRIGHT_CHECKPOINT_STEP"
    # Where a job with declared outputs writes them, as one JSON object (the
    # container's termination message file, read by the kubelet at its end).
    OUTPUTS_FILE: Final = "DAGWRIGHT_OUTPUTS_FILE"
    # A finally job's: how the other jobs ended, and which failed (comma-separated).
    EXECUTION_PHASE: Final = "DAGWRIGHT_EXECUTION_PHASE"
    FAILED_JOBS: Final = "DAGWRIGHT_FAILED_JOBS"
    # Set by the runtime for the user's process, not by the operator:
    PROGRESS_FILE: Final = "DAGWRIGHT_PROGRESS_FILE"
    HEARTBEAT_SECONDS: Final = "DAGWRIGHT_HEARTBEAT_SECONDS"
    GRACE_SECONDS: Final = "DAGWRIGHT_GRACE_SECONDS"
