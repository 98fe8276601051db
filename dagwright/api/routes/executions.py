"""Executions: create one from the seed's workflow format, read it, suspend,
resume and cancel it. Each is a DAGExecution object; nothing is kept here."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Path, Query
from fastapi.responses import StreamingResponse
from kubernetes_asyncio.client.exceptions import ApiException

from dagwright.api.auth import Caller
from dagwright.api.deps import (
    ExecutionId,
    GraphShape,
    Namespace,
    Services,
    Svc,
    Who,
    guarded_router,
)
from dagwright.api.errors import Problem
from dagwright.api.models import (
    AttemptRecord,
    CancelRequest,
    Deleted,
    EventRecord,
    ExecutionCreated,
    ExecutionGraph,
    ExecutionList,
    ExecutionState,
    ExecutionSummary,
    JobDetail,
    JobList,
    JobView,
    problems,
)
from dagwright.core import sweeps
from dagwright.core.graph import Dag, build_dag
from dagwright.core.spec import DNS_LABEL, DAGExecutionSpec
from dagwright.core.state import ENDED_PHASES, ExecutionPhase, JobPhase, JobState
from dagwright.core.status import iso
from dagwright.core.workflow import ExecuteRequest
from dagwright.errors import InvalidDag
from dagwright.kube.client import error_message, merge_patch
from dagwright.kube.objects import controller_uid, identity, list_pools, list_templates, pod_log
from dagwright.names import EXECUTION_LABEL, EXECUTIONS, GROUP, JOB_LABEL, VERSION, WORKFLOW_LABEL

router = guarded_router("/execute", "executions")
JobName = Annotated[str, Path(pattern=DNS_LABEL, max_length=63, description="A job's name.")]


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
        dag = build_dag(spec, pools, templates, svc.settings.job_policy)
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
        jobs=len(dag.jobs),
    )


@router.get("", response_model=ExecutionList)
async def list_executions(
    svc: Svc,
    caller: Who,
    namespace: Namespace = None,
    phase: Annotated[ExecutionPhase | None, Query(description="Only executions in it.")] = None,
    selector: Annotated[
        str | None,
        Query(max_length=1024, description="A label selector, e.g. dagwright.io/workflow=nightly."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    continue_: Annotated[
        str | None, Query(alias="continue", max_length=4096, description="From the last page.")
    ] = None,
) -> ExecutionList:
    """Executions of a namespace, newest page first as the API server pages them."""
    ns = svc.namespace(namespace)
    await svc.allow(caller, "list", EXECUTIONS, ns)
    try:
        query: dict[str, Any] = {"limit": limit}
        if continue_:
            query["_continue"] = continue_
        if selector:
            query["label_selector"] = selector
        if phase:  # served by the API server: the CRD makes status.phase selectable
            query["field_selector"] = f"status.phase={phase.value}"
        page: dict[str, Any] = await svc.objects.list_namespaced_custom_object(
            GROUP, VERSION, ns, EXECUTIONS, **query
        )
    except ApiException as exc:
        if exc.status in (400, 410):  # a malformed selector, an expired continue token
            raise Problem(exc.status, "cannot list executions", error_message(exc)) from exc
        raise
    items = [ExecutionSummary.of(ns, obj) for obj in page.get("items") or []]
    return ExecutionList(
        items=items, continue_=(page.get("metadata") or {}).get("continue") or None
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


@router.get("/{execution_id}/jobs", response_model=JobList, responses=problems(404))
async def list_jobs(
    execution_id: ExecutionId,
    svc: Svc,
    caller: Who,
    namespace: Namespace = None,
    phase: Annotated[JobPhase | None, Query(description="Only jobs in it.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    continue_: Annotated[
        str | None,
        Query(alias="continue", pattern=r"^[0-9]{1,6}$", description="From the last page."),
    ] = None,
) -> JobList:
    """Every job's state, at any DAG size (the status lists jobs only up to
    200), in the spec's order, filtered by phase and paged."""
    ns = svc.namespace(namespace)
    await svc.allow(caller, "get", EXECUTIONS, ns)
    obj = await _get(svc, execution_id, ns)
    uid = obj["metadata"]["uid"]
    states = await svc.store.load(uid)
    names = _job_names(obj)
    fresh = JobState()
    matching = [
        (name, states.get(name, fresh))
        for name in names
        if phase is None or states.get(name, fresh).phase is phase
    ]
    start = int(continue_ or 0)
    page = matching[start : start + limit]
    shown = [name for name, _ in page]
    checkpoints = await svc.store.checkpoints(uid, shown)
    beats = await svc.store.job_heartbeats(uid, shown)
    records = await svc.store.attempt_records(uid, shown)
    items = [
        _job(name, state, checkpoints.get(name), beats.get(name), records.get(name, []))
        for name, state in page
    ]
    more = start + limit < len(matching)
    return JobList(items=items, total=len(matching), continue_=str(start + limit) if more else None)


