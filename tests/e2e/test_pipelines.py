"""Pipeline semantics (issue 20) on the real control plane: retry policies,
finally jobs, outputs between jobs, conditions, sweeps and caching, with
pipelines written in the SDK and checked from pods and status.

KWOK stands in for the containers: ``sim.dagwright.io/outputs`` is what the
container would have written to $DAGWRIGHT_OUTPUTS_FILE (the kubelet's
termination message), ``sim.dagwright.io/reason`` its end (OOMKilled...).
Both are job annotations, so they go through the same templates as args:
a sweep member's simulated accuracy comes from its item."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import httpx
import pytest
from kubernetes_asyncio import client

from dagwright.devcluster.nodes import SIM_DURATION, SIM_EXIT_CODE
from dagwright.names import ATTEMPT_LABEL, EXECUTION_LABEL, JOB_LABEL
from dagwright.pipeline import Job, Pipeline, item
from tests.conftest import API_TOKEN, ApiProcess, Pools, TestCluster
from tests.helpers import create_execution, dag, get_execution, merge_patch, wait_phase

pytestmark = pytest.mark.usefixtures("operator")

OUTPUTS = "sim.dagwright.io/outputs"
REASON = "sim.dagwright.io/reason"
FAST = {"initial": "100ms", "max": "200ms"}


async def pods_of(core: client.CoreV1Api, namespace: str, execution: str) -> dict[str, list[Any]]:
    """The execution's pods by job, in attempt order."""
    listing = await core.list_namespaced_pod(
        namespace, label_selector=f"{EXECUTION_LABEL}={execution}"
    )
    found: dict[str, list[Any]] = {}
    for pod in listing.items:
        found.setdefault(pod.metadata.labels[JOB_LABEL], []).append(pod)
    for pods in found.values():
        pods.sort(key=lambda p: int(p.metadata.labels[ATTEMPT_LABEL]))
    return found


def env_of(pod: Any) -> dict[str, str]:
    return {e.name: e.value for e in pod.spec.containers[0].env if e.value is not None}


def sweep_pipeline(
    name: str, namespace: str, points: list[dict[str, Any]], threshold: float
) -> Pipeline:
    sim = {SIM_DURATION: "200ms"}
    with Pipeline(
        name,
        namespace=namespace,
        image="busybox",
        requires=["cpu"],
        parallelism=20,
        annotations=sim,
    ) as p:
        train = Job(
            "train",
            with_items=points,
            args=[f"--lr={item.lr}"],
            outputs=["accuracy", "model_uri"],
            annotations={
                **sim,
                OUTPUTS: '{"accuracy": {{item.acc}}, "model_uri": "s3://m/{{item.lr}}"}',
            },
        )
        best = train.outputs.model_uri.argmax("accuracy")
        pick = Job(
            "pick",
            env={"MODEL": best, "ACCURACY": train.outputs.accuracy.max()},
            outputs=["model_uri", "accuracy"],
            annotations={
                **sim,
                OUTPUTS: f'{{"model_uri": "{best}", "accuracy": {train.outputs.accuracy.max()}}}',
            },
        )
        Job("deploy", when=pick.outputs.accuracy > threshold, env={"MODEL": pick.outputs.model_uri})
        Job("notify", finally_="Always")
        train >> pick
    return p


