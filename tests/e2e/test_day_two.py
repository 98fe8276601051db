"""Day-two operations (issue 19): per-job state at any size, lists and the
usual verbs, ended executions that say so, Kubernetes conventions
(conditions for `kubectl wait`, Events from dagwright-operator)."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from dagwright.devcluster.cluster import cri_log_line
from dagwright.devcluster.nodes import SIM_DURATION, SIM_EXIT_CODE
from dagwright.names import GROUP, VERSION
from tests.conftest import API_TOKEN, ApiProcess, OperatorProcess, Pools, TestCluster, wait_for
from tests.e2e.test_cli import dagwright
from tests.helpers import create_execution, dag, get_execution, merge_patch, wait_phase
from tests.test_chart import CHART, helm, kubectl, run

pytestmark = pytest.mark.usefixtures("operator")
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def failing_fan(jobs: int) -> dict[str, Any]:
    """One job that fails at once and ``jobs - 1`` that depend on it (Skipped)."""
    root = {"name": "root", "retries": 0, "annotations": {SIM_EXIT_CODE: "3"}}
    return dag([root] + [{"name": f"j{i}", "dependsOn": ["root"]} for i in range(1, jobs)])


async def test_per_job_state_of_a_300_job_execution_is_served_filtered_and_paged(
    kube: client.ApiClient, pools: Pools, api_server: ApiProcess
) -> None:
    await pools.create(["cpu"])
    namespace = api_server.namespace
    await create_execution(kube, namespace, "fan300", failing_fan(300))
    obj = await wait_phase(kube, namespace, "fan300", "Failed", within=60)
    assert "jobs" not in obj["status"]  # too big for the status: counts only
    async with httpx.AsyncClient(base_url=api_server.url, headers=AUTH) as http:
        url = f"/api/distributed/execute/fan300/jobs?namespace={namespace}"
        failed = (await http.get(f"{url}&phase=Failed")).json()
        assert failed["total"] == 1
        (root,) = failed["items"]
        assert (root["name"], root["exitCode"], root["attempt"]) == ("root", 3, 1)
        assert root["pool"] is not None
        assert root["durationSeconds"] is not None
        (attempt,) = root["attempts"]
        assert (attempt["attempt"], attempt["outcome"], attempt["exitCode"]) == (
            1,
            "user_failure",
            3,
        )
        assert attempt["pod"].startswith("fan300-root-")
        assert attempt["node"] is not None
        names: list[str] = []
        token = None
        pages = 0
        while True:
            query = f"{url}&phase=Skipped&limit=120" + (f"&continue={token}" if token else "")
            page = (await http.get(query)).json()
            assert page["total"] == 299
            names += [job["name"] for job in page["items"]]
            pages += 1
            token = page["continue"]
            if token is None:
                break
        assert pages == 3
        assert names == [f"j{i}" for i in range(1, 300)]
        assert (await http.get(f"{url}&phase=Bogus")).status_code == 422


async def test_list_pages_over_120_executions_and_filters_by_phase(
    kube: client.ApiClient, api_server: ApiProcess, core: client.CoreV1Api
) -> None:
    namespace = f"{api_server.namespace}-list"
    await core.create_namespace({"metadata": {"name": namespace}})
    try:
        suspended = dag([{"name": "a", "requires": []}], suspend=True)  # needs no pool
        unplaceable = dag([{"name": "a", "requires": ["quantum"]}])
        await asyncio.gather(
            *(create_execution(kube, namespace, f"x{i:03}", suspended) for i in range(118)),
            create_execution(kube, namespace, "bad-1", unplaceable),
            create_execution(kube, namespace, "bad-2", unplaceable),
        )
        for name in ("bad-1", "bad-2"):
            await wait_phase(kube, namespace, name, "Failed", within=60)
        async with httpx.AsyncClient(base_url=api_server.url, headers=AUTH) as http:
            seen: list[str] = []
            token = None
            pages = 0
            while True:
                query = f"/api/distributed/execute?namespace={namespace}&limit=50"
                page = (await http.get(query + (f"&continue={token}" if token else ""))).json()
                seen += [item["executionId"] for item in page["items"]]
                pages += 1
                token = page["continue"]
                if token is None:
                    break
            assert pages == 3
            assert len(seen) == len(set(seen)) == 120
            failed = await http.get(f"/api/distributed/execute?namespace={namespace}&phase=Failed")
            assert sorted(i["executionId"] for i in failed.json()["items"]) == ["bad-1", "bad-2"]
            assert all("quantum" in i["message"] for i in failed.json()["items"])
            url = f"/api/distributed/execute/bad-1?namespace={namespace}"
            gone = await http.delete(url)
            assert gone.status_code == 200, gone.text

            async def deleted() -> bool:
                return (await http.get(url)).status_code == 404

            await wait_for("bad-1 gone", deleted, within=30)
            assert (await http.delete(url)).status_code == 404
    finally:
        await core.delete_namespace(namespace)


async def test_kubectl_wait_returns_on_success_and_on_failure_and_events_say_who(
    kube: client.ApiClient,
    core: client.CoreV1Api,
    cluster: TestCluster,
    namespace: str,
    pools: Pools,
) -> None:
    await pools.create(["cpu"])
    await create_execution(kube, namespace, "good", dag([{"name": "a"}]))
    await create_execution(kube, namespace, "bad", failing_fan(2))
    for name, outcome in (("good", "True"), ("bad", "False")):
        code, out, err = await run(
            cluster,
            *kubectl(),
            "wait",
            "-n",
            namespace,
            "--for=condition=Completed",
            "--timeout=60s",
            f"dagx/{name}",
        )
        assert code == 0, out + err
        obj = await client.CustomObjectsApi(kube).get_namespaced_custom_object(
            GROUP, VERSION, namespace, "dagexecutions", name
        )
        conditions = {c["type"]: c for c in obj["status"]["conditions"]}
        assert conditions["Succeeded"]["status"] == outcome
        assert conditions["Completed"]["lastTransitionTime"]
    code, out, err = await run(
        cluster,
        *kubectl(),
        "wait",
        "-n",
        namespace,
        "--for=condition=Succeeded",
        "--timeout=30s",
        "dagx/good",
    )
    assert code == 0, out + err

    async def events(name: str) -> dict[str, Any]:
        listing = await core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name}"
        )
        return {e.reason: e for e in listing.items}

    good, bad = await events("good"), await events("bad")
    assert good["ExecutionSucceeded"].source.component == "dagwright-operator"
    assert bad["ExecutionFailed"].type == "Warning"
    assert "job root failed: exit code 3" in bad["ExecutionFailed"].message


async def test_an_ended_execution_refuses_spec_edits_and_says_what_to_do(
    kube: client.ApiClient, namespace: str, pools: Pools
) -> None:
    await pools.create(["cpu"])
    await create_execution(kube, namespace, "done", dag([{"name": "a"}]))
    await wait_phase(kube, namespace, "done", "Succeeded", within=30)
    with pytest.raises(ApiException) as refused:
        await merge_patch(kube, namespace, "done", {"spec": {"suspend": True}})
    assert refused.value.status == 422
    assert "dagwright resubmit" in str(refused.value.body)
    # Labels and annotations stay editable.
    await merge_patch(kube, namespace, "done", {"metadata": {"labels": {"team": "vision"}}})


async def test_the_cli_lists_waits_lints_resubmits_and_deletes(
    cluster: TestCluster, kube: client.ApiClient, namespace: str, pools: Pools, tmp_path: Path
) -> None:
    await pools.create(["cpu"])
    manifest = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DAGExecution",
        "metadata": {"generateName": "nightly-"},
        "spec": dag([{"name": "a"}, {"name": "b", "dependsOn": ["a"]}]),
    }
    path = tmp_path / "nightly.yaml"
    path.write_text(yaml.safe_dump(manifest))
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**manifest, "spec": dag([{"name": "a", "dependsOn": ["a"]}])}))

    code, out = await dagwright(cluster, "lint", str(path), str(bad))
    assert code == 2, out
    assert "ok (2 jobs)" in out
    assert "depends on itself" in out

    # -n after the command, as kubectl users type it; generateName honoured.
    code, out = await dagwright(cluster, "submit", str(path), "-n", namespace)
    assert code == 0, out
    name = out.split("dagexecution/")[1].split()[0]
    assert name.startswith("nightly-")
    code, out = await dagwright(cluster, "wait", name, "-n", namespace, "--timeout", "60")
    assert (code, f"dagexecution/{name} Succeeded" in out) == (0, True), out

    code, out = await dagwright(cluster, "resume", name, "-n", namespace)
    assert code == 1
    assert "has ended (Succeeded)" in out
    assert f"dagwright resubmit {name}" in out

    await create_execution(kube, namespace, "broken", failing_fan(2))
    code, out = await dagwright(cluster, "wait", "broken", "-n", namespace, "--timeout", "60")
    assert code == 1, out

    code, out = await dagwright(cluster, "-n", namespace, "list", "-o", "json")
    assert code == 0, out
    listed = {i["metadata"]["name"]: i["status"]["phase"] for i in json.loads(out)["items"]}
    assert listed == {name: "Succeeded", "broken": "Failed"}
    code, out = await dagwright(cluster, "list", "-n", namespace, "--phase", "Failed", "-o", "wide")
    assert code == 0, out
    assert "broken" in out
    assert name not in out
    code, out = await dagwright(cluster, "list", "-A")
    assert code == 0, out
    assert namespace in out

    code, out = await dagwright(cluster, "resubmit", name, "-n", namespace, "--watch")
    assert code == 0, out
    code, out = await dagwright(cluster, "list", "-n", namespace, "-o", "yaml")
    assert len(yaml.safe_load(out)["items"]) == 3

    code, out = await dagwright(cluster, "delete", "broken", "-n", namespace)
    assert code == 0, out
    code, out = await dagwright(cluster, "get", "broken", "-n", namespace)
    assert code == 1
    assert "not found" in out

    code, out = await dagwright(cluster, "--version")
    assert code == 0
    assert out.startswith("dagwright ")


async def test_retry_of_a_failed_300_job_execution_reruns_exactly_the_failed_and_skipped(
    kube: client.ApiClient,
    core: client.CoreV1Api,
    cluster: TestCluster,
    namespace: str,
    pools: Pools,
) -> None:
    """100 jobs succeed; `gate` cannot be placed (it needs a node labelled
    gate=open, none is) and fails at its start timeout; its 199 dependents
    are skipped. Open the gate, retry: `gate` and the 199 run, the 100 not."""
    pool = await pools.create(["cpu"], max_concurrency=50)
    gate = {
        "name": "gate",
        "retries": 0,
        "startTimeout": "2s",
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "gate", "operator": "In", "values": ["open"]}
                            ]
                        }
                    ]
                }
            }
        },
    }
    jobs: list[dict[str, Any]] = [{"name": f"ok{i}"} for i in range(100)] + [gate]
    jobs += [{"name": f"after{i}", "dependsOn": ["gate"]} for i in range(199)]
    await create_execution(kube, namespace, "big", dag(jobs, "100ms", parallelism=100))
    obj = await wait_phase(kube, namespace, "big", "Failed", "Succeeded", within=120)
    assert obj["status"]["phase"] == "Failed"
    assert obj["status"]["counts"]["skipped"] == 199
    assert "job gate failed" in obj["status"]["message"]

    async def pods_per_job() -> Counter[str]:
        listing = await core.list_namespaced_pod(namespace, label_selector="dagwright.io/job")
        return Counter(p.metadata.labels["dagwright.io/job"] for p in listing.items)

    before = await pods_per_job()
    assert all(before[f"ok{i}"] == 1 for i in range(100))
    assert before["gate"] <= 1  # its attempt, never scheduled (deleted at its start timeout)
    assert not any(job.startswith("after") for job in before)
    node = pools.members[pool][0]
    await core.patch_node(node, {"metadata": {"labels": {"gate": "open"}}})

    code, out = await dagwright(cluster, "retry", "big", "-n", namespace)
    assert code == 0, out
    assert "retry 1: 200 jobs run again" in out
    obj = await retried(kube, namespace, "big", 1)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]["message"]
    after = await pods_per_job()
    rerun = after - before
    assert set(rerun) == {"gate"} | {f"after{i}" for i in range(199)}
    assert all(count == 1 for count in rerun.values())  # one new attempt each
    assert all(after[f"ok{i}"] == 1 for i in range(100))  # the succeeded never reran

    code, out = await dagwright(cluster, "retry", "big", "-n", namespace)
    assert code == 0, out
    assert "retry 2: 0 jobs run again" in out
    obj = await retried(kube, namespace, "big", 2)
    assert obj["status"]["phase"] == "Succeeded"


async def retried(kube: client.ApiClient, namespace: str, name: str, count: int) -> Any:
    """The execution once its status says retry ``count`` was applied and it ended."""

    async def done() -> Any:
        obj = await get_execution(kube, namespace, name)
        status = obj.get("status") or {}
        ended = status.get("phase") in ("Succeeded", "Failed", "Cancelled")
        return obj if status.get("retried") == count and ended else None

    return await wait_for(f"{name} retried {count} and ended", done, within=120)


async def test_logs_of_a_running_attempt_follow_live_and_a_failed_ones_outlive_its_pod(
    kube: client.ApiClient,
    cluster: TestCluster,
    namespace: str,
    pools: Pools,
    api_server: ApiProcess,
) -> None:
    await pools.create(["cpu"])
    jobs = [
        {"name": "long", "annotations": {SIM_DURATION: "1h"}},
        {"name": "broken", "retries": 0, "annotations": {SIM_EXIT_CODE: "3"}},
        {"name": "fine"},
    ]
    spec = dag(jobs, podGC={"strategy": "OnExecutionCompletion"})
    await create_execution(kube, namespace, "logged", spec)

    async def running() -> bool:
        obj = await get_execution(kube, namespace, "logged")
        return bool((obj.get("status") or {}).get("counts", {}).get("running", 0) >= 1)

    await wait_for("the long job running", running, within=30)
    code, out = await dagwright(cluster, "logs", "logged", "long", "-n", namespace, api=api_server)
    assert code == 0, out
    assert "simulated job output, line 1" in out

    # Followed: a line the container writes now reaches the reader.
    url = f"{api_server.url}/api/distributed/execute/logged/jobs/long/logs"
    query = f"?namespace={namespace}&follow=true&tail=1"
    marker = f"written while followed {secrets.token_hex(3)}"
    async with (
        httpx.AsyncClient(headers=AUTH, timeout=30) as http,
        http.stream("GET", url + query) as stream,
    ):
        assert stream.status_code == 200
        assert stream.headers["x-dagwright-log"].startswith("pod ")
        with cluster.kwok.job_log.open("a") as log:
            log.write(cri_log_line(marker))
        seen = ""
        async for chunk in stream.aiter_text():
            seen += chunk
            if marker in seen:
                break
        assert marker in seen

    # Every pod is collected when the execution ends; the failed attempt's
    # log is not lost with it.
    await merge_patch(kube, namespace, "logged", {"spec": {"shutdown": "Terminate"}})
    obj = await wait_phase(kube, namespace, "logged", "Failed", "Cancelled", within=30)
    assert "(log: dagwright logs -n" in obj["status"]["message"]

    async def collected() -> bool:
        listing = await client.CoreV1Api(kube).list_namespaced_pod(namespace)
        return not listing.items

    await wait_for("every pod collected", collected, within=30)
    code, out = await dagwright(cluster, "logs", "logged", "-n", namespace, api=api_server)
    assert code == 0, out
    assert "simulated job output, line 5" in out  # the failed job's, without naming it
    async with httpx.AsyncClient(headers=AUTH) as http:
        kept = await http.get(url.replace("/long/", "/broken/") + f"?namespace={namespace}&tail=2")
        assert kept.status_code == 200
        assert kept.headers["x-dagwright-log"] == "kept (the pod is gone)"
        assert len(kept.text.splitlines()) == 2
        gone = await http.get(url.replace("/long/", "/fine/") + f"?namespace={namespace}")
        assert gone.status_code == 404
        assert "only failed attempts' logs are kept" in gone.json()["error"]


def _series(text: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("dagwright_")
    }


def _names(text: str) -> set[str]:
    """Metric names a scrape shows (histograms as their base and suffixed names)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line.startswith("dagwright_"):
            names.add(line.split("{")[0].split(" ")[0])
    return names


