"""Generate the CRDs from the pydantic models: one canonical source, so the
schema the apiserver enforces never drifts from the one the operator parses.

``python -m dagwright.crdgen`` rewrites ``crds/`` (and the chart's copy);
``tests/test_crds.py`` fails when they are out of date.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from dagwright.core.spec import DAGExecutionSpec, JobTemplateSpec, WorkerPoolSpec
from dagwright.core.status import DAGExecutionStatus, WorkerPoolStatus
from dagwright.names import EXECUTIONS, GROUP, POOLS, TEMPLATE_KIND, TEMPLATES, VERSION

REPO_ROOT = Path(__file__).resolve().parents[1]
# The repository's crds/ for kubectl users, and the chart's for Helm.
OUTPUT_DIRS = [REPO_ROOT / "crds", REPO_ROOT / "charts" / "dagwright" / "crds"]

_DROP = {"title"}


def structural(model: type[BaseModel]) -> dict[str, Any]:
    """A pydantic model's JSON schema as a Kubernetes structural schema:
    references inlined, ``Optional`` unwrapped, free JSON marked as such."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    defs = schema.pop("$defs", {})

    def convert(node: Any) -> Any:
        if isinstance(node, list):
            return [convert(item) for item in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            target = convert(defs[node["$ref"].rsplit("/", 1)[-1]])
            extra = {k: convert(v) for k, v in node.items() if k != "$ref" and k not in _DROP}
            return {**target, **extra}
        if "anyOf" in node:
            options = [o for o in node["anyOf"] if o.get("type") != "null"]
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            if len(options) == 1:
                merged = convert({**options[0], **rest})
                if merged.get("default", 0) is None:
                    del merged["default"]
                return merged
            raise ValueError(f"union types have no structural schema: {node}")
        if "patternProperties" in node:
            # Structural schemas have no patternProperties: keep the value
            # schema, the key pattern is checked by the operator (pydantic).
            node = dict(node)
            (value_schema,) = node.pop("patternProperties").values()
            node.pop("propertyNames", None)
            node["additionalProperties"] = value_schema
        node = {k: v for k, v in node.items() if k != "propertyNames"}
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _DROP:
                continue
            if key == "default" and value is None:
                continue
            if key == "properties":
                out[key] = {name: convert(sub) for name, sub in value.items()}
            elif key == "additionalProperties":
                if value is True or value == {}:
                    out["x-kubernetes-preserve-unknown-fields"] = True
                elif value is not False:
                    out[key] = convert(value)
            else:
                out[key] = convert(value)
        if (
            out.get("type") == "object"
            and "properties" not in out
            and "additionalProperties" not in out
        ):
            out["x-kubernetes-preserve-unknown-fields"] = True
        if not out:  # any JSON value (a sweep's items)
            out["x-kubernetes-preserve-unknown-fields"] = True
        if "enum" in out and "type" not in out:
            out["type"] = "string"
        if out.get("type") == "integer" and isinstance(out.get("default"), float):
            out["default"] = int(out["default"])
        return out

    result: dict[str, Any] = convert(schema)
    return result


def _crd(
    kind: str,
    plural: str,
    short: str,
    spec_schema: dict[str, Any],
    status_schema: dict[str, Any] | None,
    columns: list[dict[str, Any]],
    validations: list[dict[str, str]] | None = None,
    scope: str = "Namespaced",
) -> dict[str, Any]:
    top: dict[str, Any] = {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema,
        },
    }
    if status_schema is not None:
        top["properties"]["status"] = status_schema
    if validations:
        top["x-kubernetes-validations"] = validations
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": scope,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                "categories": ["dagwright"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": top},
                    "subresources": {"status": {}} if status_schema is not None else {},
                    "additionalPrinterColumns": columns,
                }
            ],
        },
    }


