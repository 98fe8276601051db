"""Prometheus metrics of the operator (served on the health port's /metrics)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, Info

from dagwright.version import VERSION

BUILD = Info("dagwright_build", "The operator's version")
BUILD.info({"version": VERSION})
EXECUTIONS_FINISHED = Counter(
    "dagwright_executions_finished_total", "Executions that ended, by phase", ["phase"]
)
EXECUTION_DURATION = Histogram(
    "dagwright_execution_duration_seconds",
    "From an execution's start to its end",
    buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 48 * 3600),
)

JOBS_STARTED = Counter("dagwright_jobs_started_total", "Job attempt pods created")
JOB_EVENTS = Counter("dagwright_job_transitions_total", "Job transitions by reason", ["reason"])
EXECUTIONS_OWNED = Gauge("dagwright_executions_owned", "Executions this instance currently owns")
QUEUE_DEPTH = Gauge("dagwright_ready_jobs", "Jobs ready but not started (parallelism or capacity)")
SCHEDULING_LATENCY = Histogram(
    "dagwright_scheduling_latency_seconds",
    "From a job becoming ready (its last dependency succeeded) to its pod being created",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


PASS_SECONDS = Histogram(
    "dagwright_reconcile_pass_seconds",
    "Compute time of one reconcile pass over an execution",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
JOB_OUTCOMES = Counter(
    "dagwright_job_outcomes_total",
    "Attempts that ended, by outcome: succeeded, user_failure (a non-zero exit, "
    "a refused pod), timeout, infrastructure_failure (its node was lost), cancelled",
    ["outcome"],
)
HANDOFFS = Counter(
    "dagwright_ownership_handoffs_total", "Executions this instance handed to another (rebalancing)"
)
POOL_SLOTS = Gauge("dagwright_pool_slots", "Job slots of a WorkerPool's ready nodes", ["pool"])
POOL_SLOTS_USED = Gauge("dagwright_pool_slots_used", "Slots of a WorkerPool held by jobs", ["pool"])
POOL_QUEUED = Gauge("dagwright_pool_queued_jobs", "Jobs waiting for a WorkerPool's slot", ["pool"])


def count_outcomes(records: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
    """Count the attempts that ended in one pass (core.attempts.ended's records)."""
    for _, record in records:
        JOB_OUTCOMES.labels(outcome=record["outcome"]).inc()


def count_job_event(reason: str) -> None:
    JOB_EVENTS.labels(reason=reason).inc()
