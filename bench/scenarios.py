"""The five benchmark scenarios. Each returns a JSON-able dict."""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any, cast

import httpx

from bench.dags import SIM, chains, fan_out, spec, wide_layers
from bench.rig import POOL_LABEL, Rig, peak_rss_bytes, rig
from bench.watcher import execution_phases, pod_times, wait_count
from dagwright.core.graph import build_dag
from dagwright.core.spec import DAGExecutionSpec
from dagwright.devcluster.cluster import ClusterSettings
from dagwright.devcluster.processes import Process, free_port
from dagwright.names import GROUP, MANAGED_BY, VERSION
from dagwright.operator.pods import Owner, Placement, build_pod


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def create_dag(r: Rig, namespace: str, name: str, body: dict[str, Any]) -> None:
    await r.objects.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "dagexecutions",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "DAGExecution",
            "metadata": {"name": name},
            "spec": body,
        },
    )


async def phase(r: Rig, namespace: str, name: str) -> str | None:
    obj = await r.objects.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "dagexecutions", name
    )
    return (obj.get("status") or {}).get("phase")


async def wait_phase(r: Rig, namespace: str, name: str, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while True:
        current = await phase(r, namespace, name)
        if current in ("Succeeded", "Failed"):
            if current != "Succeeded":
                raise RuntimeError(f"{name} ended {current}")
            return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} still {current}")
        await asyncio.sleep(0.1)


async def same_pods(
    r: Rig, namespace: str, layers: list[list[dict[str, Any]]], duration: str, nodes: int
) -> Callable[[str], dict[str, Any]]:
    """The pods dagwright would create for these jobs (same fields, same size),
    owned by a ConfigMap and labelled so the operator does not watch them."""
    owner_map = await r.core.create_namespaced_config_map(
        namespace, cast(Any, {"metadata": {"name": "base"}})
    )
    owner = Owner(
        name="base",
        namespace=namespace,
        uid=owner_map.metadata.uid,
        api_version="v1",
        kind="ConfigMap",
    )
    body = spec([job for layer in layers for job in layer], duration, parallelism=1)
    dag = build_dag(DAGExecutionSpec.model_validate(body))
    index = {job["name"]: i for layer in layers for i, job in enumerate(layer)}

    def manifest(job: str) -> dict[str, Any]:
        placement = Placement(
            pool="bench",
            node_selector=tuple(POOL_LABEL.items()),
            node=f"bench-{index[job] % nodes:03d}",  # dagwright pins a job to its slot's node
        )
        pod = build_pod(owner, dag.jobs[job], 1, 1, placement)
        pod["metadata"]["labels"][MANAGED_BY] = "bench-baseline"
        return pod

    return manifest


# 1 + 2: dispatch throughput and scheduling latency ------------------------------------


async def baseline_layers(
    r: Rig,
    namespace: str,
    layers: list[list[dict[str, Any]]],
    manifest: Callable[[str], dict[str, Any]],
) -> float:
    """The rig's ceiling: a plain client creates each layer's pods (32 in
    flight, as the operator), waits until all succeeded, then the next layer."""
    limit = asyncio.Semaphore(32)

    async def create(job: str) -> None:
        async with limit:
            await r.core.create_namespaced_pod(namespace, cast(Any, manifest(job)))

    async with pod_times(r.core, namespace) as times:
        started = time.monotonic()
        for i, layer in enumerate(layers):
            await asyncio.gather(*(create(job["name"]) for job in layer))
            await wait_count(times, "base-", sum(len(x) for x in layers[: i + 1]), 600)
        return time.monotonic() - started