def dagexecution_crd() -> dict[str, Any]:
    spec = structural(DAGExecutionSpec)
    # Graph rules that are cheap enough for the apiserver's CEL cost budget at
    # 10,000 jobs; cycles and unknown dependencies are checked by the operator.
    job = spec["properties"]["jobs"]["items"]
    job["x-kubernetes-validations"] = [
        {
            "rule": "!has(self.dependsOn) || !(self.name in self.dependsOn)",
            "message": "a job cannot depend on itself",
        }
    ]
    # What a running execution is made of cannot change under it: jobs
    # removed or rewritten mid-run would leave pods running unseen, or make
    # finished work mean something else. The controls (suspend, shutdown,
    # parallelism, priority, podGC) stay editable.
    spec["x-kubernetes-validations"] = [
        {
            "rule": "self.jobs == oldSelf.jobs",
            "message": "spec.jobs cannot change once the execution exists; "
            "create a new execution instead",
        },
        {
            "rule": "has(self.defaults) == has(oldSelf.defaults) && "
            "(!has(self.defaults) || self.defaults == oldSelf.defaults)",
            "message": "spec.defaults cannot change once the execution exists; "
            "create a new execution instead",
        },
    ]
    columns: list[dict[str, Any]] = [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Progress", "type": "string", "jsonPath": ".status.progress"},
        {"name": "Running", "type": "integer", "jsonPath": ".status.counts.running"},
        {"name": "Failed", "type": "integer", "jsonPath": ".status.counts.failed"},
        {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    # Labels of pods hold the name: keep it a DNS label.
    validations = [
        {
            "rule": "self.metadata.name.size() <= 63",
            "message": "metadata.name must be at most 63 characters",
        },
        # An ended execution's controls no longer do anything: say so rather
        # than accept an edit that is silently ignored. (Jobs and defaults
        # never change, by the spec's own rules; these are the rest.)
        {
            "rule": "!has(oldSelf.status) || !has(oldSelf.status.phase) || "
            "!(oldSelf.status.phase in ['Succeeded', 'Failed', 'Cancelled']) || "
            "(has(self.spec.retry) && self.spec.retry > "
            "(has(oldSelf.spec.retry) ? oldSelf.spec.retry : 0)) || ("
            + " && ".join(
                f"has(self.spec.{f}) == has(oldSelf.spec.{f}) && "
                f"(!has(self.spec.{f}) || self.spec.{f} == oldSelf.spec.{f})"
                for f in ("priority", "parallelism", "suspend", "shutdown", "podGC", "retry")
            )
            + ")",
            "message": "the execution has ended, so its spec cannot change: run what failed "
            "again with `dagwright retry` (spec.retry + 1), or all of it as a new execution "
            "with `dagwright resubmit`",
        },
    ]
    crd = _crd(
        "DAGExecution",
        EXECUTIONS,
        "dagx",
        spec,
        structural(DAGExecutionStatus),
        columns,
        validations,
    )
    # `kubectl get dagx --field-selector status.phase=Failed`, and the REST
    # list's phase filter, served by the API server (Kubernetes 1.31+).
    crd["spec"]["versions"][0]["selectableFields"] = [{"jsonPath": ".status.phase"}]
    return crd


def workerpool_crd() -> dict[str, Any]:
    columns: list[dict[str, Any]] = [
        {"name": "Capabilities", "type": "string", "jsonPath": ".spec.capabilities"},
        {"name": "Ready", "type": "integer", "jsonPath": ".status.readyNodes"},
        {"name": "Nodes", "type": "integer", "jsonPath": ".status.nodes"},
        {"name": "Used", "type": "integer", "jsonPath": ".status.slotsUsed"},
        {"name": "Slots", "type": "integer", "jsonPath": ".status.slots"},
        {"name": "Queued", "type": "integer", "jsonPath": ".status.queued"},
        {"name": "Desired", "type": "integer", "jsonPath": ".status.desiredNodes"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    crd = _crd(
        "WorkerPool",
        POOLS,
        "wp",
        structural(WorkerPoolSpec),
        structural(WorkerPoolStatus),
        columns,
        # Cluster-scoped: a pool is a set of nodes, which every namespace's jobs share.
        scope="Cluster",
    )
    # `kubectl scale wp gpu --replicas=3`, or an HPA/KEDA, sets the desired nodes.
    crd["spec"]["versions"][0]["subresources"]["scale"] = {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.readyNodes",
    }
    return crd


def jobtemplate_crd() -> dict[str, Any]:
    columns: list[dict[str, Any]] = [
        {"name": "Image", "type": "string", "jsonPath": ".spec.image"},
        {"name": "Requires", "type": "string", "jsonPath": ".spec.requires"},
        {"name": "Description", "type": "string", "jsonPath": ".spec.description"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return _crd(TEMPLATE_KIND, TEMPLATES, "jt", structural(JobTemplateSpec), None, columns)


def render() -> dict[str, str]:
    """File name -> YAML text."""
    header = "# Generated by `python -m dagwright.crdgen` from dagwright/core; do not edit.\n"
    return {
        f"{GROUP}_{EXECUTIONS}.yaml": header + yaml.safe_dump(dagexecution_crd(), sort_keys=False),
        f"{GROUP}_{POOLS}.yaml": header + yaml.safe_dump(workerpool_crd(), sort_keys=False),
        f"{GROUP}_{TEMPLATES}.yaml": header + yaml.safe_dump(jobtemplate_crd(), sort_keys=False),
    }


def main() -> int:
    for directory in OUTPUT_DIRS:
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in render().items():
            (directory / name).write_text(text)
            print(directory / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
