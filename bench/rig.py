"""A fresh local control plane, Redis and operator for one benchmark run."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import redis.asyncio as aioredis
import yaml
from kubernetes_asyncio import client, config

from dagwright.devcluster.cluster import ClusterSettings, LocalCluster
from dagwright.devcluster.nodes import node_manifest
from dagwright.devcluster.processes import Process
from dagwright.devcluster.redis_server import RedisServer
from dagwright.names import GROUP, VERSION

REPO = Path(__file__).resolve().parents[1]
POOL_LABEL = {"bench.dagwright.io/pool": "bench"}

# Nodes heartbeat at the upstream kubelet's pace (a 40 s Lease renewed every
# 10 s). The test rig's 4 s Leases make node death show in seconds, but with
# 50 nodes they are 50 writes a second, a fifth of the API server's CPU here,
# for both dagwright and the baseline. Only the failover scenario needs them.
UPSTREAM_HEARTBEATS = ClusterSettings.upstream()


@dataclass
class Rig:
    local: LocalCluster
    redis_server: RedisServer
    api: client.ApiClient
    redis: aioredis.Redis
    workdir: Path
    operators: list[Process] = field(default_factory=list)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def objects(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    def start_operator(self, **env: str) -> Process:
        full = {
            **os.environ,
            "KUBECONFIG": str(self.local.kubeconfig),
            "DAGWRIGHT_REDIS_URL": self.redis_server.url,
            "DAGWRIGHT_HEALTH_PORT": "0",
            "DAGWRIGHT_METRICS_PORT": "0",
            **env,
        }
        index = len(self.operators)
        proc = Process(
            f"operator-{index}",
            [sys.executable, "-m", "dagwright.operator"],
            self.workdir / f"operator-{index}.log",
            env=full,
        )
        proc.start()
        self.operators.append(proc)
        return proc

    async def wait_operators(self, count: int) -> None:
        deadline = time.monotonic() + 60
        while len(await self.redis.keys("dw:operator:*")) < count:
            if time.monotonic() > deadline:
                raise TimeoutError("operators did not start")
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # each has seen the others

    async def namespace(self, name: str) -> str:
        await self.core.create_namespace(cast(Any, {"metadata": {"name": name}}))
        while True:
            try:
                await self.core.read_namespaced_service_account("default", name)
                return name
            except client.ApiException:
                await asyncio.sleep(0.1)

    async def nodes(self, count: int, *, isolated: int = 0) -> list[str]:
        names = [f"bench-{i:03d}" for i in range(count)]
        kwok = self.local.kwok
        assert kwok is not None
        isolated_names = names[:isolated]
        for name in names:
            tag = kwok.isolated_tag() if name in isolated_names else kwok.tag
            await self.core.create_node(
                cast(Any, node_manifest(name, tag=tag, labels=POOL_LABEL, pods=500))
            )
            if name in isolated_names:
                kwok.isolate(name)
        while True:
            listed = await self.core.list_node(label_selector="bench.dagwright.io/pool=bench")
            ready = sum(
                any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
                for n in listed.items
            )
            if ready == count:
                return names
            await asyncio.sleep(0.2)

    async def pool(self, max_concurrency: int, **spec: Any) -> None:
        await self.objects.create_cluster_custom_object(
            GROUP,
            VERSION,
            "workerpools",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "WorkerPool",
                "metadata": {"name": "bench"},
                "spec": {
                    "capabilities": ["cpu"],
                    "nodeSelector": POOL_LABEL,
                    "maxConcurrency": max_concurrency,
                    **spec,
                },
            },
        )

    def apiserver_writes(self) -> int:
        """Mutating requests the API server has answered so far."""
        assert self.local.pki is not None
        context = ssl.create_default_context(cafile=str(self.local.pki.ca_cert))
        context.load_cert_chain(str(self.local.pki.admin_cert), str(self.local.pki.admin_key))
        with urllib.request.urlopen(f"{self.local.server}/metrics", context=context) as r:
            text = r.read().decode()
        total = 0
        for line in text.splitlines():
            if line.startswith("apiserver_request_total{") and any(
                f'verb="{v}"' in line for v in ("POST", "PATCH", "PUT", "DELETE", "APPLY")
            ):
                total += int(float(line.rsplit(" ", 1)[1]))
        return total

    async def redis_peak_bytes(self) -> int:
        info = await self.redis.info("memory")
        return int(info["used_memory_peak"])


def peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


async def apply_crds(api: client.ApiClient) -> None:
    ext = client.ApiextensionsV1Api(api)
    for path in sorted((REPO / "crds").glob("*.yaml")):
        manifest = yaml.safe_load(path.read_text())
        await ext.create_custom_resource_definition(manifest)
        while True:
            crd = await ext.read_custom_resource_definition(manifest["metadata"]["name"])
            if any(
                c.type == "Established" and c.status == "True" for c in crd.status.conditions or []
            ):
                break
            await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)  # served by discovery


@asynccontextmanager
async def rig(settings: ClusterSettings = UPSTREAM_HEARTBEATS) -> AsyncIterator[Rig]:
    workdir = Path(tempfile.mkdtemp(prefix="dagwright-bench-"))
    local = LocalCluster(workdir=workdir / "cluster", settings=settings)
    local.start()
    redis_server = RedisServer(workdir=workdir / "redis")
    redis_server.start()
    api = await config.new_client_from_config(config_file=str(local.kubeconfig))
    conn = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    r = Rig(local, redis_server, api, conn, workdir)
    try:
        await apply_crds(api)
        yield r
    finally:
        for proc in r.operators:
            proc.stop()
        await conn.aclose()
        await api.close()
        redis_server.stop()
        local.stop()


def dump(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