async def test_a_50_point_sweep_picks_the_best_deploys_on_a_condition_and_notifies(
    kube: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    pools: Pools,
    cluster: TestCluster,
) -> None:
    await pools.create(["cpu"], max_concurrency=20)
    points = [
        {"lr": round(0.001 * (i + 1), 3), "acc": round(0.5 + (i * 37 % 50) / 100, 2)}
        for i in range(50)
    ]
    best = max(points, key=lambda p: p["acc"])  # acc 0.99, unique
    assert sum(p["acc"] == best["acc"] for p in points) == 1
    submitted = sweep_pipeline("hpo", namespace, points, threshold=0.9).submit(
        kubeconfig=str(cluster.kubeconfig)
    )
    assert await await_phase(submitted.wait, within=120) == "Succeeded"
    pods = await pods_of(core, namespace, "hpo")
    assert len([j for j in pods if j.startswith("train-")]) == 50
    assert all(len(attempts) == 1 for attempts in pods.values())
    (pick,) = pods["pick"]
    assert env_of(pick)["MODEL"] == f"s3://m/{best['lr']}"
    assert env_of(pick)["ACCURACY"] == str(best["acc"])
    (deploy,) = pods["deploy"]
    assert env_of(deploy)["MODEL"] == f"s3://m/{best['lr']}"
    (notify,) = pods["notify"]
    assert env_of(notify)["DAGWRIGHT_EXECUTION_PHASE"] == "Succeeded"
    status = (await get_execution(kube, namespace, "hpo"))["status"]
    assert status["counts"]["succeeded"] == 53
    assert len(status["jobs"]) == 53  # the status's job list names the sweep's members
    assert {j["name"] for j in status["jobs"]} >= {"train-0", "train-49", "pick"}
    assert status["counts"]["total"] == 53
    # The same pipeline with a bar the best model does not clear: deploy is
    # Skipped with the reason and never gets a pod; the execution succeeds.
    strict = sweep_pipeline("hpo-strict", namespace, points, threshold=0.995).submit(
        kubeconfig=str(cluster.kubeconfig)
    )
    assert await await_phase(strict.wait, within=120) == "Succeeded"
    pods = await pods_of(core, namespace, "hpo-strict")
    assert "deploy" not in pods
    assert "notify" in pods
    status = (await get_execution(kube, namespace, "hpo-strict"))["status"]
    assert status["counts"]["skipped"] == 1
    assert "1 skipped" in status["message"]


async def await_phase(wait: Any, within: float) -> str:
    """The SDK's blocking wait, off the event loop (the test's own clients
    share the loop)."""
    return str(await asyncio.to_thread(wait, within, 0.5))


async def test_retry_policies_retry_only_what_they_name(
    kube: client.ApiClient, core: client.CoreV1Api, namespace: str, pools: Pools
) -> None:
    await pools.create(["cpu"])
    jobs = [
        # OOM-killed (exit 137, reason OOMKilled): transient, retried twice.
        {
            "name": "oom",
            "retries": 2,
            "retryPolicy": {"retryOn": "OnTransient"},
            "annotations": {SIM_EXIT_CODE: "137", REASON: "OOMKilled"},
        },
        # A plain bug under OnTransient: never retried.
        {
            "name": "bug",
            "retries": 2,
            "retryPolicy": {"retryOn": "OnTransient"},
            "annotations": {SIM_EXIT_CODE: "1"},
        },
        # Exit 2 is a usage error: the expression retries 137 and 143 only.
        {
            "name": "usage",
            "retries": 3,
            "retryPolicy": {"expression": "exitCode in [137, 143]"},
            "annotations": {SIM_EXIT_CODE: "2"},
        },
        {
            "name": "sigterm",
            "retries": 1,
            "retryPolicy": {"expression": "exitCode in [137, 143]"},
            "annotations": {SIM_EXIT_CODE: "143"},
        },
        # OnError retries what happens around the container, not its exit.
        {
            "name": "exit",
            "retries": 2,
            "retryPolicy": {"retryOn": "OnError"},
            "annotations": {SIM_EXIT_CODE: "1"},
        },
    ]
    spec = dag(jobs)
    spec["defaults"]["backoff"] = FAST
    await create_execution(kube, namespace, "policies", spec)
    obj = await wait_phase(kube, namespace, "policies", "Failed", within=60)
    pods = await pods_of(core, namespace, "policies")
    attempts = Counter({job: len(found) for job, found in pods.items()})
    assert attempts == Counter(oom=3, bug=1, usage=1, sigterm=2, exit=1)
    message = obj["status"]["message"]
    assert "failed" in message
    reasons = {pod.status.container_statuses[0].state.terminated.reason for pod in pods["oom"]}
    assert reasons == {"OOMKilled"}


