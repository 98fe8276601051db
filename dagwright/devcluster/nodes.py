"""Simulated (KWOK) nodes and pods whose fate is set by annotations."""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio import client

from dagwright.devcluster.cluster import KWOK_ANNOTATION
from dagwright.names import SIMULATED_LABEL

SIM_DURATION = "sim.dagwright.io/duration"
SIM_EXIT_CODE = "sim.dagwright.io/exit-code"


def sim_annotations(duration: str = "1s", exit_code: int | None = None) -> dict[str, str]:
    """Annotations that make KWOK finish a pod after ``duration``: Succeeded,
    or Failed with ``exit_code`` when one is given."""
    annotations = {SIM_DURATION: duration}
    if exit_code is not None:
        annotations[SIM_EXIT_CODE] = str(exit_code)
    return annotations


def node_manifest(
    name: str,
    *,
    tag: str,
    labels: dict[str, str] | None = None,
    cpu: str = "32",
    memory: str = "256Gi",
    gpus: int = 0,
    pods: int = 110,
    taints: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """A Node that the KWOK controller annotated with ``tag`` will keep alive."""
    resources = {"cpu": cpu, "memory": memory, "pods": str(pods)}
    if gpus:
        resources["nvidia.com/gpu"] = str(gpus)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_ANNOTATION: tag, "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                SIMULATED_LABEL: "true",
                **(labels or {}),
            },
        },
        "spec": {"taints": taints or []},
        "status": {"allocatable": resources, "capacity": resources},
    }


def node_ready(node: client.V1Node) -> bool:
    for condition in (node.status and node.status.conditions) or []:
        if condition.type == "Ready":
            return bool(condition.status == "True")
    return False