async def dagwright_layers(
    r: Rig, namespace: str, layers: list[list[dict[str, Any]]], duration: str
) -> tuple[float, list[float]]:
    jobs = [job for layer in layers for job in layer]
    deps = {job["name"]: job["dependsOn"] for job in jobs}
    async with pod_times(r.core, namespace) as times:
        started = time.monotonic()
        await create_dag(r, namespace, "dw", spec(jobs, duration, parallelism=len(jobs)))
        await wait_count(times, "dw-", len(jobs), 900)
        wall = time.monotonic() - started
        await wait_phase(r, namespace, "dw", 120)
    latencies = []
    for job, parents in deps.items():
        if not parents:
            continue
        ready = max(times.succeeded[f"dw-{p}-1"] for p in parents)
        latencies.append(times.added[f"dw-{job}-1"] - ready)
    return wall, latencies


async def throughput(width: int = 200, depth: int = 10, nodes: int = 50) -> dict[str, Any]:
    layers = wide_layers(width, depth)
    total = width * depth
    duration = "10ms"
    async with rig() as r:
        await r.nodes(nodes)
        await r.pool(max_concurrency=20)
        r.start_operator()
        await r.wait_operators(1)
        # Baselines before and after dagwright (the machine is shared and noisy).
        namespace = await r.namespace("baseline")
        same = await same_pods(r, namespace, layers, duration, nodes)
        writes_0 = r.apiserver_writes()
        base = await baseline_layers(r, namespace, layers, same)
        writes_1 = r.apiserver_writes()
        dw, latencies = await dagwright_layers(r, await r.namespace("dagwright"), layers, duration)
        writes_2 = r.apiserver_writes()
        namespace = await r.namespace("baseline-2")
        same = await same_pods(r, namespace, layers, duration, nodes)
        base2 = await baseline_layers(r, namespace, layers, same)
    baseline = statistics.mean([base, base2])
    return {
        "jobs": total,
        "nodes": nodes,
        "shape": f"{depth} layers x {width}",
        "baseline_seconds": [round(base, 2), round(base2, 2)],
        "dagwright_seconds": round(dw, 2),
        "baseline_jobs_per_second": round(total / baseline, 1),
        "dagwright_jobs_per_second": round(total / dw, 1),
        "ratio_dagwright_over_baseline": round((total / dw) / (total / baseline), 2),
        "apiserver_writes_per_job": {
            "baseline": round((writes_1 - writes_0) / total, 2),
            "dagwright": round((writes_2 - writes_1) / total, 2),
        },
        "scheduling_latency_ms": {
            "p50": round(pct(latencies, 0.50) * 1000, 1),
            "p95": round(pct(latencies, 0.95) * 1000, 1),
            "p99": round(pct(latencies, 0.99) * 1000, 1),
            "samples": len(latencies),
        },
        "latencies_ms": [round(x * 1000, 1) for x in latencies],
    }


# 3: scale --------------------------------------------------------------------------


async def scale_one(shape: str, size: int, nodes: int = 50) -> dict[str, Any]:
    jobs = chains(size) if shape == "chains" else fan_out(size)
    async with rig() as r:
        await r.nodes(nodes)
        await r.pool(max_concurrency=20)
        proc = r.start_operator()
        await r.wait_operators(1)
        namespace = await r.namespace("scale")
        writes_0 = r.apiserver_writes()
        async with pod_times(r.core, namespace) as times:
            started = time.monotonic()
            await create_dag(r, namespace, "big", spec(jobs, "10ms", parallelism=len(jobs)))
            await wait_count(times, "big-", len(jobs), 1500)
            wall = time.monotonic() - started
            await wait_phase(r, namespace, "big", 300)
        return {
            "shape": shape,
            "jobs": len(jobs),
            "seconds": round(wall, 1),
            "jobs_per_second": round(len(jobs) / wall, 1),
            "operator_peak_rss_mb": round(peak_rss_bytes(proc.pid) / 2**20, 1),
            "redis_peak_mb": round(await r.redis_peak_bytes() / 2**20, 2),
            "apiserver_writes": r.apiserver_writes() - writes_0,
        }


