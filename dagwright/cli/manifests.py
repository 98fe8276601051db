"""Reading what a user hands the CLI: a DAGExecution manifest (YAML or JSON)
or the seed's execute JSON, turned into the one DAGExecution object the
operator runs. The REST API builds the same object from the same JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from dagwright.core.graph import build_dag
from dagwright.core.spec import DAGExecutionSpec
from dagwright.core.workflow import ExecuteRequest
from dagwright.errors import InvalidDag, ManifestError
from dagwright.names import GROUP, VERSION


def load_execution(path: Path) -> dict[str, Any]:
    """The DAGExecution in ``path``, checked as the API server and operator would."""
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    except (OSError, yaml.YAMLError) as exc:
        raise ManifestError(f"{path}: {exc}") from exc
    executions = [d for d in documents if isinstance(d, dict) and d.get("kind") == "DAGExecution"]
    if executions:
        if len(executions) > 1:
            raise ManifestError(f"{path}: holds {len(executions)} DAGExecutions; give one per file")
        manifest = executions[0]
    elif len(documents) == 1 and isinstance(documents[0], dict) and "workflowId" in documents[0]:
        try:
            manifest = ExecuteRequest.model_validate(documents[0]).to_manifest()
        except (ValidationError, ValueError) as exc:
            raise ManifestError(f"{path}: not a valid execute request:\n{exc}") from exc
    else:
        raise ManifestError(
            f"{path}: neither a DAGExecution manifest (kind: DAGExecution) "
            "nor an execute request (an object with workflowId and jobs)"
        )
    api_version = manifest.get("apiVersion")
    if api_version != f"{GROUP}/{VERSION}":
        raise ManifestError(f"{path}: apiVersion is {api_version!r}, expected {GROUP}/{VERSION}")
    metadata = manifest.get("metadata") or {}
    if not (metadata.get("name") or metadata.get("generateName")):
        raise ManifestError(f"{path}: metadata.name (or generateName) is missing")
    try:
        build_dag(DAGExecutionSpec.model_validate(manifest.get("spec") or {}))
    except ValidationError as exc:
        raise ManifestError(f"{path}: invalid spec:\n{exc}") from exc
    except InvalidDag as exc:
        raise ManifestError(f"{path}: invalid DAG: {'; '.join(exc.problems)}") from exc
    return manifest