async def test_a_failing_dag_runs_its_notifier_and_cleanup(
    kube: client.ApiClient, core: client.CoreV1Api, namespace: str, pools: Pools
) -> None:
    await pools.create(["cpu"])
    jobs = [
        {"name": "a", "retries": 0, "annotations": {SIM_EXIT_CODE: "3"}},
        {"name": "b", "dependsOn": ["a"]},
        {"name": "notify", "finally": "OnFailure"},
        {"name": "cleanup", "finally": "Always", "dependsOn": ["notify"]},
        {"name": "celebrate", "finally": "OnSuccess"},
    ]
    await create_execution(kube, namespace, "failing", dag(jobs))
    obj = await wait_phase(kube, namespace, "failing", "Failed", within=60)
    pods = await pods_of(core, namespace, "failing")
    assert set(pods) == {"a", "notify", "cleanup"}
    notify = env_of(pods["notify"][0])
    assert notify["DAGWRIGHT_EXECUTION_PHASE"] == "Failed"
    assert notify["DAGWRIGHT_FAILED_JOBS"] == "a"
    # The finally jobs started only after every other job had ended.
    ended = pods["a"][0].status.container_statuses[0].state.terminated.finished_at
    assert pods["notify"][0].metadata.creation_timestamp >= ended.replace(microsecond=0)
    assert obj["status"]["message"].startswith("job a failed")
    assert obj["status"]["counts"]["skipped"] == 2  # b, celebrate


@pytest.mark.parametrize("mode", ["Stop", "Terminate"])
async def test_a_cancelled_execution_runs_its_on_cancel_job_only_when_stopped(
    kube: client.ApiClient, core: client.CoreV1Api, namespace: str, pools: Pools, mode: str
) -> None:
    await pools.create(["cpu"])
    jobs = [
        {"name": "long", "annotations": {SIM_DURATION: "3s"}},
        {"name": "next", "dependsOn": ["long"]},
        {"name": "on-cancel", "finally": "OnCancel"},
    ]
    await create_execution(kube, namespace, "cancelled", dag(jobs))
    await wait_phase(kube, namespace, "cancelled", "Running", within=30)
    await merge_patch(kube, namespace, "cancelled", {"spec": {"shutdown": mode}})
    await wait_phase(kube, namespace, "cancelled", "Cancelled", within=60)
    pods = await pods_of(core, namespace, "cancelled")
    assert "next" not in pods
    if mode == "Stop":
        assert "on-cancel" in pods
        assert env_of(pods["on-cancel"][0])["DAGWRIGHT_EXECUTION_PHASE"] == "Cancelled"
        assert pods["long"][0].status.phase == "Succeeded"  # left to finish
    else:
        assert "on-cancel" not in pods


