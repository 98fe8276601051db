"""The slot admission policy (pure): order, candidate pools, blocked reasons."""

from __future__ import annotations

from dagwright.core.admission import member, plan_admission, score, unschedulable_message
from dagwright.core.graph import build_dag
from dagwright.core.placement import Pool
from dagwright.core.spec import DAGExecutionSpec, WorkerPoolSpec
from dagwright.core.state import JobPhase, JobState


def pool(name: str, *capabilities: str) -> Pool:
    return Pool(name, WorkerPoolSpec(capabilities=list(capabilities), node_selector={"p": name}))


DAG = build_dag(
    DAGExecutionSpec.model_validate(
        {
            "defaults": {"image": "x"},
            "jobs": [
                {"name": "low", "priority": 2, "requires": ["cpu"]},
                {"name": "high", "priority": 9, "requires": ["cpu"]},
                {"name": "early", "priority": 2, "requires": ["cpu"]},
                {"name": "gpu", "requires": ["gpu"]},
            ],
        }
    )
)


def ready(at: float) -> JobState:
    return JobState(phase=JobPhase.READY, ready_at=at)


def test_requests_follow_the_queues_order_priority_then_time_then_member() -> None:
    jobs = {"low": ready(20), "high": ready(30), "early": ready(10), "gpu": ready(5)}
    pools = [pool("a", "cpu", "gpu")]
    plan = plan_admission("u", DAG, list(jobs), jobs, pools, {"a": ["n1"]}, {"a": 0.0}, 100)
    assert [r.job for r in plan.requests] == ["high", "gpu", "early", "low"]
    assert plan.requests[0].member == member("u", "high")
    assert plan.blocked == []
    # The same order as the Redis queue's own scores.
    scores = [score(r.priority, r.since) for r in plan.requests]
    assert scores[:3] == sorted(scores[:3])


def test_candidate_pools_least_loaded_first_and_blocked_reasons() -> None:
    jobs = {"low": ready(1), "gpu": ready(1)}
    pools = [pool("busy", "cpu"), pool("idle", "cpu"), pool("empty", "gpu")]
    members = {"busy": ["n1"], "idle": ["n2"], "empty": []}
    loads = {"busy": 0.9, "idle": 0.1, "empty": float("inf")}
    plan = plan_admission("u", DAG, list(jobs), jobs, pools, members, loads, 100)
    by_job = {r.job: [p.name for p in r.pools] for r in plan.requests}
    assert by_job == {"low": ["idle", "busy"], "gpu": ["empty"]}
    assert plan.blocked == ["job gpu: WorkerPool empty has no ready nodes"]
    none = plan_admission("u", DAG, ["gpu"], jobs, pools[:2], members, loads, 100)
    assert none.blocked == ["job gpu requires gpu, which no WorkerPool offers now"]


def test_the_unschedulable_message_names_the_first_and_counts_the_rest() -> None:
    assert unschedulable_message([]) == ""
    assert unschedulable_message(["a"]) == "waiting: a"
    assert unschedulable_message(["a", "b", "c"]) == "waiting: a (and 2 more)"