async def scale(sizes: dict[str, list[int]]) -> dict[str, Any]:
    """``sizes``: shape -> the DAG sizes to run."""
    runs = []
    for shape, shape_sizes in sizes.items():
        for size in shape_sizes:
            result = await scale_one(shape, size)
            print(f"  scale {shape} {size}: {result}", flush=True)
            runs.append(result)
    return {"runs": runs}


# 4: failover -------------------------------------------------------------------------


async def node_failover(
    r: Rig, namespace: str, run: int, victim: str, healthy: list[str]
) -> dict[str, float]:
    body = spec([{"name": "train"}], "600s", parallelism=1)
    name = f"nf-{run}"
    async with pod_times(r.core, namespace) as times:
        await create_dag(r, namespace, name, body)
        while f"{name}-train-1" not in times.running:
            await asyncio.sleep(0.05)
        pod = await r.core.read_namespaced_pod(times.pod_names[f"{name}-train-1"], namespace)
        node = pod.spec.node_name
        assert node == victim, f"expected the job on {victim}, got {node}"
        for other in healthy:  # somewhere for the replacement to go
            await r.core.patch_node(other, {"spec": {"unschedulable": False}})
        assert r.local.kwok is not None
        r.local.kwok.kill_node(node)
        killed = time.monotonic()
        not_ready = None
        while f"{name}-train-2" not in times.running:
            if not_ready is None:
                n = await r.core.read_node(node)
                if any(c.type == "Ready" and c.status != "True" for c in n.status.conditions or []):
                    not_ready = time.monotonic()
            await asyncio.sleep(0.05)
        replaced = times.running[f"{name}-train-2"]
    assert r.local.kwok is not None
    r.local.kwok.revive_node(node)
    await r.objects.delete_namespaced_custom_object(
        GROUP, VERSION, namespace, "dagexecutions", name
    )
    return {
        "kill_to_not_ready": round((not_ready or replaced) - killed, 2),
        "not_ready_to_replacement_running": round(replaced - (not_ready or killed), 2),
    }


async def takeover(r: Rig, namespace: str, run: int, lease: float) -> float:
    name = f"to-{run}"
    await create_dag(r, namespace, name, spec([{"name": "train"}], "600s", parallelism=1))
    while True:
        obj = await r.objects.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "dagexecutions", name
        )
        annotations = obj["metadata"].get("annotations") or {}
        owner = annotations.get("ownership.dagwright.io/instance")
        if owner:
            break
        await asyncio.sleep(0.05)
    epoch = int(annotations["ownership.dagwright.io/epoch"])
    victim = next(p for p in r.operators if p.running() and owner in p.log.read_text())
    victim.signal(signal.SIGKILL)
    killed = time.monotonic()
    while True:
        obj = await r.objects.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "dagexecutions", name
        )
        now_epoch = int(
            (obj["metadata"].get("annotations") or {}).get("ownership.dagwright.io/epoch", 0)
        )
        if now_epoch > epoch:
            took = time.monotonic() - killed
            break
        await asyncio.sleep(0.05)
    victim.start()  # back as a new instance
    await asyncio.sleep(2.0)
    await r.objects.delete_namespaced_custom_object(
        GROUP, VERSION, namespace, "dagexecutions", name
    )
    return round(took, 2)


