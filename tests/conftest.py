"""Fixtures: a real Kubernetes control plane and a real Redis for every run.

``cluster`` uses the cluster in ``$KUBECONFIG`` when the caller set one (kind,
or any real cluster) and otherwise starts the local control plane built from
the upstream Go modules. Either way a KWOK controller of this session plays
the kubelets of the nodes the tests create, so tests never touch real nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis.asyncio as aioredis
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from dagwright.devcluster.build import ensure_binary
from dagwright.devcluster.cluster import ClusterSettings, Kwok, LocalCluster
from dagwright.devcluster.nodes import node_manifest
from dagwright.devcluster.processes import Process, free_port
from dagwright.devcluster.redis_server import RedisServer
from dagwright.names import GROUP, VERSION

T = TypeVar("T")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs the cluster, so ``-m "not cluster"`` runs the fast rest."""
    for item in items:
        if "cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)


@dataclass
class TestCluster:
    kubeconfig: Path
    kwok: Kwok
    local: LocalCluster | None
    # Upper bound on how long after its kubelet dies a node turns NotReady.
    node_death_seconds: float

    __test__ = False  # not a test class, despite the name


def _grace_seconds(duration: str) -> float:
    return float(duration.rstrip("s"))


@pytest.fixture(scope="session")
def cluster() -> Iterator[TestCluster]:
    external = os.environ.get("KUBECONFIG")
    if external:
        workdir = Path(tempfile.mkdtemp(prefix="dagwright-kwok-"))
        kwok = Kwok(
            binary=ensure_binary("kwok"),
            kubeconfig=Path(external),
            workdir=workdir,
            tag=f"dagwright-test-{secrets.token_hex(3)}",
            node_lease_seconds=40,
        )
        kwok.start()
        print(f"\ndagwright tests: using the cluster in KUBECONFIG={external}")
        try:
            # Upstream default grace (50 s) plus the lease and a monitor period.
            yield TestCluster(Path(external), kwok, None, node_death_seconds=100)
        finally:
            kwok.stop()
        return
    settings = ClusterSettings.from_environ()  # DAGWRIGHT_NODE_TIMING=upstream: production timing
    with LocalCluster(settings=settings) as local:
        assert local.kwok is not None
        print(f"\ndagwright tests: started a local control plane at {local.server}")
        yield TestCluster(
            local.kubeconfig,
            local.kwok,
            local,
            node_death_seconds=settings.node_lease_seconds
            + _grace_seconds(settings.node_monitor_grace_period)
            + 5,
        )


@pytest.fixture(scope="session")
async def kube(cluster: TestCluster) -> AsyncIterator[client.ApiClient]:
    api = await config.new_client_from_config(config_file=str(cluster.kubeconfig))
    try:
        yield api
    finally:
        await api.close()