def _job(
    name: str,
    state: JobState,
    checkpoint: dict[str, Any] | None,
    beat: dict[str, Any] | None,
    records: list[dict[str, Any]],
) -> JobDetail:
    finished = state.finished_at if state.phase.terminal else None
    end = finished or (time.time() if state.started_at else None)
    return JobDetail(
        name=name,
        phase=state.phase.value,
        attempt=state.attempt,
        failures=state.failures,
        infra_failures=state.infra_failures,
        pool=state.pool,
        node=state.node,
        created_at=state.created_at,
        started_at=iso(state.started_at),
        finished_at=iso(finished),
        duration_seconds=round(end - state.started_at, 3) if end and state.started_at else None,
        exit_code=state.exit_code,
        message=state.message,
        progress=(beat or {}).get("progress"),
        checkpoint_step=(checkpoint or {}).get("step"),
        checkpoint_path=(checkpoint or {}).get("path"),
        outputs=state.outputs,
        attempts=[AttemptRecord.model_validate(r) for r in records],
    )


@router.get(
    "/{execution_id}/jobs/{job}/logs",
    response_class=StreamingResponse,
    responses={
        **problems(404),
        200: {"content": {"text/plain": {}}, "description": "The log, streamed."},
    },
)
async def job_logs(
    execution_id: ExecutionId,
    job: JobName,
    svc: Svc,
    caller: Who,
    namespace: Namespace = None,
    attempt: Annotated[
        int | None, Query(ge=1, le=100_000, description="Default: the latest.")
    ] = None,
    follow: Annotated[bool, Query(description="Keep streaming while it runs.")] = False,
    tail: Annotated[int | None, Query(ge=1, le=100_000, description="Only the last lines.")] = None,
) -> StreamingResponse:
    """A job attempt's log: from its pod while the pod exists (followed live
    with ``follow``), else the tail kept when the attempt failed."""
    ns = svc.namespace(namespace)
    await svc.allow(caller, "get", EXECUTIONS, ns)
    await svc.allow(caller, "get", "pods", ns, group="", subresource="log")
    obj = await _get(svc, execution_id, ns)
    uid = obj["metadata"]["uid"]
    states = await svc.store.load(uid)
    if job not in _job_names(obj):
        raise Problem(404, f"execution {execution_id} has no job {job}")
    number = attempt or (states[job].attempt if job in states else 0)
    if not number:
        raise Problem(404, f"job {job} of {execution_id} has not started yet")
    pod = await _attempt_pod(svc, ns, execution_id, uid, job, number)
    if pod is not None:
        response = await pod_log(svc.core, ns, pod, follow=follow, tail_lines=tail)

        async def stream() -> AsyncIterator[bytes]:
            async with response:
                async for chunk in response.content.iter_any():
                    yield chunk

        return StreamingResponse(
            stream(), media_type="text/plain", headers={"X-Dagwright-Log": f"pod {pod}"}
        )
    kept = await svc.store.kept_log(uid, job, number)
    if kept is None:
        raise Problem(
            404,
            f"no log of job {job} attempt {number}: its pod is gone, and only failed "
            "attempts' logs are kept beyond their pods",
        )
    if tail is not None:
        kept = "".join(kept.splitlines(keepends=True)[-tail:])
    return StreamingResponse(
        iter([kept.encode()]),
        media_type="text/plain",
        headers={"X-Dagwright-Log": "kept (the pod is gone)"},
    )


def _job_names(obj: dict[str, Any]) -> list[str]:
    """The execution's jobs in the spec's order, sweeps expanded."""
    return sweeps.names((obj.get("spec") or {}).get("jobs") or [])