async def test_metrics_after_a_known_run_and_the_dashboard_and_alerts_query_only_them(
    kube: client.ApiClient,
    cluster: TestCluster,
    namespace: str,
    pools: Pools,
    operator: OperatorProcess,
    api_server: ApiProcess,
) -> None:
    async def scrape() -> tuple[str, str]:
        async with httpx.AsyncClient() as http:
            ours = await http.get(f"http://127.0.0.1:{operator.metrics_port}/metrics")
            api = await http.get(f"{api_server.url}/metrics")
        return ours.text, api.text

    before = [_series(t) for t in await scrape()]
    pool = await pools.create(["cpu"], max_concurrency=4)
    jobs = [{"name": "root", "retries": 0, "annotations": {SIM_EXIT_CODE: "3"}}, {"name": "fine"}]
    await create_execution(kube, namespace, "measured", dag(jobs))
    await wait_phase(kube, namespace, "measured", "Failed", within=30)
    async with httpx.AsyncClient(base_url=api_server.url, headers=AUTH) as http:
        for _ in range(2):
            answer = await http.get(f"/api/distributed/execute/measured?namespace={namespace}")
            assert answer.status_code == 200

    async def pool_reported() -> tuple[str, str] | None:
        texts = await scrape()
        return texts if f'dagwright_pool_slots{{pool="{pool}"}} 4.0' in texts[0] else None

    texts = await wait_for("the pool's slots exported", pool_reported, within=30)
    after = [_series(t) for t in texts]

    def grew(which: int, series: str) -> float:
        return after[which].get(series, 0) - before[which].get(series, 0)

    assert grew(0, 'dagwright_job_outcomes_total{outcome="succeeded"}') == 1
    assert grew(0, 'dagwright_job_outcomes_total{outcome="user_failure"}') == 1
    assert grew(0, 'dagwright_executions_finished_total{phase="Failed"}') == 1
    assert grew(0, "dagwright_reconcile_pass_seconds_count") >= 1
    route = 'route="/api/distributed/execute/{execution_id}"'
    assert grew(1, f'dagwright_api_requests_total{{code="200",method="GET",{route}}}') == 2
    assert grew(1, f'dagwright_api_request_duration_seconds_count{{method="GET",{route}}}') == 2

    exported = _names(texts[0]) | _names(texts[1])
    dashboard = json.loads((CHART / "dashboards" / "dagwright.json").read_text())
    assert dashboard["uid"] == "dagwright"
    assert dashboard["panels"]
    queried = set()
    for panel in dashboard["panels"]:
        assert {"id", "type", "title", "gridPos", "targets"} <= panel.keys()
        for target in panel["targets"]:
            queried |= set(re.findall(r"dagwright_[a-z_]+", target["expr"]))
    code, rendered, err = await helm(
        cluster,
        "template",
        "dw",
        str(CHART),
        "--set",
        "prometheusRule.enabled=true,grafanaDashboard.enabled=true",
    )
    assert code == 0, err
    docs = {
        d["kind"]: d
        for d in yaml.safe_load_all(rendered)
        if d and d["kind"] in ("PrometheusRule", "ConfigMap")
    }
    alerts = docs["PrometheusRule"]["spec"]["groups"][0]["rules"]
    assert {a["alert"] for a in alerts} == {
        "DagwrightExecutionsFailing",
        "DagwrightQueueStuck",
        "DagwrightNoOperator",
        "DagwrightFailoverStorm",
    }
    for alert in alerts:
        queried |= set(re.findall(r"dagwright_[a-z_]+", alert["expr"]))
    assert json.loads(docs["ConfigMap"]["data"]["dagwright.json"]) == dashboard
    assert queried
    assert queried <= exported, f"queried but never exported: {sorted(queried - exported)}"
