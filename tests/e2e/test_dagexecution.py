"""A DAGExecution end to end on the real control plane: validation, order,
placement, retries, timeouts, pause/resume/cancel, restarts, lost Redis."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from dagwright.devcluster.nodes import SIM_DURATION, SIM_EXIT_CODE
from dagwright.version import VERSION
from tests.conftest import OperatorProcess, Pools, wait_for
from tests.helpers import (
    create_execution,
    get_execution,
    patch_spec,
    read_pod,
    record_pods,
    wait_phase,
)

pytestmark = pytest.mark.usefixtures("operator")


def dag(jobs: list[dict[str, Any]], duration: str = "300ms", **spec: Any) -> dict[str, Any]:
    defaults = {"image": "busybox", "requires": ["cpu"], "annotations": {SIM_DURATION: duration}}
    defaults.update(spec.pop("defaults", {}))
    return {"defaults": defaults, "jobs": jobs, **spec}


async def pod_names(core: client.CoreV1Api, namespace: str) -> list[str]:
    pods = await core.list_namespaced_pod(namespace)
    return sorted(p.metadata.name for p in pods.items)


# 1. Validation -------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (dag([{"name": "a"}], priority=11), "spec.priority: Invalid value: 11"),
        (dag([{"name": "a"}, {"name": "a"}]), 'spec.jobs[1]: Duplicate value: {"name":"a"}'),
        (dag([{"name": "a", "dependsOn": ["a"]}]), "a job cannot depend on itself"),
        (dag([{"name": "a", "timeout": "5 minutes"}]), "spec.jobs[0].timeout"),
        (dag([]), "spec.jobs: Invalid value"),
        (dag([{"name": "Not_A_DNS_Label"}]), "spec.jobs[0].name"),
    ],
)
async def test_structural_errors_are_rejected_at_apply(
    kube: client.ApiClient, namespace: str, spec: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ApiException) as caught:
        await create_execution(kube, namespace, "bad", spec)
    assert caught.value.status == 422
    assert expected in json.loads(caught.value.body)["message"]


@pytest.mark.parametrize(
    ("jobs", "problem"),
    [
        (
            [
                {"name": "a", "dependsOn": ["c"]},
                {"name": "b", "dependsOn": ["a"]},
                {"name": "c", "dependsOn": ["b"]},
            ],
            "dependency cycle: ",
        ),
        ([{"name": "a", "dependsOn": ["ghost"]}], "job 'a' depends on unknown job(s) 'ghost'"),
        (
            [{"name": "a", "requires": ["quantum"]}],
            "job 'a' requires quantum, which no WorkerPool offers",
        ),
    ],
)
async def test_graph_errors_fail_the_execution_with_a_valid_false_condition(
    kube: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    pools: Pools,
    jobs: list[dict[str, Any]],
    problem: str,
) -> None:
    await pools.create(["cpu"])
    await create_execution(kube, namespace, "broken", dag(jobs))
    obj = await wait_phase(kube, namespace, "broken", "Failed", within=30)
    valid = next(c for c in obj["status"]["conditions"] if c["type"] == "Valid")
    assert valid["status"] == "False"
    assert problem in valid["message"]
    assert problem in obj["status"]["message"]
    assert await pod_names(core, namespace) == []


# 2. Dependency order and parallelism ---------------------------------------


async def test_fan_out_fan_in_runs_in_dependency_order_with_parallel_siblings(
    kube: client.ApiClient, core: client.CoreV1Api, namespace: str, pools: Pools
) -> None:
    await pools.create(["cpu"], size=2)
    jobs: list[dict[str, Any]] = [
        {"name": "prep"},
        *({"name": f"shard-{i}", "dependsOn": ["prep"]} for i in range(4)),
        {"name": "merge", "dependsOn": [f"shard-{i}" for i in range(4)]},
        {"name": "eval-a", "dependsOn": ["merge"]},
        {"name": "eval-b", "dependsOn": ["merge"]},
        {"name": "publish", "dependsOn": ["eval-a", "eval-b"]},
    ]
    seen: list[tuple[str, str]] = []  # (phase, progress) as `kubectl get` showed them

    async def follow_status() -> None:
        while True:
            status = (await get_execution(kube, namespace, "fan")).get("status") or {}
            seen.append((status.get("phase", ""), status.get("progress", "")))
            await asyncio.sleep(0.2)

    async with record_pods(core, namespace) as history:
        await create_execution(kube, namespace, "fan", dag(jobs, duration="1s"))
        following = asyncio.create_task(follow_status())
        obj = await wait_phase(kube, namespace, "fan", "Succeeded", "Failed", within=60)
        following.cancel()
    assert obj["status"]["phase"] == "Succeeded"
    assert obj["status"]["progress"] == "9/9"
    # Progress was published while it ran (status patches go out beside the passes).
    midway = {p for phase, p in seen if phase == "Running" and p not in ("0/9", "9/9")}
    assert midway, f"no progress between 0/9 and 9/9 in {sorted(set(seen))}"

    def created(job: str) -> float:
        return history.first(f"fan-{job}-1", type_="ADDED")

    def succeeded(job: str) -> float:
        return history.first(f"fan-{job}-1", phase="Succeeded")

    for job in jobs:
        for parent in job.get("dependsOn", []):
            assert succeeded(parent) <= created(job["name"]), (
                f"{job['name']} before {parent} succeeded"
            )
    # Siblings ran side by side: each shard started before any shard finished.
    assert max(created(f"shard-{i}") for i in range(4)) < min(
        succeeded(f"shard-{i}") for i in range(4)
    )
    assert created("eval-b") < succeeded("eval-a")
    history.check_never_twice()
    assert history.names() == sorted(f"fan-{j['name']}-1" for j in jobs)


async def test_parallelism_caps_running_jobs(
    kube: client.ApiClient, core: client.CoreV1Api, namespace: str, pools: Pools
) -> None:
    await pools.create(["cpu"])
    async with record_pods(core, namespace) as history:
        await create_execution(
            kube,
            namespace,
            "wide",
            dag([{"name": f"j{i}"} for i in range(8)], duration="1s", parallelism=3),
        )
        await wait_phase(kube, namespace, "wide", "Succeeded", within=60)
    assert history.max_alive() == 3


# 3. Placement ----------------------------------------------------------------


async def test_gpu_jobs_land_only_on_gpu_nodes(
    kube: client.ApiClient, core: client.CoreV1Api, namespace: str, pools: Pools
) -> None:
    cpu_pool = await pools.create(["cpu"], size=2)
    gpu_pool = await pools.create(["gpu"], size=2, gpus=4)
    jobs = [
        {"name": "prep"},
        *(
            {
                "name": f"train-{i}",
                "dependsOn": ["prep"],
                "requires": ["gpu"],
                "resources": {"limits": {"nvidia.com/gpu": "1"}},
            }
            for i in range(4)
        ),
        {"name": "report", "dependsOn": [f"train-{i}" for i in range(4)]},
    ]
    await create_execution(kube, namespace, "place", dag(jobs))
    await wait_phase(kube, namespace, "place", "Succeeded", within=60)
    pods = (await core.list_namespaced_pod(namespace)).items
    where = {p.metadata.labels["dagwright.io/job"]: p.spec.node_name for p in pods}
    for i in range(4):
        assert where[f"train-{i}"] in pools.members[gpu_pool]
    assert where["prep"] in pools.members[cpu_pool]
    assert where["report"] in pools.members[cpu_pool]
    train = next(p for p in pods if p.metadata.labels["dagwright.io/job"] == "train-0")
    assert train.spec.containers[0].resources.limits == {"nvidia.com/gpu": "1"}
    assert train.metadata.labels["dagwright.io/pool"] == gpu_pool


# 5. Retries ------------------------------------------------------------------


async def test_failing_job_retries_with_exponential_backoff_then_fails_the_dag(
    kube: client.ApiClient, core: client.CoreV1Api, namespace: str, pools: Pools
) -> None:
    await pools.create(["cpu"])
    jobs = [
        {
            "name": "flaky",
            "retries": 2,
            "backoff": {"initial": "1s", "factor": 2},
            "annotations": {SIM_DURATION: "200ms", SIM_EXIT_CODE: "3"},
        },
        {"name": "after", "dependsOn": ["flaky"]},
        {"name": "independent"},
    ]
    async with record_pods(core, namespace) as history:
        await create_execution(kube, namespace, "retry", dag(jobs))
        obj = await wait_phase(kube, namespace, "retry", "Succeeded", "Failed", within=60)
    status = obj["status"]
    assert status["phase"] == "Failed"
    assert status["message"] == (
        "job flaky failed: exit code 3; no retries left (2 allowed) "
        f"(log: dagwright logs -n {namespace} retry flaky)"
    )
    assert history.attempts("flaky") == [1, 2, 3]
    assert history.attempts("after") == []  # downstream never started
    assert history.attempts("independent") == [1]  # other branches still ran
    gaps = [
        history.first(f"retry-flaky-{n + 1}", type_="ADDED")
        - history.first(f"retry-flaky-{n}", phase="Failed")
        for n in (1, 2)
    ]
    # 1 s then 2 s: never early; late by at most a reconcile pass and watch
    # round trips (generous: the 2 cores are shared with the whole control plane).
    assert 0.9 <= gaps[0] <= 2.5, gaps
    assert 1.9 <= gaps[1] <= 3.5, gaps
    assert gaps[1] - gaps[0] >= 0.5, gaps  # it grew
    history.check_never_twice()
    flaky = next(j for j in status["jobs"] if j["name"] == "flaky")
    assert (flaky["phase"], flaky["attempt"], flaky["failures"], flaky["exitCode"]) == (
        "Failed",
        3,
        3,
        3,
    )
    after = next(j for j in status["jobs"] if j["name"] == "after")
    assert after["phase"] == "Skipped"
    assert after["message"] == "upstream job flaky failed"


# 6. Timeout --------------------------------------------------------------------


async def test_timeout_stops_the_attempt_and_counts_as_a_failure(
    kube: client.ApiClient, core: client.CoreV1Api, namespace: str, pools: Pools
) -> None:
    await pools.create(["cpu"])
    jobs = [
        {
            "name": "slow",
            "timeout": "1s",
            "retries": 1,
            "backoff": {"initial": "100ms"},
            "annotations": {SIM_DURATION: "1h"},
        }
    ]
    async with record_pods(core, namespace) as history:
        await create_execution(kube, namespace, "slow", dag(jobs))
        obj = await wait_phase(kube, namespace, "slow", "Failed", within=30)
    assert obj["status"]["message"] == (
        "job slow failed: timed out after 1s; no retries left (1 allowed) "
        f"(log: dagwright logs -n {namespace} slow slow)"
    )
    # The retry was created only after the timed-out pod was gone.
    assert history.first("slow-slow-1", type_="DELETED") <= history.first(
        "slow-slow-2", type_="ADDED"
    )
    running = history.first("slow-slow-1", phase="Running")
    deleting = next(e.at for e in history.events if e.key == "slow-slow-1" and e.deleting)
    assert 0.9 <= deleting - running <= 3.0
    history.check_never_twice()


# 7. Suspend, resume, cancel ------------------------------------------------------


async def test_suspend_lets_running_jobs_finish_and_resume_continues(
    kube: client.ApiClient, core: client.CoreV1Api, namespace: str, pools: Pools
) -> None:
    await pools.create(["cpu"])
    jobs = [{"name": "a"}, {"name": "b", "dependsOn": ["a"]}]
    async with record_pods(core, namespace) as history:
        await create_execution(kube, namespace, "pause", dag(jobs, duration="2s"))
        await wait_for("job a running", lambda: _running(core, namespace, "pause-a-1"))
        await patch_spec(kube, namespace, "pause", {"suspend": True})
        await wait_for("a succeeded", lambda: _phase_is(core, namespace, "pause-a-1", "Succeeded"))
        obj = await wait_phase(kube, namespace, "pause", "Suspended", within=10)
        await asyncio.sleep(2)
        assert "pause-b-1" not in history.names()  # nothing new while suspended
        obj = await get_execution(kube, namespace, "pause")
        assert obj["status"]["phase"] == "Suspended"
        await patch_spec(kube, namespace, "pause", {"suspend": False})
        await wait_phase(kube, namespace, "pause", "Succeeded", within=30)
    assert history.names() == ["pause-a-1", "pause-b-1"]


@pytest.mark.parametrize("mode", ["Terminate", "Stop"])
async def test_shutdown_cancels(
    kube: client.ApiClient, core: client.CoreV1Api, namespace: str, pools: Pools, mode: str
) -> None:
    await pools.create(["cpu"])
    jobs = [
        {"name": "long", "annotations": {SIM_DURATION: "3s" if mode == "Stop" else "1h"}},
        {"name": "next", "dependsOn": ["long"]},
    ]
    async with record_pods(core, namespace) as history:
        await create_execution(kube, namespace, "cancel", dag(jobs))
        await wait_for("job long running", lambda: _running(core, namespace, "cancel-long-1"))
        await patch_spec(kube, namespace, "cancel", {"shutdown": mode})
        obj = await wait_phase(kube, namespace, "cancel", "Cancelled", within=30)
    phases = {j["name"]: j["phase"] for j in obj["status"]["jobs"]}
    if mode == "Terminate":
        assert phases == {"long": "Cancelled", "next": "Cancelled"}
        assert history.first("cancel-long-1", type_="DELETED")
    else:
        assert phases == {"long": "Succeeded", "next": "Cancelled"}
    assert "cancel-next-1" not in history.names()


async def _running(core: client.CoreV1Api, namespace: str, name: str) -> bool:
    return await _phase_is(core, namespace, name, "Running")


async def _phase_is(core: client.CoreV1Api, namespace: str, name: str, phase: str) -> bool:
    pod = await read_pod(core, namespace, name)
    return pod is not None and pod.status.phase == phase


# 8. Restart safety ----------------------------------------------------------------


async def test_operator_killed_mid_dag_finishes_without_running_anything_twice(
    kube: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    pools: Pools,
    operator: OperatorProcess,
) -> None:
    await pools.create(["cpu"], size=2)
    jobs: list[dict[str, Any]] = [{"name": f"l1-{i}"} for i in range(4)]
    jobs += [{"name": f"l2-{i}", "dependsOn": [f"l1-{i}", f"l1-{(i + 1) % 4}"]} for i in range(4)]
    jobs += [{"name": "last", "dependsOn": [f"l2-{i}" for i in range(4)]}]
    async with record_pods(core, namespace) as history:
        await create_execution(kube, namespace, "crash", dag(jobs, duration="1500ms"))
        await wait_for("the first layer running", lambda: _running(core, namespace, "crash-l1-0-1"))
        operator.kill()
        await asyncio.sleep(2)  # pods finish while nobody watches
        operator.start()
        obj = await wait_phase(kube, namespace, "crash", "Succeeded", "Failed", within=90)
    assert obj["status"]["phase"] == "Succeeded"
    history.check_never_twice()
    assert history.names() == sorted(
        f"crash-{j['name']}-1" for j in jobs
    )  # exactly one attempt each
    owned = (await core.list_namespaced_pod(namespace)).items
    assert len(owned) == len(jobs)
    assert all(p.metadata.owner_references[0].name == "crash" for p in owned)  # none orphaned


# 9. Redis lost ----------------------------------------------------------------------


async def test_flushed_redis_is_rebuilt_from_pods_and_nothing_reruns(
    kube: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    pools: Pools,
    redis: aioredis.Redis,
) -> None:
    await pools.create(["cpu"])
    jobs = [{"name": "a"}, {"name": "b", "dependsOn": ["a"]}, {"name": "c", "dependsOn": ["b"]}]
    async with record_pods(core, namespace) as history:
        await create_execution(kube, namespace, "amnesia", dag(jobs, duration="1500ms"))
        await wait_for("job b running", lambda: _running(core, namespace, "amnesia-b-1"))
        await redis.flushall()
        obj = await wait_phase(kube, namespace, "amnesia", "Succeeded", "Failed", within=60)
    assert obj["status"]["phase"] == "Succeeded"
    assert history.names() == ["amnesia-a-1", "amnesia-b-1", "amnesia-c-1"]
    history.check_never_twice()


# 10/11. Events and cleanup ----------------------------------------------------------


async def test_events_are_recorded_and_deleting_the_execution_removes_its_pods(
    kube: client.ApiClient, core: client.CoreV1Api, namespace: str, pools: Pools
) -> None:
    await pools.create(["cpu"])
    await create_execution(
        kube, namespace, "tidy", dag([{"name": "a"}, {"name": "b", "dependsOn": ["a"]}])
    )
    await wait_phase(kube, namespace, "tidy", "Succeeded", within=30)
    pod = await read_pod(core, namespace, "tidy-a-1")
    assert pod.metadata.labels["dagwright.io/execution"] == "tidy"
    assert pod.metadata.labels["dagwright.io/attempt"] == "1"
    assert pod.metadata.owner_references[0].kind == "DAGExecution"

    async def reasons() -> set[str] | None:
        events = await core.list_namespaced_event(
            namespace, field_selector="involvedObject.name=tidy"
        )
        found = {e.reason for e in events.items}
        return found if {"JobStarted", "JobSucceeded"} <= found else None

    await wait_for("job events on the execution", reasons, within=15)
    objects = client.CustomObjectsApi(kube)
    await objects.delete_namespaced_custom_object(
        "dagwright.io", "v1alpha1", namespace, "dagexecutions", "tidy"
    )

    async def no_pods() -> bool:
        return await pod_names(core, namespace) == []

    await wait_for("the garbage collector to remove the pods", no_pods, within=30)


# 4. Priority across executions when capacity is short ------------------------


async def test_higher_priority_jobs_start_first_when_slots_are_short(
    kube: client.ApiClient, core: client.CoreV1Api, namespace: str, pools: Pools
) -> None:
    await pools.create(["cpu"], size=1, max_concurrency=1)  # one slot in all
    async with record_pods(core, namespace) as history:
        await create_execution(kube, namespace, "blocker", dag([{"name": "hold"}], duration="2s"))
        await wait_for("the blocker running", lambda: _running(core, namespace, "blocker-hold-1"))
        await create_execution(
            kube, namespace, "low", dag([{"name": "job"}], duration="500ms", priority=2)
        )
        await asyncio.sleep(0.5)  # low asked first...
        await create_execution(
            kube, namespace, "high", dag([{"name": "job"}], duration="500ms", priority=9)
        )
        for name in ("blocker", "low", "high"):
            await wait_phase(kube, namespace, name, "Succeeded", within=60)
    assert history.first("high-job-1", type_="ADDED") < history.first("low-job-1", type_="ADDED")
    assert history.first("blocker-hold-1", phase="Succeeded") <= history.first(
        "high-job-1", type_="ADDED"
    )
    assert history.max_alive() == 1  # the pool's single slot was never exceeded
    high = await read_pod(core, namespace, "high-job-1")
    assert high.spec.priority_class_name == "dagwright-priority-9"
    assert high.spec.priority == 900


# 10. Metrics, 11. pod GC, large DAGs -----------------------------------------------


async def test_metrics_count_started_jobs_and_scheduling_latency(
    kube: client.ApiClient, namespace: str, pools: Pools, operator: OperatorProcess
) -> None:
    async def scrape() -> dict[str, float]:
        async with httpx.AsyncClient() as http:
            text = (await http.get(f"http://127.0.0.1:{operator.metrics_port}/metrics")).text
        return {
            line.split(" ")[0]: float(line.split(" ")[1])
            for line in text.splitlines()
            if line.startswith("dagwright_") and " " in line
        }

    async def scrape_when_up() -> dict[str, float] | None:
        try:
            return await scrape()
        except httpx.ConnectError:
            return None

    before = await wait_for("the operator's metrics endpoint", scrape_when_up)
    await pools.create(["cpu"])
    await create_execution(
        kube, namespace, "metered", dag([{"name": "a"}, {"name": "b", "dependsOn": ["a"]}])
    )
    await wait_phase(kube, namespace, "metered", "Succeeded", within=30)
    after = await scrape()
    assert (
        after["dagwright_jobs_started_total"] - before.get("dagwright_jobs_started_total", 0) == 2
    )
    latency_count = "dagwright_scheduling_latency_seconds_count"
    assert after[latency_count] - before.get(latency_count, 0) == 2
    succeeded = 'dagwright_job_transitions_total{reason="JobSucceeded"}'
    assert after[succeeded] - before.get(succeeded, 0) == 2
    finished = 'dagwright_executions_finished_total{phase="Succeeded"}'
    assert after[finished] - before.get(finished, 0) == 1
    durations = "dagwright_execution_duration_seconds_count"
    assert after[durations] - before.get(durations, 0) == 1
    assert after[f'dagwright_build_info{{version="{VERSION}"}}'] == 1


async def test_pod_gc_on_job_success_deletes_finished_pods(
    kube: client.ApiClient, core: client.CoreV1Api, namespace: str, pools: Pools
) -> None:
    await pools.create(["cpu"])
    spec = dag(
        [{"name": "a"}, {"name": "b", "dependsOn": ["a"]}], podGC={"strategy": "OnJobSuccess"}
    )
    await create_execution(kube, namespace, "gc", spec)
    obj = await wait_phase(kube, namespace, "gc", "Succeeded", within=30)
    assert [j["phase"] for j in obj["status"]["jobs"]] == ["Succeeded", "Succeeded"]

    async def no_pods() -> bool:
        return await pod_names(core, namespace) == []

    await wait_for("finished pods collected", no_pods, within=15)


async def test_large_dag_keeps_a_bounded_status(
    kube: client.ApiClient, namespace: str, pools: Pools
) -> None:
    """10,000 jobs: accepted by the apiserver, tracked in Redis, summarised in status."""
    await pools.create(["cpu"])
    jobs = [{"name": f"j{i}", "dependsOn": [f"j{i // 2}"] if i else []} for i in range(10_000)]
    await create_execution(kube, namespace, "huge", dag(jobs, suspend=True))
    obj = await wait_phase(kube, namespace, "huge", "Suspended", within=60)
    status = obj["status"]
    assert status["counts"]["total"] == 10_000
    assert status["progress"] == "0/10000"
    assert "jobs" not in status  # per-job detail lives in Redis, not in etcd
    assert len(json.dumps(status)) < 10_000


async def test_jobs_spread_over_nodes_and_never_exceed_max_concurrency_per_node(
    kube: client.ApiClient, core: client.CoreV1Api, namespace: str, pools: Pools
) -> None:
    pool = await pools.create(["cpu"], size=3, max_concurrency=4)
    jobs = [{"name": f"j{i}"} for i in range(30)]
    async with record_pods(core, namespace) as history:
        await create_execution(kube, namespace, "spread", dag(jobs, duration="1s", parallelism=30))
        await wait_phase(kube, namespace, "spread", "Succeeded", within=90)
    per_node = history.max_alive_per_node()
    assert set(per_node) == set(pools.members[pool])
    assert max(per_node.values()) <= 4, per_node
    placed: dict[str, int] = {}
    for node in history.nodes_of().values():
        placed[node] = placed.get(node, 0) + 1
    print(f"\nspread of 30 jobs over 3 nodes (4 slots each): {sorted(placed.values())}")
    assert sum(placed.values()) == 30
    assert min(placed.values()) >= 7, placed  # least-loaded first: close to 10 each


async def test_jobs_wait_with_a_clear_condition_while_no_pool_can_take_them(
    kube: client.ApiClient, core: client.CoreV1Api, namespace: str, pools: Pools
) -> None:
    first = await pools.create(["cpu"])
    await create_execution(
        kube,
        namespace,
        "orphan",
        dag([{"name": "a"}, {"name": "b", "dependsOn": ["a"]}], duration="2s"),
    )
    await wait_for("job a running", lambda: _running(core, namespace, "orphan-a-1"))
    objects = client.CustomObjectsApi(kube)
    await objects.delete_cluster_custom_object("dagwright.io", "v1alpha1", "workerpools", first)

    async def unschedulable() -> dict[str, Any] | None:
        obj = await get_execution(kube, namespace, "orphan")
        conditions = {c["type"]: c for c in obj["status"].get("conditions", [])}
        cond = conditions.get("Schedulable")
        return cond if cond and cond["status"] == "False" else None

    cond = await wait_for("the Schedulable=False condition", unschedulable, within=30)
    assert cond["message"] == "waiting: job b requires cpu, which no WorkerPool offers now"

    async def said() -> bool | None:
        # (kopf posts Events from a queue of its own: one may land just after
        # the status patch that carries the same news.)
        events = await core.list_namespaced_event(
            namespace, field_selector="involvedObject.name=orphan"
        )
        return any(e.reason == "Unschedulable" for e in events.items) or None

    await wait_for("the Unschedulable Event", said, within=10)
    assert "orphan-b-1" not in await pod_names(core, namespace)
    obj = await get_execution(kube, namespace, "orphan")
    assert obj["status"]["phase"] == "Running"  # waiting, not failed: nothing is lost
    await pools.create(["cpu"])  # a pool appears again: the job runs
    obj = await wait_phase(kube, namespace, "orphan", "Succeeded", within=30)
    schedulable = next(c for c in obj["status"]["conditions"] if c["type"] == "Schedulable")
    assert schedulable["status"] == "True"