async def failover(runs: int = 3, lease: float = 5.0) -> dict[str, Any]:
    # The test rig's fast node heartbeats, or DAGWRIGHT_NODE_TIMING=upstream.
    async with rig(ClusterSettings.from_environ()) as r:
        # One node per run that can die (its own KWOK), plus healthy ones.
        names = await r.nodes(runs + 3, isolated=runs)
        await r.pool(max_concurrency=4, forceFailover=True)
        env = {"DAGWRIGHT_LEASE_SECONDS": str(lease), "DAGWRIGHT_HEARTBEAT_SECONDS": "0.5"}
        r.start_operator(**env)
        r.start_operator(**env)
        await r.wait_operators(2)
        namespace = await r.namespace("failover")
        nodes = []
        for i in range(runs):
            # Only the victim is schedulable while the job starts.
            for other in names:
                await r.core.patch_node(other, {"spec": {"unschedulable": other != names[i]}})
            nodes.append(await node_failover(r, namespace, i, names[i], names[runs:]))
        for other in names:
            await r.core.patch_node(other, {"spec": {"unschedulable": False}})
        takeovers = [await takeover(r, namespace, i, lease) for i in range(runs)]
    return {
        "runs": runs,
        "node": nodes,
        "median_kill_to_not_ready": statistics.median(n["kill_to_not_ready"] for n in nodes),
        "median_not_ready_to_replacement_running": statistics.median(
            n["not_ready_to_replacement_running"] for n in nodes
        ),
        "lease_seconds": lease,
        "takeover_seconds": takeovers,
        "median_takeover_seconds": statistics.median(takeovers),
    }


# 5: many small DAGs through the REST API ------------------------------------------------


async def small_dags(count: int = 500, size: int = 5, nodes: int = 50) -> dict[str, Any]:
    async with rig() as r:
        await r.nodes(nodes)
        await r.pool(max_concurrency=20)
        r.start_operator()
        await r.wait_operators(1)
        namespace = await r.namespace("small")
        port = free_port()
        api = Process(
            "api",
            [sys.executable, "-m", "dagwright.api"],
            r.workdir / "api.log",
            env={
                **os.environ,
                "KUBECONFIG": str(r.local.kubeconfig),
                "DAGWRIGHT_REDIS_URL": r.redis_server.url,
                "DAGWRIGHT_API_HOST": "127.0.0.1",
                "DAGWRIGHT_API_PORT": str(port),
                "DAGWRIGHT_API_NAMESPACE": namespace,
                "DAGWRIGHT_API_TOKEN": "bench",
                "DAGWRIGHT_API_RATE_PER_SECOND": "100000",
                "DAGWRIGHT_API_RATE_BURST": "100000",
            },
        )
        api.start()
        try:
            url = f"http://127.0.0.1:{port}/api/distributed"
            headers = {"Authorization": "Bearer bench"}
            async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
                while True:
                    try:
                        if (await http.get("/health")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    await asyncio.sleep(0.2)
                jobs = [
                    {"id": "a"},
                    *({"id": f"b{i}", "dependsOn": ["a"]} for i in range(size - 2)),
                    {"id": "c", "dependsOn": [f"b{i}" for i in range(size - 2)]},
                ]
                body = {
                    "workflowId": "sweep",
                    "defaults": {
                        "image": "registry.example/bench:1",
                        "requires": ["cpu"],
                        "annotations": {SIM: "10ms"},
                    },
                    "jobs": jobs,
                }
                latencies: list[float] = []
                limit = asyncio.Semaphore(32)

                async def submit(i: int) -> None:
                    async with limit:
                        t = time.monotonic()
                        response = await http.post(
                            "/execute", json={**body, "executionId": f"s{i:04d}"}
                        )
                        latencies.append(time.monotonic() - t)
                        response.raise_for_status()

                async with execution_phases(r.objects, namespace) as phases:
                    started = time.monotonic()
                    await asyncio.gather(*(submit(i) for i in range(count)))
                    submitted = time.monotonic() - started
                    while phases.count("Succeeded") < count:
                        if phases.count("Failed"):
                            raise RuntimeError(f"{phases.count('Failed')} small DAGs failed")
                        await asyncio.sleep(0.05)
                completed = time.monotonic() - started
        finally:
            api.stop()
    return {
        "dags": count,
        "jobs_per_dag": size,
        "submit_seconds": round(submitted, 2),
        "completion_seconds": round(completed, 1),
        "jobs_per_second": round(count * size / completed, 1),
        "api_latency_ms": {
            "p50": round(pct(latencies, 0.5) * 1000, 1),
            "p99": round(pct(latencies, 0.99) * 1000, 1),
        },
    }