@pytest.fixture(scope="session")
def core(kube: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(kube)


async def wait_for(
    what: str,
    probe: Callable[[], Awaitable[T | None]],
    within: float = 30.0,
    interval: float = 0.1,
) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what``."""
    deadline = time.monotonic() + within
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {within}s waiting for {what} (last: {last!r})")


@pytest.fixture
async def namespace(core: client.CoreV1Api) -> AsyncIterator[str]:
    """A fresh namespace per test, ready for pods, deleted afterwards."""
    name = f"t-{secrets.token_hex(4)}"
    await core.create_namespace(
        body={"metadata": {"name": name, "labels": {"dagwright.io/test": "true"}}}
    )

    async def service_account() -> bool:
        try:
            await core.read_namespaced_service_account("default", name)
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    await wait_for(f"the default ServiceAccount in {name}", service_account)
    try:
        yield name
    finally:
        await core.delete_namespace(name)


@dataclass
class Nodes:
    """Creates simulated nodes for one test and deletes them afterwards."""

    core: client.CoreV1Api
    cluster: TestCluster
    created: list[str] = field(default_factory=list)

    async def create(
        self,
        labels: dict[str, str] | None = None,
        *,
        isolated: bool = False,
        wait_ready: bool = True,
        **resources: Any,
    ) -> str:
        """A new KWOK node. ``isolated`` gives it a KWOK controller of its own
        that ``kill(name)`` can stop, as a dead kubelet."""
        name = f"kwok-{secrets.token_hex(4)}"
        kwok = self.cluster.kwok
        tag = kwok.isolated_tag() if isolated else kwok.tag
        await self.core.create_node(body=node_manifest(name, tag=tag, labels=labels, **resources))
        self.created.append(name)
        if isolated:
            kwok.isolate(name)
        if wait_ready:
            await wait_for(f"node {name} Ready", lambda: self.ready(name))
        return name

    async def ready(self, name: str) -> bool:
        node = await self.core.read_node(name)
        return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])

    def kill(self, name: str) -> None:
        self.cluster.kwok.kill_node(name)

    async def delete_all(self) -> None:
        for name in self.created:
            proc = self.cluster.kwok.isolated.pop(name, None)
            if proc is not None:
                proc.stop()
            try:
                await self.core.delete_node(name)
            except ApiException as exc:
                if exc.status != 404:
                    raise


@pytest.fixture
async def nodes(core: client.CoreV1Api, cluster: TestCluster) -> AsyncIterator[Nodes]:
    helper = Nodes(core, cluster)
    try:
        yield helper
    finally:
        await helper.delete_all()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A client of the session's real Redis, flushed before each test."""
    conn = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    await conn.flushall()
    try:
        yield conn
    finally:
        await conn.aclose()


# --- dagwright on the cluster ----------------------------------------------

REPO = Path(__file__).resolve().parents[1]


def rig_crd(
    kind: str, plural: str, schema: dict[str, Any], subresources: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A test-only namespaced CRD in the group rig.dagwright.io, version v1."""
    version: dict[str, Any] = {
        "name": "v1",
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": schema},
    }
    if subresources:
        version["subresources"] = subresources
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.rig.dagwright.io"},
        "spec": {
            "group": "rig.dagwright.io",
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind},
            "versions": [version],
        },
    }


async def apply_crd(kube: client.ApiClient, manifest: dict[str, Any]) -> None:
    """Create or replace a CRD and wait until the apiserver serves it."""
    ext = client.ApiextensionsV1Api(kube)
    name = manifest["metadata"]["name"]
    try:
        current = await ext.read_custom_resource_definition(name)
        manifest = {
            **manifest,
            "metadata": {
                **manifest["metadata"],
                "resourceVersion": current.metadata.resource_version,
            },
        }
        await ext.replace_custom_resource_definition(name, manifest)
    except ApiException as exc:
        if exc.status != 404:
            raise
        await ext.create_custom_resource_definition(manifest)

    async def established() -> bool:
        crd = await ext.read_custom_resource_definition(name)
        return any(
            c.type == "Established" and c.status == "True" for c in crd.status.conditions or []
        )

    await wait_for(f"CRD {name} established", established)


@pytest.fixture(scope="session")
async def crds(kube: client.ApiClient) -> None:
    """Install the generated CRDs (replacing older versions)."""
    import yaml

    for path in sorted((REPO / "crds").glob("*.yaml")):
        await apply_crd(kube, yaml.safe_load(path.read_text()))


@dataclass
class OperatorProcess:
    """``python -m dagwright.operator`` as a real child process."""

    kubeconfig: Path
    redis_url: str
    env: dict[str, str] = field(default_factory=dict)
    process: Process | None = None
    metrics_port: int = field(default_factory=free_port)
    log: Path = field(
        default_factory=lambda: Path(tempfile.mkdtemp(prefix="dagwright-op-")) / "operator.log"
    )

    def start(self) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "DAGWRIGHT_REDIS_URL": self.redis_url,
            "DAGWRIGHT_HEALTH_PORT": "0",
            "DAGWRIGHT_METRICS_PORT": str(self.metrics_port),
            "DAGWRIGHT_STATUS_INTERVAL_SECONDS": "0.2",
            "DAGWRIGHT_POOL_INTERVAL_SECONDS": "0.5",
            "DAGWRIGHT_JOB_HEARTBEAT_TIMEOUT_SECONDS": "3",
            **self.env,
        }
        self.process = Process(
            "operator", [sys.executable, "-m", "dagwright.operator"], self.log, env=env
        )
        self.process.start()

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def check(self) -> None:
        assert self.process is not None
        self.process.check()


@pytest.fixture(scope="session")
def operator(
    cluster: TestCluster, redis_server: RedisServer, crds: None
) -> Iterator[OperatorProcess]:
    """The operator every end-to-end test shares (tests that kill it start their own)."""
    proc = OperatorProcess(cluster.kubeconfig, redis_server.url)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        print(f"\noperator log: {proc.log}")


@dataclass
class Pools:
    """WorkerPools backed by fresh KWOK nodes, deleted after the test."""

    kube: client.ApiClient
    nodes: Nodes
    created: list[str] = field(default_factory=list)
    members: dict[str, list[str]] = field(default_factory=dict)

    async def create(
        self,
        capabilities: list[str],
        *,
        size: int = 1,
        max_concurrency: int = 4,
        force_failover: bool = False,
        extra_spec: dict[str, Any] | None = None,
        **node_resources: Any,
    ) -> str:
        name = f"pool-{secrets.token_hex(3)}"
        label = {"dagwright.io/test-pool": name}
        self.members[name] = [await self.nodes.create(label, **node_resources) for _ in range(size)]
        objects = client.CustomObjectsApi(self.kube)
        await objects.create_cluster_custom_object(
            GROUP,
            VERSION,
            "workerpools",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "WorkerPool",
                "metadata": {"name": name},
                "spec": {
                    "capabilities": capabilities,
                    "nodeSelector": label,
                    "maxConcurrency": max_concurrency,
                    "forceFailover": force_failover,
                    **(extra_spec or {}),
                },
            },
        )
        self.created.append(name)
        return name

    async def add_node(self, pool: str, *, isolated: bool = False) -> str:
        """Another node for ``pool``; ``isolated`` ones can be killed (tests of node death)."""
        node = await self.nodes.create({"dagwright.io/test-pool": pool}, isolated=isolated)
        self.members[pool].append(node)
        return node

    async def delete_all(self) -> None:
        objects = client.CustomObjectsApi(self.kube)
        for name in self.created:
            try:
                await objects.delete_cluster_custom_object(GROUP, VERSION, "workerpools", name)
            except ApiException as exc:
                if exc.status != 404:
                    raise


@pytest.fixture
async def pools(kube: client.ApiClient, nodes: Nodes, crds: None) -> AsyncIterator[Pools]:
    helper = Pools(kube, nodes)
    try:
        yield helper
    finally:
        await helper.delete_all()


@dataclass
class ApiProcess:
    """``python -m dagwright.api`` (uvicorn) as a real child process."""

    kubeconfig: Path
    redis_url: str
    namespace: str
    token: str
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: Process | None = None
    log: Path = field(
        default_factory=lambda: Path(tempfile.mkdtemp(prefix="dagwright-api-")) / "api.log"
    )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "DAGWRIGHT_REDIS_URL": self.redis_url,
            "DAGWRIGHT_API_HOST": "127.0.0.1",
            "DAGWRIGHT_API_PORT": str(self.port),
            "DAGWRIGHT_API_NAMESPACE": self.namespace,
            "DAGWRIGHT_API_TOKEN": self.token,
            **self.env,
        }
        self.process = Process("api", [sys.executable, "-m", "dagwright.api"], self.log, env=env)
        self.process.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            self.process.check()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"the API did not listen on {self.port}:\n{self.process.tail()}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


API_TOKEN = "test-token"


@pytest.fixture(scope="session")
async def api_namespace(core: client.CoreV1Api) -> AsyncIterator[str]:
    """The namespace the API server process serves by default."""
    name = f"api-{secrets.token_hex(3)}"
    await core.create_namespace(
        body={"metadata": {"name": name, "labels": {"dagwright.io/test": "true"}}}
    )
    try:
        yield name
    finally:
        await core.delete_namespace(name)


@pytest.fixture(scope="session")
def api_server(
    cluster: TestCluster, redis_server: RedisServer, crds: None, api_namespace: str
) -> Iterator[ApiProcess]:
    """The REST API as users run it, with a static token and a generous rate limit."""
    proc = ApiProcess(
        cluster.kubeconfig,
        redis_server.url,
        api_namespace,
        API_TOKEN,
        env={"DAGWRIGHT_API_RATE_PER_SECOND": "1000", "DAGWRIGHT_API_RATE_BURST": "1000"},
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        print(f"\napi log: {proc.log}")


# Several operator instances of one test (tests/e2e: faults, trust) ---------------

LEASE = 3.0
FAST = {"DAGWRIGHT_LEASE_SECONDS": str(LEASE), "DAGWRIGHT_HEARTBEAT_SECONDS": "0.5"}


class Fleet:
    """Operator instances of one test; the shared operator steps aside meanwhile."""

    def __init__(self, cluster: TestCluster, redis_url: str):
        self.cluster = cluster
        self.redis_url = redis_url
        self.instances: list[OperatorProcess] = []

    def start(self, count: int = 1, **env: str) -> list[OperatorProcess]:
        started = []
        for _ in range(count):
            proc = OperatorProcess(self.cluster.kubeconfig, self.redis_url, env={**FAST, **env})
            proc.start()
            started.append(proc)
        self.instances += started
        return started

    def stop(self) -> None:
        for proc in self.instances:
            if proc.process is not None and proc.process.running():
                with contextlib.suppress(OSError):
                    proc.process.signal(signal.SIGCONT)  # a paused one must be able to stop
                proc.stop()

    async def wait_live(self, redis: aioredis.Redis, count: int) -> None:
        """Until ``count`` instances heartbeat (they know of each other)."""

        async def live() -> bool:
            return len(await redis.keys("dw:operator:*")) >= count

        await wait_for(f"{count} live operator instances", live, within=30)

    def logs(self) -> str:
        return "\n".join(p.log.read_text(errors="replace") for p in self.instances)


@pytest.fixture
async def fleet(
    cluster: TestCluster, redis_server: RedisServer, operator: OperatorProcess
) -> AsyncIterator[Fleet]:
    operator.stop()
    fleet = Fleet(cluster, redis_server.url)
    try:
        yield fleet
    finally:
        fleet.stop()
        operator.start()
