"""The ``dagwright`` CLI as a user runs it: a real process, the test cluster
through KUBECONFIG, the REST API process for queue and workers."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes_asyncio import client

from tests.conftest import API_TOKEN, ApiProcess, Pools, TestCluster
from tests.helpers import SIM, get_execution, wait_phase

pytestmark = pytest.mark.usefixtures("operator")


async def dagwright(
    cluster: TestCluster, *args: str, api: ApiProcess | str | None = None
) -> tuple[int, str]:
    """Run the CLI; its exit code and everything it printed."""
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "COLUMNS": "160"}
    if api is not None:
        url = api if isinstance(api, str) else api.url
        env |= {"DAGWRIGHT_API_URL": url, "DAGWRIGHT_TOKEN": API_TOKEN}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dagwright.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def seed_json(tmp_path: Path, jobs: list[dict[str, Any]], duration: str = "300ms") -> Path:
    path = tmp_path / "workflow.json"
    path.write_text(
        json.dumps(
            {
                "workflowId": "cli-flow",
                "executionId": "cli-flow-1",
                "defaults": {
                    "image": "busybox",
                    "requires": ["cpu"],
                    "annotations": {SIM: duration},
                },
                "jobs": jobs,
            }
        )
    )
    return path


async def test_submit_seed_json_and_watch_it_succeed(
    cluster: TestCluster, namespace: str, pools: Pools, tmp_path: Path
) -> None:
    await pools.create(["cpu"])
    path = seed_json(tmp_path, [{"id": "prep"}, {"id": "train", "dependsOn": ["prep"]}])
    code, out = await dagwright(cluster, "-n", namespace, "submit", str(path), "--watch")
    assert code == 0, out
    assert "dagexecution/cli-flow-1 created" in out
    # The live view printed job transitions as it saw them (it samples, so a
    # short phase may pass unseen), in dependency order.
    assert "prep Succeeded" in out, out
    assert out.index("prep Succeeded") < out.index("train Succeeded")
    assert "2/2" in out
    assert "cli-flow-1 Succeeded" in out

    code, out = await dagwright(cluster, "-n", namespace, "status", "cli-flow-1")
    assert code == 0, out
    assert "Succeeded 2/2" in out
    assert [
        line.split()[:2] for line in out.splitlines() if line.startswith(("prep", "train"))
    ] == [
        ["prep", "Succeeded"],
        ["train", "Succeeded"],
    ]


async def test_submit_rejects_a_cycle_before_creating_anything(
    cluster: TestCluster, kube: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    manifest = tmp_path / "cycle.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "dagwright.io/v1alpha1",
                "kind": "DAGExecution",
                "metadata": {"name": "loop"},
                "spec": {
                    "defaults": {"image": "busybox"},
                    "jobs": [
                        {"name": "a", "dependsOn": ["b"]},
                        {"name": "b", "dependsOn": ["a"]},
                    ],
                },
            }
        )
    )
    code, out = await dagwright(cluster, "-n", namespace, "submit", str(manifest))
    assert code == 2, out
    assert "invalid DAG" in out
    assert "a -> b -> a" in out or "b -> a -> b" in out
    objects = client.CustomObjectsApi(kube)
    listed = await objects.list_namespaced_custom_object(
        "dagwright.io", "v1alpha1", namespace, "dagexecutions"
    )
    assert listed["items"] == []


async def test_suspend_resume_and_cancel(
    cluster: TestCluster, kube: client.ApiClient, namespace: str, pools: Pools, tmp_path: Path
) -> None:
    await pools.create(["cpu"])
    path = seed_json(tmp_path, [{"id": "long"}, {"id": "after", "dependsOn": ["long"]}], "60s")
    assert (await dagwright(cluster, "-n", namespace, "submit", str(path)))[0] == 0

    code, out = await dagwright(cluster, "-n", namespace, "suspend", "cli-flow-1")
    assert code == 0, out
    assert (await get_execution(kube, namespace, "cli-flow-1"))["spec"]["suspend"] is True
    code, out = await dagwright(cluster, "-n", namespace, "resume", "cli-flow-1")
    assert code == 0, out
    assert (await get_execution(kube, namespace, "cli-flow-1"))["spec"]["suspend"] is False

    code, out = await dagwright(cluster, "-n", namespace, "cancel", "cli-flow-1")
    assert code == 0, out
    await wait_phase(kube, namespace, "cli-flow-1", "Cancelled", within=30)
    code, out = await dagwright(cluster, "-n", namespace, "status", "cli-flow-1")
    assert code == 1, out  # a cancelled execution is not a success
    assert "Cancelled" in out

    code, out = await dagwright(cluster, "-n", namespace, "status", "no-such-execution")
    assert code == 1
    assert "not found" in out


async def test_workers_and_queue_through_the_rest_api(
    cluster: TestCluster, api_server: ApiProcess, pools: Pools
) -> None:
    pool = await pools.create(["gpu"])
    async with httpx.AsyncClient(
        base_url=f"{api_server.url}/api/distributed",
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    ) as http:
        registered = await http.post(
            "/workers/register",
            json={"workerId": "cli-worker", "hostname": "box", "capabilities": ["ssd"]},
        )
        assert registered.status_code == 201, registered.text
        try:
            code, out = await dagwright(cluster, "workers", api=api_server)
            assert code == 0, out
            rows = {line.split()[0]: line.split() for line in out.splitlines()[1:] if line}
            assert rows["cli-worker"][1] == "registered"
            member = pools.members[pool][0]
            assert rows[member][1:3] == ["pool", pool]

            code, out = await dagwright(cluster, "queue", "pause", api=api_server)
            assert code == 0, out
            assert "queue paused" in out
            assert (await http.get("/queue/stats")).json()["paused"] is True
        finally:
            code, out = await dagwright(cluster, "queue", "resume", api=api_server)
            await http.delete("/workers/cli-worker")
        assert code == 0, out
        assert "queue running" in out
        assert (await http.get("/queue/stats")).json()["paused"] is False


async def test_an_unreachable_api_is_a_clear_error(cluster: TestCluster) -> None:
    code, out = await dagwright(cluster, "workers", api="http://127.0.0.1:9")  # discard port
    assert code == 3
    assert "cannot reach the REST API" in out
