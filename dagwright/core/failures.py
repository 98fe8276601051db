"""What kind of failure ended an attempt, and whether its retry policy
retries it.

The kinds, and the ``retryOn`` classes that retry them:

=========  ==============================================================  ==========================
kind       what happened                                                   retried by
=========  ==============================================================  ==========================
exit       the container exited with a non-zero code                       Always, OnFailure
oom        the container was OOM-killed (reason OOMKilled, exit 137)       Always, OnFailure, OnTransient
timeout    the attempt ran longer than the job's ``timeout``               Always, OnFailure
outputs    it exited 0 but its declared outputs were missing or invalid    Always, OnFailure
evicted    the kubelet evicted the pod (reason Evicted: node pressure)     Always, OnError, OnTransient
deleted    its pod was deleted while running (preemption, a person)        Always, OnError, OnTransient
start      it never started: image pull errors (ErrImagePull,              Always, OnError; image
           ImagePullBackOff), no room within ``startTimeout``, an          pulls also OnTransient
           invalid image name
refused    the API server refused to create its pod (a quota, a            Always, OnError, OnTransient
           throttle); an admission policy's refusal is never retried
=========  ==============================================================  ==========================

Attempts lost with their node (it died, or its worker went silent) are not
failures of the job: they are placed again, up to ``retryPolicy.infraRetries``.
"""

from __future__ import annotations

from dataclasses import dataclass

from dagwright.core import expr
from dagwright.core.spec import RetryOn, RetryPolicy

KINDS = ("exit", "oom", "timeout", "outputs", "evicted", "deleted", "start", "refused")
_CLASSES: dict[RetryOn, frozenset[str]] = {
    RetryOn.ALWAYS: frozenset(KINDS),
    RetryOn.ON_FAILURE: frozenset({"exit", "oom", "timeout", "outputs"}),
    RetryOn.ON_ERROR: frozenset({"evicted", "deleted", "start", "refused"}),
    RetryOn.ON_TRANSIENT: frozenset({"oom", "evicted", "deleted", "refused"}),
}
# Waiting reasons of a pod that never started that a later attempt may not meet.
TRANSIENT_START = ("ErrImagePull", "ImagePullBackOff", "Unschedulable")


@dataclass(frozen=True)
class Failure:
    kind: str
    exit_code: int | None = None
    reason: str = ""  # OOMKilled, Evicted, Error, ImagePullBackOff...


def of_pod(exit_code: int | None, reason: str) -> Failure:
    """A pod that ended Failed."""
    if reason == "Evicted":
        return Failure("evicted", exit_code, reason)
    if reason == "OOMKilled":
        return Failure("oom", exit_code, reason)
    if exit_code is None:  # failed before its container ran
        return Failure("start", None, reason)
    return Failure("exit", exit_code, reason or "Error")


def retried(policy: RetryPolicy, failure: Failure, attempt: int) -> tuple[bool, str]:
    """Whether the policy retries the failure (budget aside), and if not, why."""
    kinds = _CLASSES[policy.retry_on]
    transient_start = failure.kind == "start" and failure.reason.startswith(TRANSIENT_START)
    if failure.kind not in kinds and not (
        policy.retry_on is RetryOn.ON_TRANSIENT and transient_start
    ):
        return False, f"retryOn {policy.retry_on.value} does not retry a {failure.kind} failure"
    if policy.expression:
        names = {
            "exitCode": failure.exit_code,
            "reason": failure.reason,
            "kind": failure.kind,
            "attempt": attempt,
        }
        try:
            verdict = expr.truthy(
                expr.evaluate(expr.parse(policy.expression), lambda p: names[p.parts[0]])
            )
        except expr.ExprError as exc:
            return False, f"retry expression {policy.expression!r}: {exc}"
        if not verdict:
            return False, f"retry expression {policy.expression!r} is false"
    return True, ""