async def test_outputs_flow_into_args_env_and_config_and_bad_references_are_refused(
    kube: client.ApiClient, core: client.CoreV1Api, namespace: str, pools: Pools
) -> None:
    await pools.create(["cpu"])
    jobs = [
        {
            "name": "produce",
            "outputs": ["uri", "n"],
            "annotations": {SIM_DURATION: "200ms", OUTPUTS: '{"uri": "s3://x/model", "n": 3}'},
        },
        {
            "name": "consume",
            "dependsOn": ["produce"],
            "args": ["--model={{ jobs.produce.outputs.uri }}"],
            "env": [{"name": "N", "value": "{{jobs.produce.outputs.n}}"}],
            "config": {"n": "{{jobs.produce.outputs.n}}", "uri": "{{jobs.produce.outputs.uri}}"},
        },
        # Declares an output its container never writes: the attempt fails.
        {"name": "forgetful", "outputs": ["x"], "retries": 0},
    ]
    await create_execution(kube, namespace, "flow", dag(jobs))
    obj = await wait_phase(kube, namespace, "flow", "Failed", within=60)
    pods = await pods_of(core, namespace, "flow")
    (produce,) = pods["produce"]
    container = produce.spec.containers[0]
    assert container.termination_message_path == "/dev/termination-log"
    assert env_of(produce)["DAGWRIGHT_OUTPUTS_FILE"] == "/dev/termination-log"
    (consume,) = pods["consume"]
    assert consume.spec.containers[0].args == ["--model=s3://x/model"]
    assert env_of(consume)["N"] == "3"
    config = json.loads(consume.metadata.annotations["dagwright.io/config"])
    assert config == {"n": 3, "uri": "s3://x/model"}  # a whole template keeps its type
    assert "declared outputs x were not set" in obj["status"]["message"]
    # A reference to an output nobody declares never runs anything.
    bad = [
        {"name": "a", "outputs": ["uri"]},
        {"name": "b", "dependsOn": ["a"], "args": ["{{jobs.a.outputs.url}}"]},
        {"name": "c", "args": ["{{jobs.a.outputs.uri}}"]},
    ]
    await create_execution(kube, namespace, "bad-refs", dag(bad))
    obj = await wait_phase(kube, namespace, "bad-refs", "Failed", within=30)
    valid = next(c for c in obj["status"]["conditions"] if c["type"] == "Valid")
    assert valid["status"] == "False"
    assert "declares no output 'url'" in valid["message"]
    assert "job 'a' is not upstream of 'c'" in valid["message"]
    assert await pods_of(core, namespace, "bad-refs") == {}


async def test_a_resubmitted_pipeline_reruns_nothing_that_is_cached(
    core: client.CoreV1Api, pools: Pools, api_server: ApiProcess
) -> None:
    await pools.create(["cpu"])
    namespace = api_server.namespace
    api = f"{api_server.url}/api/distributed"

    def pipeline(name: str) -> Pipeline:
        sim = {SIM_DURATION: "200ms"}
        with Pipeline(
            name, namespace=namespace, image="busybox", requires=["cpu"], annotations=sim
        ) as p:
            prep = Job(
                "prep",
                args=["--source=s3://raw/v1"],
                outputs=["data"],
                cache={"max_age": "1h"},
                annotations={**sim, OUTPUTS: '{"data": "s3://clean/v1"}'},
            )
            Job("report", args=[f"--data={prep.outputs.data}"])
            Job("shard", with_items=[1, 2], args=[f"--shard={item}"], depends_on=[prep])
        return p

    first = pipeline("cache-one").submit(api_url=api, token=API_TOKEN)
    assert await await_phase(first.wait, within=60) == "Succeeded"
    second = pipeline("cache-two").submit(api_url=api, token=API_TOKEN)
    assert await await_phase(second.wait, within=60) == "Succeeded"
    pods = await pods_of(core, namespace, "cache-two")
    assert set(pods) == {"report", "shard-0", "shard-1"}  # prep was cached: no pod
    assert pods["shard-1"][0].spec.containers[0].args == ["--shard=2"]
    assert pods["report"][0].spec.containers[0].args == ["--data=s3://clean/v1"]
    status = second.status()
    assert status["counts"]["cached"] == 1
    async with httpx.AsyncClient(
        base_url=api, headers={"Authorization": f"Bearer {API_TOKEN}"}
    ) as http:
        answer = await http.get(f"/execute/cache-two/jobs?namespace={namespace}")
        if answer.status_code == 429:  # the API's rate limit, shared by the session's tests
            await asyncio.sleep(float(answer.headers.get("Retry-After", "1")))
            answer = await http.get(f"/execute/cache-two/jobs?namespace={namespace}")
        assert answer.status_code == 200, answer.text
        jobs = answer.json()["items"]
    assert [j["name"] for j in jobs] == ["prep", "report", "shard-0", "shard-1"]
    prep = next(j for j in jobs if j["name"] == "prep")
    assert prep["phase"] == "Cached"
    assert prep["outputs"] == {"data": "s3://clean/v1"}
    assert "execution" in prep["message"]
    assert "cache-one" in prep["message"]
