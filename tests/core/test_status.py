"""The status a person reads (pure): counts, conditions, the job record."""

from __future__ import annotations

from typing import Any

from dagwright.core import record
from dagwright.core.state import ExecutionPhase, JobPhase, JobState
from dagwright.core.status import MAX_JOBS_IN_STATUS, as_patch, invalid, summarize


def test_a_summary_counts_jobs_and_records_the_finished_ones() -> None:
    jobs = {
        "a": JobState(phase=JobPhase.SUCCEEDED, attempt=1, started_at=10, finished_at=20),
        "b": JobState(phase=JobPhase.STARTING, attempt=1),
        "c": JobState(phase=JobPhase.WAITING),
    }
    status = summarize(
        names=["a", "b", "c"],
        jobs=jobs,
        phase=ExecutionPhase.RUNNING,
        message="",
        started_at=10,
        now=30,
        generation=2,
    )
    body = as_patch(status)
    assert body["progress"] == "1/3"
    assert body["counts"] == {
        "total": 3,
        "waiting": 1,
        "ready": 0,
        "starting": 1,
        "running": 0,
        "backoff": 0,
        "succeeded": 1,
        "failed": 0,
        "skipped": 0,
        "cancelled": 0,
        "cached": 0,
    }
    assert body["startedAt"] == "1970-01-01T00:00:10Z"
    assert body["finishedAt"] is None  # sent as null: the patch clears it
    assert [c["type"] for c in body["conditions"]] == [
        "Valid",
        "Progressing",
        "Completed",
        "Succeeded",
        "Schedulable",
    ]
    assert body["conditions"][0]["lastTransitionTime"] == "1970-01-01T00:00:30Z"
    assert body["jobs"][0] == {
        "name": "a",
        "phase": "Succeeded",
        "attempt": 1,
        "failures": 0,
        "infraFailures": 0,
        "startedAt": "1970-01-01T00:00:10Z",
        "finishedAt": "1970-01-01T00:00:20Z",
        "exitCode": None,
        "message": "",
    }
    assert record.decode(["a", "b", "c"], body["record"]) == {"a": JobPhase.SUCCEEDED}


def test_a_waiting_reason_leads_the_message_and_big_dags_list_no_jobs() -> None:
    names = [f"j{i}" for i in range(MAX_JOBS_IN_STATUS + 1)]
    status = summarize(
        names=names,
        jobs={n: JobState() for n in names},
        phase=ExecutionPhase.PENDING,
        message="",
        started_at=None,
        now=1,
        generation=1,
        unschedulable="waiting: job j0 requires gpu, which no WorkerPool offers now",
    )
    body = as_patch(status)
    assert body["message"].startswith("waiting: job j0")
    assert "jobs" not in body
    schedulable = next(c for c in body["conditions"] if c["type"] == "Schedulable")
    assert schedulable["status"] == "False"
    assert schedulable["reason"] == "NoWorkerPool"


def test_an_invalid_spec_fails_with_a_valid_false_condition() -> None:
    body = as_patch(invalid("cycle a -> a", now=5, generation=3), "phase", "conditions")
    assert body["phase"] == "Failed"
    # Completed too: `kubectl wait --for=condition=Completed` returns for it.
    assert [(c["type"], c["status"]) for c in body["conditions"]] == [
        ("Valid", "False"),
        ("Completed", "True"),
        ("Succeeded", "False"),
    ]
    assert body["conditions"][0] == {
        "type": "Valid",
        "status": "False",
        "reason": "InvalidDAG",
        "message": "cycle a -> a",
        "observedGeneration": 3,
        "lastTransitionTime": "1970-01-01T00:00:05Z",
    }


def test_a_conditions_transition_time_moves_only_when_its_status_does() -> None:
    def at(now: float, phase: ExecutionPhase, previous: list[dict[str, object]]) -> Any:
        jobs = {"a": JobState(phase=JobPhase.SUCCEEDED if phase.terminal else JobPhase.RUNNING)}
        status = summarize(
            names=["a"],
            jobs=jobs,
            phase=phase,
            message="",
            started_at=1,
            now=now,
            generation=1,
            previous=previous,
        )
        return {c["type"]: c for c in as_patch(status)["conditions"]}

    running = at(10, ExecutionPhase.RUNNING, [])
    assert running["Completed"]["status"] == "False"
    assert running["Succeeded"]["status"] == "Unknown"
    later = at(20, ExecutionPhase.RUNNING, list(running.values()))
    assert later["Completed"]["lastTransitionTime"] == "1970-01-01T00:00:10Z"
    done = at(30, ExecutionPhase.SUCCEEDED, list(later.values()))
    assert (done["Completed"]["status"], done["Succeeded"]["status"]) == ("True", "True")
    assert done["Completed"]["lastTransitionTime"] == "1970-01-01T00:00:30Z"
    assert done["Valid"]["lastTransitionTime"] == "1970-01-01T00:00:10Z"
