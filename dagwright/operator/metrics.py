"""Prometheus metrics of the operator (served on the health port's /metrics)."""

from __future__ import annotations

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


def count_job_event(reason: str) -> None:
    JOB_EVENTS.labels(reason=reason).inc()
