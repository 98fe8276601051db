"""What became of each attempt: the outcome of one that ended in a pass, and
its record (kept per job, shown by the REST API and `dagwright jobs`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from dagwright.core.state import JobPhase, JobState, PodObservation

_IN_FLIGHT = (JobPhase.STARTING, JobPhase.RUNNING)


def outcome(before: JobState, after: JobState) -> str | None:
    """How the attempt ``before`` was running ended in ``after``, if it did:
    succeeded, user_failure (a non-zero exit, a refused pod), timeout,
    infrastructure_failure (its node was lost) or cancelled."""
    if after.phase is JobPhase.SUCCEEDED and before.phase is not JobPhase.SUCCEEDED:
        return "succeeded"
    if after.infra_failures > before.infra_failures:
        return "infrastructure_failure"
    if after.failures > before.failures:
        return "timeout" if after.message.startswith("timed out") else "user_failure"
    if after.phase is JobPhase.CANCELLED and before.phase is not JobPhase.CANCELLED:
        return "cancelled"
    return None


def ended(
    before: Mapping[str, JobState],
    after: Mapping[str, JobState],
    changed: Iterable[str],
    pods: Mapping[tuple[str, int], PodObservation],
    now: float,
) -> list[tuple[str, dict[str, Any]]]:
    """(job, record) of each attempt that ended in a pass."""
    records = []
    for name in changed:
        old, new = before.get(name), after[name]
        if old is None or not old.attempt:
            continue
        result = outcome(old, new)
        if result is None:
            continue
        pod = pods.get((name, old.attempt))
        records.append(
            (
                name,
                {
                    "attempt": old.attempt,
                    "outcome": result,
                    "pod": pod.name if pod is not None else None,
                    "node": (pod.node if pod is not None else None) or old.node,
                    "pool": old.pool,
                    "startedAt": old.started_at,
                    "finishedAt": new.finished_at or now,
                    "exitCode": new.exit_code,
                    "message": new.message,
                },
            )
        )
    return records
