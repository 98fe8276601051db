"""Executions: create one from the seed's workflow format, read it, suspend,
resume and cancel it. Each is a DAGExecution object; nothing is kept here."""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from dagwright.api.auth import Caller
from dagwright.api.deps import ExecutionId, Namespace, Services, Svc, Who, guarded_router
from dagwright.api.errors import Problem
from dagwright.api.models import CancelRequest, ExecutionCreated, ExecutionState, problems
from dagwright.core.graph import build_dag
from dagwright.core.workflow import ExecuteRequest
from dagwright.errors import InvalidDag
from dagwright.kube.client import error_message, merge_patch
from dagwright.kube.objects import list_pools, list_templates
from dagwright.names import EXECUTIONS, GROUP, VERSION, WORKFLOW_LABEL

router = guarded_router("/execute", "executions")


@router.post("", status_code=201, response_model=ExecutionCreated, responses=problems(404, 409))
async def execute(body: ExecuteRequest, svc: Svc, caller: Who) -> ExecutionCreated:
    """Create a DAGExecution from the seed's JSON; returns its executionId."""
    namespace = svc.namespace(body.namespace)
    await svc.allow(caller, "create", EXECUTIONS, namespace)
    try:
        spec = body.to_spec()
    except ValueError as exc:
        raise Problem(422, "invalid DAG", str(exc)) from exc
    try:
        pools = await list_pools(svc.objects)
        templates = await list_templates(svc.objects, namespace, svc.settings.template_namespace)
    except ApiException as exc:
        raise Problem(
            502, "the API could not read the WorkerPools and JobTemplates", error_message(exc)
        ) from exc
    try:
        build_dag(spec, pools, templates, svc.settings.job_policy)
    except InvalidDag:
        raise  # a 422 listing every problem (api/errors.py), not a Failed object later
    except ValueError as exc:
        raise Problem(422, "invalid DAG", str(exc)) from exc
    manifest = body.to_manifest(spec)
    name = manifest["metadata"]["name"]
    try:
        await svc.objects.create_namespaced_custom_object(
            GROUP, VERSION, namespace, EXECUTIONS, manifest
        )
    except ApiException as exc:
        if exc.status == 409:
            raise Problem(409, f"execution {name} already exists in {namespace}") from exc
        raise
    return ExecutionCreated(
        execution_id=name,
        namespace=namespace,
        workflow_id=body.workflow_id,
        jobs=len(spec.jobs),
    )


async def _get(svc: Services, name: str, namespace: str) -> dict[str, Any]:
    try:
        obj: dict[str, Any] = await svc.objects.get_namespaced_custom_object(
            GROUP, VERSION, namespace, EXECUTIONS, name
        )
    except ApiException as exc:
        if exc.status == 404:
            raise Problem(404, f"execution {name} not found in {namespace}") from exc
        raise
    return obj


def _state(namespace: str, obj: dict[str, Any]) -> ExecutionState:
    status = obj.get("status") or {}
    spec = obj.get("spec") or {}
    return ExecutionState(
        execution_id=obj["metadata"]["name"],
        namespace=namespace,
        workflow_id=(obj["metadata"].get("labels") or {}).get(WORKFLOW_LABEL),
        phase=status.get("phase"),
        message=status.get("message", ""),
        progress=status.get("progress", ""),
        counts=status.get("counts") or {},
        jobs=status.get("jobs"),
        suspended=bool(spec.get("suspend")),
        shutdown=spec.get("shutdown"),
    )


@router.get("/{execution_id}", response_model=ExecutionState, responses=problems(404))
async def get_execution(
    execution_id: ExecutionId, svc: Svc, caller: Who, namespace: Namespace = None
) -> ExecutionState:
    ns = svc.namespace(namespace)
    await svc.allow(caller, "get", EXECUTIONS, ns)
    return _state(ns, await _get(svc, execution_id, ns))


async def _patch_spec(
    svc: Services, caller: Caller, name: str, namespace: str | None, patch: dict[str, Any]
) -> ExecutionState:
    ns = svc.namespace(namespace)
    await svc.allow(caller, "patch", EXECUTIONS, ns)
    await _get(svc, name, ns)  # a 404 that names the execution, before the patch
    obj = await merge_patch(
        svc.objects, EXECUTIONS, name, {"spec": patch}, namespace=ns, decode=True
    )
    return _state(ns, obj)


@router.post("/{execution_id}/suspend", response_model=ExecutionState, responses=problems(404))
async def suspend(
    execution_id: ExecutionId, svc: Svc, caller: Who, namespace: Namespace = None
) -> ExecutionState:
    return await _patch_spec(svc, caller, execution_id, namespace, {"suspend": True})


@router.post("/{execution_id}/resume", response_model=ExecutionState, responses=problems(404))
async def resume(
    execution_id: ExecutionId, svc: Svc, caller: Who, namespace: Namespace = None
) -> ExecutionState:
    return await _patch_spec(svc, caller, execution_id, namespace, {"suspend": False})


@router.post("/{execution_id}/cancel", response_model=ExecutionState, responses=problems(404))
async def cancel(
    execution_id: ExecutionId,
    svc: Svc,
    caller: Who,
    body: CancelRequest | None = None,
    namespace: Namespace = None,
) -> ExecutionState:
    mode = (body or CancelRequest()).mode
    return await _patch_spec(svc, caller, execution_id, namespace, {"shutdown": mode.value})