async def _attempt_pod(
    svc: Services, namespace: str, execution: str, uid: str, job: str, attempt: int
) -> str | None:
    """The name of the pod of that attempt: found by labels, believed only
    for what nobody can edit (its controller's UID, its environment)."""
    listing = await svc.core.list_namespaced_pod(
        namespace, label_selector=f"{EXECUTION_LABEL}={execution},{JOB_LABEL}={job}"
    )
    for pod in listing.items:
        raw = svc.kube.sanitize_for_serialization(pod)
        if controller_uid(raw.get("metadata") or {}) != uid:
            continue
        found = identity(raw)
        if (
            found is not None
            and found[:2] == (job, attempt)
            and not pod.metadata.deletion_timestamp
        ):
            return str(pod.metadata.name)
    return None


@router.delete("/{execution_id}", response_model=Deleted, responses=problems(404))
async def delete_execution(
    execution_id: ExecutionId, svc: Svc, caller: Who, namespace: Namespace = None
) -> Deleted:
    """Delete the execution: its pods go with it (owner references), its
    slots and queue places are freed at once."""
    ns = svc.namespace(namespace)
    await svc.allow(caller, "delete", EXECUTIONS, ns)
    try:
        await svc.objects.delete_namespaced_custom_object(
            GROUP, VERSION, ns, EXECUTIONS, execution_id
        )
    except ApiException as exc:
        if exc.status == 404:
            raise Problem(404, f"execution {execution_id} not found in {ns}") from exc
        raise
    return Deleted(execution_id=execution_id, namespace=ns)


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


@router.post("/{execution_id}/retry", response_model=ExecutionState, responses=problems(404, 409))
async def retry(
    execution_id: ExecutionId, svc: Svc, caller: Who, namespace: Namespace = None
) -> ExecutionState:
    """Run the failed, skipped and cancelled jobs of an ended execution again
    (succeeded jobs keep their results): ``spec.retry`` + 1."""
    ns = svc.namespace(namespace)
    await svc.allow(caller, "patch", EXECUTIONS, ns)
    obj = await _get(svc, execution_id, ns)
    phase = (obj.get("status") or {}).get("phase")
    if phase not in ENDED_PHASES:
        raise Problem(
            409, f"execution {execution_id} has not ended ({phase or 'Pending'}): nothing to retry"
        )
    patch = {"retry": int((obj.get("spec") or {}).get("retry") or 0) + 1}
    return await _patch_spec(
        svc, caller, execution_id, namespace, {**patch, "shutdown": None, "suspend": False}
    )


def _dag(name: str, obj: dict[str, Any]) -> Dag:
    """The execution's DAG, sweeps expanded (pools and templates aside)."""
    try:
        return build_dag(DAGExecutionSpec.model_validate(obj.get("spec") or {}))
    except (InvalidDag, ValueError) as exc:
        raise Problem(422, f"execution {name} is invalid", str(exc)) from exc


@router.get("/{execution_id}/graph", response_model=ExecutionGraph, responses=problems(404))
async def execution_graph(
    execution_id: ExecutionId, svc: Svc, caller: Who, namespace: Namespace = None
) -> ExecutionGraph:
    """The DAG with every job's phase, compact at any size (the web
    console's graph): jobs in topological order, dependencies as indexes."""
    ns = svc.namespace(namespace)
    await svc.allow(caller, "get", EXECUTIONS, ns)
    obj = await _get(svc, execution_id, ns)
    meta = obj["metadata"]
    shape = svc.graphs.get((meta["uid"], meta.get("generation")))
    if shape is None:
        dag = _dag(execution_id, obj)
        index = {name: i for i, name in enumerate(dag.jobs)}
        shape = GraphShape(
            names=list(dag.jobs),
            deps=[[index[d] for d in job.depends_on] for job in dag.jobs.values()],
            sweeps={name: [index[m] for m in members] for name, members in dag.sweeps.items()},
            finally_jobs=[index[n] for n in dag.finally_jobs],
        )
        svc.graphs.put((meta["uid"], meta.get("generation")), shape)
    states = await svc.store.load(meta["uid"])
    fresh = JobState()
    found = [states.get(n, fresh) for n in shape.names]
    return ExecutionGraph(
        execution_id=execution_id,
        namespace=ns,
        phase=(obj.get("status") or {}).get("phase"),
        names=shape.names,
        deps=shape.deps,
        phases=[state.phase.value for state in found],
        attempts=[state.attempt for state in found],
        sweeps=shape.sweeps,
        finally_jobs=shape.finally_jobs,
        state=_state(ns, obj),
    )


