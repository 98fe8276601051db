"""Rebuild job states from the Kubernetes side when Redis lost them.

The pods (each names its job and attempt in its immutable spec) and the
record of finished jobs in the DAGExecution status are the durable record;
from them this derives states that never start again a job that already
ran or is running.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from dagwright.core.graph import Dag
from dagwright.core.inputs import parse_outputs
from dagwright.core.state import JobPhase, JobState, PodObservation, PodPhase


def rebuild(
    dag: Dag,
    pods: Iterable[PodObservation],
    recorded: Mapping[str, JobPhase] | None = None,
    now: float = 0.0,
) -> dict[str, JobState]:
    """States from observed pods, and from the outcomes the status record
    holds (``recorded``): a job recorded as succeeded or failed has ended,
    whatever pods are left of it."""
    by_job: dict[str, list[PodObservation]] = {}
    for pod in pods:
        if pod.job in dag.jobs:
            by_job.setdefault(pod.job, []).append(pod)
    states: dict[str, JobState] = {}
    for name in dag.jobs:
        ended = recorded.get(name) if recorded else None
        attempts = sorted(by_job.get(name, []), key=lambda p: p.attempt)
        if ended in (JobPhase.SUCCEEDED, JobPhase.FAILED):
            # The outputs are on the pod that succeeded, while it is kept.
            won = [p for p in attempts if p.phase is PodPhase.SUCCEEDED]
            kept = parse_outputs(dag.jobs[name], won[-1].message)[0] if won else {}
            states[name] = JobState(
                phase=ended, message="as recorded in the status", outputs=kept or None
            )
            continue
        failures = sum(1 for p in attempts if p.phase is PodPhase.FAILED)
        if attempts:
            latest = attempts[-1]
            outputs: dict[str, object] = {}
            if latest.phase is PodPhase.SUCCEEDED:
                outputs, wrong = parse_outputs(dag.jobs[name], latest.message)
                # Outputs that do not parse: reconcile fails (or retries) the attempt.
                phase = JobPhase.STARTING if wrong else JobPhase.SUCCEEDED
            elif latest.phase is PodPhase.FAILED:
                # Let reconcile decide on retry vs. failure: as if just failed, no delay.
                phase = JobPhase.BACKOFF
            elif latest.phase is PodPhase.RUNNING:
                phase = JobPhase.RUNNING
            else:
                phase = JobPhase.STARTING
            states[name] = JobState(
                phase=phase,
                attempt=latest.attempt,
                failures=failures,
                not_before=now,
                created_at=now,
                started_at=latest.started_at,
                finished_at=latest.finished_at,
                exit_code=latest.exit_code,
                outputs=outputs or None,
            )
            if phase is JobPhase.BACKOFF and failures > dag.jobs[name].retries:
                states[name] = JobState(
                    phase=JobPhase.FAILED,
                    attempt=latest.attempt,
                    failures=failures,
                    finished_at=latest.finished_at,
                    exit_code=latest.exit_code,
                    message=f"exit code {latest.exit_code}; no retries left",
                )
        else:
            states[name] = JobState()
    return states
