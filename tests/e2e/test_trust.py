"""What anyone can write must not make dagwright lie: names reused or
clashing, labels, annotations and the status edited by hand, spec edits
mid-run, creates the API server refuses (issue 15). Every scenario records
every pod transition and checks that no job had two attempts alive."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from dagwright.devcluster.nodes import SIM_DURATION
from dagwright.devcluster.processes import free_port
from dagwright.devcluster.redis_server import RedisServer
from dagwright.names import GROUP, OWNER_EPOCH_ANNOTATION, VERSION
from dagwright.operator.pods import Owner, pod_name
from tests.conftest import Fleet, OperatorProcess, Pools, TestCluster, wait_for
from tests.helpers import (
    create_execution,
    dag,
    get_execution,
    merge_patch,
    patch_spec,
    read_pod,
    record_pods,
    running_pod,
    wait_phase,
)


async def delete_execution(kube: client.ApiClient, namespace: str, name: str) -> None:
    await client.CustomObjectsApi(kube).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, "dagexecutions", name
    )


# 1. Delete and re-apply --------------------------------------------------------------


@pytest.mark.usefixtures("operator")
async def test_a_deleted_and_reapplied_execution_runs_anew(
    kube: client.ApiClient, core: client.CoreV1Api, namespace: str, pools: Pools
) -> None:
    await pools.create(["cpu"], max_concurrency=10)
    jobs = [{"name": f"j{i}"} for i in range(4)]
    async with record_pods(core, namespace) as history:
        first = await create_execution(kube, namespace, "again", dag(jobs, duration="2s"))
        await wait_for(
            "the first run's pods running", lambda: running_pod(core, namespace, "again-j0-1")
        )
        # kubectl delete -f && kubectl apply -f: the delete returns once the
        # object is gone (our finalizer removed); the old pods still exist.
        await delete_execution(kube, namespace, "again")

        async def reapplied() -> dict[str, Any] | None:
            try:
                return await create_execution(kube, namespace, "again", dag(jobs, duration="2s"))
            except ApiException as exc:
                if exc.status == 409:  # still being deleted
                    return None
                raise

        second = await wait_for("the execution applied again", reapplied, within=30)
        assert second["metadata"]["uid"] != first["metadata"]["uid"]
        obj = await wait_phase(kube, namespace, "again", "Succeeded", "Failed", within=60)
    assert obj["status"]["phase"] == "Succeeded"
    # Each job of the new execution ran in a pod of its own.
    owner = Owner("again", namespace, second["metadata"]["uid"])
    mine = {pod_name(owner, j["name"], 1) for j in jobs}
    succeeded = {e.name for e in history.events if e.phase == "Succeeded"}
    assert mine <= succeeded, f"not run anew: {sorted(mine - succeeded)}"
    history.check_never_twice()


# 2. Pod names that clash across executions ----------------------------------------------


@pytest.mark.usefixtures("operator")
async def test_clashing_names_are_distinct_pods_and_cancelling_one_spares_the_other(
    kube: client.ApiClient, core: client.CoreV1Api, namespace: str, pools: Pools
) -> None:
    await pools.create(["cpu"], max_concurrency=10)
    async with record_pods(core, namespace) as history:
        # "a" with job "b-c" and "a-b" with job "c": both were a-b-c-1.
        await create_execution(kube, namespace, "a", dag([{"name": "b-c"}], duration="4s"))
        await create_execution(kube, namespace, "a-b", dag([{"name": "c"}], duration="60s"))
        await wait_for("a's job running", lambda: running_pod(core, namespace, "a-b-c-1"))

        async def both_running() -> bool:
            alive = {e.name for e in history.events if e.phase == "Running"}
            return len(alive) == 2

        await wait_for("both executions' pods running", both_running, within=30)
        await patch_spec(kube, namespace, "a-b", {"shutdown": "Terminate"})
        cancelled = await wait_phase(kube, namespace, "a-b", "Cancelled", "Failed", within=30)
        kept = await wait_phase(kube, namespace, "a", "Succeeded", "Failed", within=30)
    assert cancelled["status"]["phase"] == "Cancelled"
    assert kept["status"]["phase"] == "Succeeded"
    assert kept["status"]["jobs"][0]["failures"] == 0  # no retry spent by the other's cancel
    assert kept["status"]["jobs"][0]["attempt"] == 1
    history.check_never_twice()


@pytest.mark.usefixtures("operator")
async def test_a_pod_squatting_on_an_attempts_name_is_not_adopted(
    kube: client.ApiClient, core: client.CoreV1Api, namespace: str, pools: Pools
) -> None:
    await pools.create(["cpu"])
    created = await create_execution(
        kube, namespace, "squat", dag([{"name": "a", "retries": 1}], suspend=True)
    )
    name = pod_name(Owner("squat", namespace, created["metadata"]["uid"]), "a", 1)
    squatter = {
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "dagwright"}},
        "spec": {"containers": [{"name": "job", "image": "busybox"}], "nodeName": "nowhere"},
    }
    await core.create_namespaced_pod(namespace, squatter)
    await patch_spec(kube, namespace, "squat", {"suspend": False})
    obj = await wait_phase(kube, namespace, "squat", "Succeeded", "Failed", within=60)
    assert obj["status"]["phase"] == "Succeeded"
    job = obj["status"]["jobs"][0]
    assert job["attempt"] == 2  # the first attempt was refused, not adopted
    assert job["failures"] == 1
    left = await core.read_namespaced_pod(name, namespace)  # and nobody deleted the squatter
    assert left.metadata.owner_references is None


# 3. Labels edited by hand ----------------------------------------------------------------


@pytest.mark.usefixtures("operator")
async def test_a_running_pod_stripped_of_its_labels_is_still_the_one_attempt(
    kube: client.ApiClient, core: client.CoreV1Api, namespace: str, pools: Pools
) -> None:
    await pools.create(["cpu"])
    async with record_pods(core, namespace) as history:
        await create_execution(kube, namespace, "strip", dag([{"name": "a"}], duration="4s"))
        pod = await wait_for("the pod running", lambda: running_pod(core, namespace, "strip-a-1"))
        await core.patch_namespaced_pod(
            pod.metadata.name,
            namespace,
            [
                {"op": "remove", "path": "/metadata/labels/app.kubernetes.io~1managed-by"},
                {"op": "replace", "path": "/metadata/labels/dagwright.io~1attempt", "value": "7"},
            ],
        )
        obj = await wait_phase(kube, namespace, "strip", "Succeeded", "Failed", within=60)
        after = await core.read_namespaced_pod(pod.metadata.name, namespace)
    assert obj["status"]["phase"] == "Succeeded"
    assert obj["status"]["jobs"][0]["attempt"] == 1
    assert obj["status"]["jobs"][0]["failures"] == 0
    assert after.metadata.labels["app.kubernetes.io/managed-by"] == "dagwright"  # put back
    assert len({e.uid for e in history.events}) == 1  # one pod, ever
    history.check_never_twice()


# 4. Redis lost while pod GC collects succeeded pods ----------------------------------------


@pytest.mark.usefixtures("operator")
async def test_lost_redis_and_collected_pods_never_rerun_a_success(
    kube: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    pools: Pools,
    redis: aioredis.Redis,
) -> None:
    # Above 200 jobs the status lists no jobs: only the record keeps them.
    await pools.create(["cpu"], size=2, max_concurrency=60)
    quick = [{"name": f"q{i:03d}"} for i in range(210)]
    last = {"name": "last", "dependsOn": ["q000"], "annotations": {SIM_DURATION: "20s"}}
    spec = dag(
        [*quick, last], duration="100ms", parallelism=120, podGC={"strategy": "OnJobSuccess"}
    )
    spec["defaults"]["annotations"] = {SIM_DURATION: "100ms"}
    async with record_pods(core, namespace) as history:
        await create_execution(kube, namespace, "forget", spec)

        async def quick_ones_collected() -> bool:
            listing = await core.list_namespaced_pod(namespace)
            left = [p for p in listing.items if p.metadata.labels["dagwright.io/job"] != "last"]
            ended = {e.job for e in history.events if e.phase == "Succeeded"}
            return not left and len(ended) >= len(quick)

        await wait_for("the quick jobs' pods collected", quick_ones_collected, within=120)
        await redis.flushall()
        obj = await wait_phase(kube, namespace, "forget", "Succeeded", "Failed", within=90)
    assert obj["status"]["phase"] == "Succeeded"
    assert obj["status"]["counts"]["succeeded"] == len(quick) + 1
    reran = sorted(j for j in {e.job for e in history.events} if history.attempts(j) != [1])
    assert not reran, f"ran again: {reran}"
    created = [e.name for e in history.events if e.type == "ADDED"]
    assert len(created) == len(set(created)) == len(quick) + 1
    history.check_never_twice()


# 5. The owner epoch annotation edited by hand -------------------------------------------------


@pytest.mark.parametrize(
    "value", ["²", "99999999999999999999999999", "raise"], ids=["unicode", "huge", "raised"]
)
async def test_an_edited_owner_epoch_costs_a_bounded_retry_and_the_run_goes_on(
    kube: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    pools: Pools,
    fleet: Fleet,
    value: str,
) -> None:
    await pools.create(["cpu"])
    (instance,) = fleet.start(1)
    jobs = [{"name": "a"}, {"name": "b", "dependsOn": ["a"]}, {"name": "c", "dependsOn": ["b"]}]
    async with record_pods(core, namespace) as history:
        await create_execution(kube, namespace, "epoch", dag(jobs, duration="1500ms"))
        await wait_for("job a running", lambda: running_pod(core, namespace, "epoch-a-1"))
        if value == "raise":
            annotations = (await get_execution(kube, namespace, "epoch"))["metadata"]["annotations"]
            value = str(int(annotations[OWNER_EPOCH_ANNOTATION]) + 10**9)  # 11 days ahead
        await merge_patch(
            kube, namespace, "epoch", {"metadata": {"annotations": {OWNER_EPOCH_ANNOTATION: value}}}
        )
        obj = await wait_phase(kube, namespace, "epoch", "Succeeded", "Failed", within=60)
    assert obj["status"]["phase"] == "Succeeded"
    assert history.names() == ["epoch-a-1", "epoch-b-1", "epoch-c-1"]
    history.check_never_twice()
    log = instance.log.read_text(errors="replace")
    assert "Traceback" not in log
    assert log.count("lost ownership") <= 3


# 6. status.phase edited by hand -------------------------------------------------------------


async def test_a_hand_edited_status_phase_does_not_end_the_run(
    kube: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    pools: Pools,
    fleet: Fleet,
) -> None:
    await pools.create(["cpu"])
    (first,) = fleet.start(1)
    jobs = [{"name": "a"}, {"name": "b", "dependsOn": ["a"]}]
    async with record_pods(core, namespace) as history:
        await create_execution(kube, namespace, "liar", dag(jobs, duration="3s"))
        await wait_for("job a running", lambda: running_pod(core, namespace, "liar-a-1"))
        await merge_patch(kube, namespace, "liar", {"status": {"phase": "Succeeded"}}, status=True)
        first.kill()  # the next owner reads the object as edited
        fleet.start(1)
        await asyncio.sleep(1)

        async def all_ran() -> bool:
            return {e.key for e in history.events if e.phase == "Succeeded"} == {
                "liar-a-1",
                "liar-b-1",
            }

        await wait_for("both jobs run to their end", all_ran, within=60)
        obj = await wait_phase(kube, namespace, "liar", "Succeeded", within=30)
    assert obj["status"]["progress"] == "2/2"
    history.check_never_twice()


# 7. Spec edits mid-run ---------------------------------------------------------------------


@pytest.mark.usefixtures("operator")
@pytest.mark.parametrize(
    "jobs",
    [
        [{"name": "a"}],  # b removed while it runs
        [{"name": "a"}, {"name": "b", "dependsOn": ["nope"]}],  # an unknown dependency
        [{"name": "a"}, {"name": "b", "image": "other"}],  # a job rewritten
    ],
    ids=["removed", "unknown-dependency", "rewritten"],
)
async def test_the_jobs_of_an_execution_cannot_change_but_its_controls_can(
    kube: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    pools: Pools,
    jobs: list[dict[str, Any]],
) -> None:
    await pools.create(["cpu"])
    await create_execution(kube, namespace, "fixed", dag([{"name": "a"}, {"name": "b"}], "3s"))
    await wait_for("job b running", lambda: running_pod(core, namespace, "fixed-b-1"))
    with pytest.raises(ApiException) as refused:
        await patch_spec(kube, namespace, "fixed", {"jobs": jobs})
    assert refused.value.status == 422
    assert "spec.jobs cannot change once the execution exists" in str(refused.value.body)
    await patch_spec(kube, namespace, "fixed", {"parallelism": 3, "priority": 9})
    obj = await wait_phase(kube, namespace, "fixed", "Succeeded", "Failed", within=60)
    assert obj["status"]["phase"] == "Succeeded"


# 10. Pods the API server refuses ---------------------------------------------------------------


@pytest.mark.usefixtures("operator")
async def test_a_pod_the_api_server_refuses_fails_the_attempt_with_its_reason(
    kube: client.ApiClient, core: client.CoreV1Api, namespace: str, pools: Pools
) -> None:
    await pools.create(["cpu"])
    bad = {
        "name": "greedy",
        "retries": 1,
        "backoff": {"initial": "200ms"},
        "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}},
    }
    await create_execution(kube, namespace, "refused", dag([bad]))
    obj = await wait_phase(kube, namespace, "refused", "Failed", "Succeeded", within=30)
    assert obj["status"]["phase"] == "Failed"
    job = obj["status"]["jobs"][0]
    assert job["failures"] == 2  # each refusal used an attempt: no retries left
    assert "must be less than or equal to cpu limit" in job["message"]
    assert "must be less than or equal to cpu limit" in obj["status"]["message"]
    events = await core.list_namespaced_event(
        namespace, field_selector="involvedObject.name=refused,reason=PodCreateFailed"
    )
    assert 1 <= sum(e.count or 1 for e in events.items) <= 2  # one per attempt, not a flood


# 11. Pods that never start ------------------------------------------------------------------


@pytest.mark.usefixtures("operator")
async def test_a_pod_that_never_starts_shows_why_then_fails_at_its_start_timeout(
    kube: client.ApiClient, core: client.CoreV1Api, namespace: str, pools: Pools
) -> None:
    await pools.create(["cpu"], cpu="4")
    # More CPU than any node has: the scheduler never binds it.
    huge = {"name": "huge", "retries": 0, "startTimeout": "8s"}
    huge["resources"] = {"requests": {"cpu": "64"}}
    await create_execution(kube, namespace, "never", dag([huge]))

    async def waiting() -> dict[str, Any] | None:
        status = (await get_execution(kube, namespace, "never")).get("status") or {}
        jobs = status.get("jobs") or [{}]
        return status if jobs[0].get("message", "").startswith("waiting to start") else None

    status = await wait_for("the job to say what it waits for", waiting, within=8)
    assert "Unschedulable" in status["jobs"][0]["message"]
    assert status["counts"]["starting"] == 1
    assert status["counts"]["running"] == 0
    obj = await wait_phase(kube, namespace, "never", "Failed", "Succeeded", within=30)
    assert obj["status"]["phase"] == "Failed"
    assert "did not start within 8s (Unschedulable" in obj["status"]["message"]
    assert await read_pod(core, namespace, "never-huge-1") is None  # its pod is gone


# 12. An attempt pinned to a node that turned out full ------------------------------------------


@pytest.mark.usefixtures("operator")
async def test_attempts_pinned_to_a_full_node_are_placed_again_without_a_retry(
    kube: client.ApiClient, core: client.CoreV1Api, namespace: str, pools: Pools
) -> None:
    pool = await pools.create(["cpu"], size=2, max_concurrency=4, cpu="4")
    full = pools.members[pool][0]
    # Another team's pod takes all of one node's CPU; dagwright counts no slot there.
    squatter = {
        "metadata": {"name": "other-team"},
        "spec": {
            "nodeName": full,
            "tolerations": [{"operator": "Exists"}],
            "containers": [
                {"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "4"}}}
            ],
        },
    }
    await core.create_namespaced_pod(namespace, squatter)
    jobs = [{"name": f"j{i}", "resources": {"requests": {"cpu": "1"}}} for i in range(4)]
    async with record_pods(core, namespace) as history:
        await create_execution(kube, namespace, "crowded", dag(jobs, duration="1s"))
        obj = await wait_phase(kube, namespace, "crowded", "Succeeded", "Failed", within=60)
    assert obj["status"]["phase"] == "Succeeded"
    assert all(j["failures"] == 0 for j in obj["status"]["jobs"])
    ran_on = {e.node for e in history.events if e.phase == "Succeeded"}
    assert ran_on == {pools.members[pool][1]}
    events = await core.list_namespaced_event(
        namespace, field_selector="involvedObject.name=crowded,reason=JobReplaced"
    )
    assert events.items, "no attempt was ever pinned to the full node: the test proved nothing"
    history.check_never_twice()


# 8. Annotations that would undo the pods' security context ------------------------------------


@pytest.mark.usefixtures("operator")
async def test_kubernetes_own_annotations_need_the_pools_consent(
    kube: client.ApiClient, core: client.CoreV1Api, namespace: str, pools: Pools
) -> None:
    apparmor = "container.apparmor.security.beta.kubernetes.io/job"
    job = {"name": "a", "retries": 0, "annotations": {apparmor: "unconfined", SIM_DURATION: "1s"}}
    strict = await pools.create(["strict"])
    await create_execution(
        kube,
        namespace,
        "sneaky",
        {**dag([job]), "defaults": {"image": "x", "requires": ["strict"]}},
    )
    obj = await wait_phase(kube, namespace, "sneaky", "Failed", "Succeeded", within=30)
    assert obj["status"]["phase"] == "Failed"
    assert f"annotation {apparmor} is Kubernetes' own" in obj["status"]["message"]
    assert f"WorkerPool {strict} does not allow it" in obj["status"]["message"]
    assert await read_pod(core, namespace, "sneaky-a-1") is None
    await pools.create(["lenient"], extra_spec={"allowedAnnotations": [apparmor]})
    defaults = {"image": "x", "requires": ["lenient"]}
    await create_execution(kube, namespace, "allowed", {**dag([job]), "defaults": defaults})
    obj = await wait_phase(kube, namespace, "allowed", "Succeeded", "Failed", within=30)
    assert obj["status"]["phase"] == "Succeeded"
    pod = await read_pod(core, namespace, "allowed-a-1")
    assert pod.metadata.annotations[apparmor] == "unconfined"


# 15. A Redis that refuses the operator's password ---------------------------------------------


async def test_an_operator_refused_by_redis_says_so_once_and_fails_its_probe(
    cluster: TestCluster,
) -> None:
    server = RedisServer()
    server.start()
    try:
        admin = aioredis.Redis.from_url(server.url)
        await admin.config_set("requirepass", "right")
        await admin.aclose()
        port = free_port()
        proc = OperatorProcess(
            cluster.kubeconfig,
            f"redis://:wrong@127.0.0.1:{server.port}/0",
            env={"DAGWRIGHT_HEALTH_PORT": str(port)},
        )
        proc.start()
        try:

            async def probe_fails() -> int | None:
                try:
                    async with httpx.AsyncClient() as http:
                        response = await http.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
                except httpx.TransportError:
                    return None  # not listening yet
                return response.status_code if response.status_code != 200 else None

            assert await wait_for("the health probe to fail", probe_fails, within=30) >= 500
            await asyncio.sleep(3)
            log = proc.log.read_text(errors="replace")
        finally:
            proc.stop()
    finally:
        server.stop()
    # Said once, clearly (the probe says it too, to whoever asks), not every second.
    own = [
        line for line in log.splitlines() if "dagwright.operator.handlers: Redis refused" in line
    ]
    assert len(own) == 1, log[-3000:]
    assert "check the password in DAGWRIGHT_REDIS_URL" in own[0]
