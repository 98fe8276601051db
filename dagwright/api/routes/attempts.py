"""What a running job attempt reports: heartbeats (with its progress) and
checkpoints, and the latest checkpoint it resumes from.

Job pods hold no credentials to dagwright's state. They present a token the
kubelet projects into them (audience ``dagwright``), which the API server
binds to the pod: the pod's own identity (its controller, and the job and
attempt in its immutable environment) says which attempt is reporting.
Reports are accepted only while that attempt is the job's latest one; a
superseded attempt (still running on a partitioned node, say) gets a 409 and
its runtime stops the job."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from dagwright.api.auth import Attempt, PodCaller
from dagwright.api.deps import Services, Svc
from dagwright.api.errors import Problem
from dagwright.api.models import (
    AttemptAccepted,
    AttemptCheckpoint,
    AttemptHeartbeat,
    LatestCheckpoint,
    problems,
)
from dagwright.api.settings import PREFIX
from dagwright.kube.objects import controller_uid, identity, read_pod

PATH = f"{PREFIX}/attempts"
# The routes whose body is read: their caller is authenticated first (app.py).
WITH_BODY = {("POST", f"{PATH}/heartbeat"), ("POST", f"{PATH}/checkpoint")}
router = APIRouter(
    prefix=PATH, tags=["attempts"], responses=problems(401, 403, 409, 413, 422, 429, 503)
)


async def reporting(request: Request) -> Attempt:
    """The attempt whose pod sent the request (authenticated before its body was read)."""
    svc: Services = request.app.state.services
    pod: PodCaller | None = getattr(request.state, "pod", None)
    if pod is None:
        pod = await svc.auth.pod(request.headers.get("authorization", ""))
    cached = svc.attempts.get(pod.uid)
    if cached is not None:
        return cached
    found = await read_pod(svc.core, pod.namespace, pod.name)
    meta = (found or {}).get("metadata") or {}
    owner = controller_uid(meta)
    ident = identity(found) if found is not None else None
    if found is None or meta.get("uid") != pod.uid or owner is None or ident is None:
        raise Problem(403, f"pod {pod.namespace}/{pod.name} is not a dagwright job attempt")
    job, number, _ = ident
    execution = next(
        (str(r.get("name", "")) for r in meta.get("ownerReferences") or [] if r.get("controller")),
        "",
    )
    attempt = Attempt(execution, owner, job, number)
    svc.attempts[pod.uid] = attempt  # a pod's UID, owner and spec never change
    if len(svc.attempts) > 100_000:
        svc.attempts.pop(next(iter(svc.attempts)))
    return attempt


Reporting = Annotated[Attempt, Depends(reporting)]


def _accepted(attempt: Attempt) -> AttemptAccepted:
    return AttemptAccepted(execution_id=attempt.execution, job=attempt.job, attempt=attempt.number)


def _superseded(attempt: Attempt) -> Problem:
    return Problem(
        409,
        f"attempt {attempt.number} of job {attempt.job} is no longer the job's current one: "
        "stop; its reports are not recorded",
    )


@router.post("/heartbeat", response_model=AttemptAccepted)
async def heartbeat(body: AttemptHeartbeat, attempt: Reporting, svc: Svc) -> AttemptAccepted:
    # Lives past two missed beats, then the operator sees silence.
    ttl = 3 * float(body.interval_seconds)
    if not await svc.store.job_heartbeat(
        attempt.execution_uid, attempt.job, attempt.number, ttl, progress=body.progress
    ):
        raise _superseded(attempt)
    return _accepted(attempt)


@router.post("/checkpoint", response_model=AttemptAccepted)
async def checkpoint(body: AttemptCheckpoint, attempt: Reporting, svc: Svc) -> AttemptAccepted:
    if not await svc.store.save_checkpoint(
        attempt.execution_uid, attempt.job, attempt.number, body.path, body.step
    ):
        raise _superseded(attempt)
    return _accepted(attempt)


@router.get("/latest-checkpoint", response_model=LatestCheckpoint, responses=problems(404))
async def latest_checkpoint(attempt: Reporting, svc: Svc) -> LatestCheckpoint:
    """The newest checkpoint any attempt of the job saved."""
    found = (await svc.store.checkpoints(attempt.execution_uid, [attempt.job])).get(attempt.job)
    if found is None:
        raise Problem(404, f"job {attempt.job} has no checkpoint yet")
    return LatestCheckpoint(
        path=found["path"], step=found.get("step"), attempt=found.get("attempt")
    )