@router.post(
    "/{execution_id}/resubmit",
    status_code=201,
    response_model=ExecutionCreated,
    responses=problems(404),
)
async def resubmit(
    execution_id: ExecutionId, svc: Svc, caller: Who, namespace: Namespace = None
) -> ExecutionCreated:
    """A new execution of the same spec (every job runs again), named after it."""
    ns = svc.namespace(namespace)
    await svc.allow(caller, "create", EXECUTIONS, ns)
    obj = await _get(svc, execution_id, ns)
    spec = {k: v for k, v in (obj.get("spec") or {}).items() if k not in ("retry", "shutdown")}
    labels = obj["metadata"].get("labels") or {}
    manifest = {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "metadata": {"generateName": f"{execution_id[:56]}-", "labels": labels},
        "spec": {**spec, "suspend": False},
    }
    created = await svc.objects.create_namespaced_custom_object(
        GROUP, VERSION, ns, EXECUTIONS, manifest
    )
    return ExecutionCreated(
        execution_id=created["metadata"]["name"],
        namespace=ns,
        workflow_id=labels.get(WORKFLOW_LABEL, ""),
        jobs=len(_job_names(obj)),
    )


@router.get("/{execution_id}/events", response_model=list[EventRecord], responses=problems(404))
async def execution_events(
    execution_id: ExecutionId,
    svc: Svc,
    caller: Who,
    namespace: Namespace = None,
    job: Annotated[str | None, Query(pattern=DNS_LABEL, max_length=63)] = None,
) -> list[EventRecord]:
    """The execution's Kubernetes Events (the newest last), or one job's."""
    ns = svc.namespace(namespace)
    await svc.allow(caller, "get", EXECUTIONS, ns)
    await svc.allow(caller, "list", "events", ns, group="")
    obj = await _get(svc, execution_id, ns)
    listing = await svc.core.list_namespaced_event(
        ns, field_selector=f"involvedObject.uid={obj['metadata']['uid']}"
    )
    found = []
    for event in listing.items:
        message = event.message or ""
        if job is not None and not message.startswith((f"job {job} ", f"job {job}:")):
            continue
        at = event.last_timestamp or event.event_time or event.metadata.creation_timestamp
        found.append(
            EventRecord(
                type=event.type or "",
                reason=event.reason or "",
                message=message,
                count=event.count or 1,
                at=at.isoformat() if at else None,
            )
        )
    found.sort(key=lambda e: e.at or "")
    return found[-500:]


@router.get("/{execution_id}/jobs/{job}", response_model=JobView, responses=problems(404))
async def get_job(
    execution_id: ExecutionId, job: JobName, svc: Svc, caller: Who, namespace: Namespace = None
) -> JobView:
    """One job: its state and attempts, and what it runs (resolved from the
    spec, its defaults and its sweep item; templates as written)."""
    ns = svc.namespace(namespace)
    await svc.allow(caller, "get", EXECUTIONS, ns)
    obj = await _get(svc, execution_id, ns)
    spec = _dag(execution_id, obj).jobs.get(job)
    if spec is None:
        raise Problem(404, f"execution {execution_id} has no job {job}")
    uid = obj["metadata"]["uid"]
    state = (await svc.store.load(uid)).get(job, JobState())
    checkpoints = await svc.store.checkpoints(uid, [job])
    beats = await svc.store.job_heartbeats(uid, [job])
    records = await svc.store.attempt_records(uid, [job])
    detail = _job(job, state, checkpoints.get(job), beats.get(job), records.get(job, []))
    return JobView(
        **detail.model_dump(),
        image=spec.image,
        command=list(spec.command) if spec.command is not None else None,
        args=list(spec.args) if spec.args is not None else None,
        config=dict(spec.config) if spec.config is not None else None,
        depends_on=list(spec.depends_on),
        requires=sorted(spec.requires),
        retries=spec.retries,
        infra_retries=spec.infra_retries,
        declared_outputs=list(spec.outputs),
        when=spec.when,
        item=spec.item,
        finally_=spec.finally_on.value if spec.finally_on else None,
    )
