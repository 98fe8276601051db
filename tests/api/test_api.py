"""The REST facade against the real cluster, Redis and a running operator."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from kubernetes_asyncio import client

from dagwright.api.app import create_app
from dagwright.api.settings import ApiSettings
from dagwright.devcluster.nodes import SIM_DURATION
from dagwright.devcluster.redis_server import RedisServer
from tests.conftest import Pools, wait_for
from tests.helpers import api_in_process, read_pod

pytestmark = pytest.mark.usefixtures("operator")
TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
P = "/api/distributed"


@pytest.fixture
async def api(
    kube: client.ApiClient, redis_server: RedisServer, namespace: str
) -> AsyncIterator[httpx.AsyncClient]:
    async with api_in_process(
        kube, redis_server.url, namespace, token=TOKEN, max_body_bytes=200_000
    ) as http:
        yield http


def request(jobs: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "workflowId": "nightly",
        "jobs": jobs,
        "defaults": {
            "image": "busybox",
            "requires": ["cpu"],
            "annotations": {SIM_DURATION: "300ms"},
        },
        **extra,
    }


async def phase_of(api: httpx.AsyncClient, execution: str) -> str | None:
    phase = (await api.get(f"{P}/execute/{execution}", headers=AUTH)).json().get("phase")
    return str(phase) if phase else None


async def test_execute_runs_the_jobs_and_reports_success(
    api: httpx.AsyncClient, core: client.CoreV1Api, namespace: str, pools: Pools
) -> None:
    await pools.create(["cpu"])
    body = request(
        [
            {"id": "prep", "name": "Preprocess the data", "type": "preprocessing"},
            {"id": "train", "type": "training", "dependsOn": ["prep"], "config": {"epochs": 3}},
        ],
        parallelism=2,
    )
    created = await api.post(f"{P}/execute", json=body, headers=AUTH)
    assert created.status_code == 201, created.text
    execution = created.json()["executionId"]
    assert execution.startswith("nightly-")
    assert created.json()["jobs"] == 2

    async def succeeded() -> bool:
        return await phase_of(api, execution) == "Succeeded"

    await wait_for("the execution to succeed", succeeded, within=60)
    state = (await api.get(f"{P}/execute/{execution}", headers=AUTH)).json()
    assert state["progress"] == "2/2"
    assert [j["phase"] for j in state["jobs"]] == ["Succeeded", "Succeeded"]
    assert state["workflowId"] == "nightly"
    prep = await read_pod(core, namespace, f"{execution}-prep-1")
    assert prep.metadata.annotations["dagwright.io/display-name"] == "Preprocess the data"


@pytest.mark.parametrize(
    ("body", "status", "expected"),
    [
        (
            request([{"id": "a", "dependsOn": ["b"]}, {"id": "b", "dependsOn": ["a"]}]),
            422,
            "dependency cycle",
        ),
        (request([{"id": "a", "dependsOn": ["ghost"]}]), 422, "unknown job(s) 'ghost'"),
        (request([{"id": "a"}], priority=11), 422, "priority"),
        (request([]), 422, "jobs"),
        ({"jobs": "nope"}, 422, "workflowId"),
    ],
)
async def test_bad_bodies_get_a_clear_4xx(
    api: httpx.AsyncClient, body: Any, status: int, expected: str
) -> None:
    response = await api.post(f"{P}/execute", json=body, headers=AUTH)
    assert response.status_code == status
    assert expected in response.text
    assert "Traceback" not in response.text


async def test_unknown_ids_conflicts_and_oversized_bodies(
    api: httpx.AsyncClient, pools: Pools
) -> None:
    assert (await api.get(f"{P}/execute/nope", headers=AUTH)).status_code == 404
    body = request([{"id": "a", "requires": ["quantum"]}], executionId="no-pool")
    refused = await api.post(f"{P}/execute", json=body, headers=AUTH)
    assert refused.status_code == 422  # checked as the operator will: no pool offers it
    assert "requires quantum, which no WorkerPool offers" in refused.text
    await pools.create(["cpu"])
    body = request([{"id": "a"}], executionId="fixed-id")
    assert (await api.post(f"{P}/execute", json=body, headers=AUTH)).status_code == 201
    again = await api.post(f"{P}/execute", json=body, headers=AUTH)
    assert again.status_code == 409
    assert (
        again.json()["error"]
        == f"execution fixed-id already exists in {again.json()['error'].split()[-1]}"
    )
    huge = request([{"id": f"j{i}", "config": {"blob": "x" * 100}} for i in range(3000)])
    assert (await api.post(f"{P}/execute", json=huge, headers=AUTH)).status_code == 413


async def test_every_call_but_health_needs_the_token(api: httpx.AsyncClient) -> None:
    assert (await api.get(f"{P}/workers")).status_code == 401
    assert (
        await api.get(f"{P}/workers", headers={"Authorization": "Bearer forged"})
    ).status_code == 401
    assert (await api.get(f"{P}/workers", headers={"Authorization": "Bearer"})).status_code == 401
    assert (await api.get(f"{P}/workers", headers=AUTH)).status_code == 200
    assert (await api.get(f"{P}/health")).status_code != 401  # health stays open


async def test_suspend_resume_cancel(api: httpx.AsyncClient, pools: Pools) -> None:
    await pools.create(["cpu"])
    body = request(
        [{"id": "a", "annotations": {SIM_DURATION: "1h"}}, {"id": "b", "dependsOn": ["a"]}]
    )
    execution = (await api.post(f"{P}/execute", json=body, headers=AUTH)).json()["executionId"]
    suspended = await api.post(f"{P}/execute/{execution}/suspend", headers=AUTH)
    assert suspended.json()["suspended"] is True
    resumed = await api.post(f"{P}/execute/{execution}/resume", headers=AUTH)
    assert resumed.json()["suspended"] is False
    cancelled = await api.post(
        f"{P}/execute/{execution}/cancel", json={"mode": "Terminate"}, headers=AUTH
    )
    assert cancelled.json()["shutdown"] == "Terminate"

    async def is_cancelled() -> bool:
        return await phase_of(api, execution) == "Cancelled"

    await wait_for("the execution cancelled", is_cancelled, within=30)


async def test_queue_pause_stops_new_starts_everywhere(
    api: httpx.AsyncClient, core: client.CoreV1Api, namespace: str, pools: Pools
) -> None:
    await pools.create(["cpu"])
    paused = await api.post(f"{P}/queue/pause", headers=AUTH)
    try:
        assert paused.json()["paused"] is True
        execution = (
            await api.post(f"{P}/execute", json=request([{"id": "a"}]), headers=AUTH)
        ).json()["executionId"]

        async def held() -> bool:
            return await phase_of(api, execution) == "Suspended"

        await wait_for("the execution held by the paused queue", held, within=20)
        assert await read_pod(core, namespace, f"{execution}-a-1") is None
    finally:
        resumed = await api.post(f"{P}/queue/resume", headers=AUTH)
    assert resumed.json()["paused"] is False

    async def succeeded() -> bool:
        return await phase_of(api, execution) == "Succeeded"

    await wait_for("the execution to run after resume", succeeded, within=30)
    stats = (await api.get(f"{P}/queue/stats", headers=AUTH)).json()
    assert stats["executions"].get("Succeeded", 0) >= 1


async def test_workers_register_heartbeat_list_and_leave(
    api: httpx.AsyncClient, pools: Pools
) -> None:
    pool = await pools.create(["gpu"], size=2)
    registration = {
        "workerId": "gpu-box-1",
        "hostname": "gpu-box-1.lab",
        "capabilities": ["gpu"],
        "maxConcurrency": 2,
        "metadata": {"cpuCores": 32, "memoryGB": 256, "version": "0.1.0"},
    }
    assert (
        await api.post(f"{P}/workers/register", json=registration, headers=AUTH)
    ).status_code == 201
    beat = await api.post(f"{P}/workers/gpu-box-1/heartbeat", json={"currentLoad": 1}, headers=AUTH)
    assert beat.status_code == 200

    async def listed() -> list[dict[str, Any]] | None:
        workers = (await api.get(f"{P}/workers", headers=AUTH)).json()
        pool_nodes = [w for w in workers if w.get("pool") == pool]
        return workers if len(pool_nodes) == 2 else None  # the pool's status has caught up

    workers = await wait_for("registered workers and pool nodes in one list", listed, within=20)
    mine = next(w for w in workers if w["workerId"] == "gpu-box-1")
    assert (mine["source"], mine["healthy"], mine["currentLoad"]) == ("registered", True, 1)
    assert {w["workerId"] for w in workers if w.get("pool") == pool} == set(pools.members[pool])
    assert (mine["schedulable"], mine["pool"]) == (False, None)  # names no pool node
    assert "no WorkerPool node is named gpu-box-1.lab" in mine["reason"]
    # Unregistering drains it: listed as such until the registration lapses,
    # and still heard from (its running jobs finish).
    assert (await api.delete(f"{P}/workers/gpu-box-1", headers=AUTH)).status_code == 204
    beat = await api.post(f"{P}/workers/gpu-box-1/heartbeat", json={}, headers=AUTH)
    assert beat.status_code == 200
    workers = (await api.get(f"{P}/workers", headers=AUTH)).json()
    mine = next(w for w in workers if w["workerId"] == "gpu-box-1")
    assert (mine["draining"], mine["schedulable"]) == (True, False)
    assert (await api.delete(f"{P}/workers/no-such-worker", headers=AUTH)).status_code == 404


async def test_health_reports_redis_kubernetes_and_the_operator(
    api: httpx.AsyncClient, kube: client.ApiClient, namespace: str
) -> None:
    async def healthy() -> dict[str, Any] | None:
        response = await api.get(f"{P}/health")
        return response.json() if response.status_code == 200 else None

    body = await wait_for("a healthy API", healthy, within=20)
    assert body["redis"]
    assert body["kubernetes"]
    assert body["operators"] >= 1
    # Redis away: 503 with a body that says so.
    broken = create_app(
        ApiSettings(redis_url="redis://127.0.0.1:1/0", namespace=namespace, token=TOKEN), kube=kube
    )
    async with broken.router.lifespan_context(broken):
        transport = httpx.ASGITransport(app=broken)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            response = await http.get(f"{P}/health")
            assert response.status_code == 503
            assert response.json()["redis"] is False
            stats = await http.get(f"{P}/queue/stats", headers=AUTH)
            assert stats.status_code == 503
            assert stats.json()["error"] == "redis unavailable"


async def test_kubernetes_tokens_are_reviewed_and_namespaces_enforced(
    api: httpx.AsyncClient,
    core: client.CoreV1Api,
    kube: client.ApiClient,
    namespace: str,
    redis_server: RedisServer,
    pools: Pools,
) -> None:
    """A ServiceAccount token works as with kubectl: authenticated by TokenReview,
    allowed per namespace by SubjectAccessReview."""
    await pools.create(["cpu"])
    await core.create_namespaced_service_account(namespace, {"metadata": {"name": "alice"}})
    issued = await core.create_namespaced_service_account_token(
        "alice", namespace, {"spec": {"expirationSeconds": 600}}
    )
    alice = {"Authorization": f"Bearer {issued.status.token}"}
    body = request([{"id": "a"}], executionId="by-alice")

    denied = await api.post(f"{P}/execute", json=body, headers=alice)
    assert denied.status_code == 403
    expected = f"system:serviceaccount:{namespace}:alice may not create dagexecutions.dagwright.io in namespace {namespace}"
    assert denied.json()["error"] == expected

    rbac = client.RbacAuthorizationV1Api(kube)
    await rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "dag-runner"},
            "rules": [
                {
                    "apiGroups": ["dagwright.io"],
                    "resources": ["dagexecutions"],
                    "verbs": ["create", "get"],
                }
            ],
        },
    )
    await rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "alice-runs-dags"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "dag-runner",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "alice", "namespace": namespace}],
        },
    )
    # The 403 above is cached for a minute; a fresh API instance asks again.
    settings = ApiSettings(redis_url=redis_server.url, namespace=namespace, token=TOKEN)
    fresh = create_app(settings, kube=kube)
    async with (
        fresh.router.lifespan_context(fresh),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=fresh), base_url="http://api") as http,
    ):
        created = await http.post(f"{P}/execute", json=body, headers=alice)
        assert created.status_code == 201, created.text
        assert (await http.get(f"{P}/execute/by-alice", headers=alice)).status_code == 200
        other = await http.get(
            f"{P}/execute/by-alice", params={"namespace": "default"}, headers=alice
        )
        assert other.status_code == 403  # her Role is only in her namespace
        assert (
            await http.post(f"{P}/execute/by-alice/cancel", headers=alice)
        ).status_code == 403  # no patch
        assert (await http.post(f"{P}/queue/pause", headers=alice)).status_code == 403
        forged = {"Authorization": f"Bearer {issued.status.token[:-4]}abcd"}
        assert (await http.get(f"{P}/execute/by-alice", headers=forged)).status_code == 401


async def test_bursts_get_429_with_retry_after(
    kube: client.ApiClient, redis_server: RedisServer, namespace: str
) -> None:
    settings = ApiSettings(
        redis_url=redis_server.url,
        namespace=namespace,
        token=TOKEN,
        rate_per_second=1,
        rate_burst=5,
    )
    app = create_app(settings, kube=kube)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http,
    ):
        codes = [(await http.get(f"{P}/execute/none", headers=AUTH)).status_code for _ in range(7)]
        assert codes[:5] == [404] * 5  # within the burst: answered
        assert codes[5:] == [429, 429]
        limited = await http.get(f"{P}/execute/none", headers=AUTH)
        assert limited.json()["error"] == "too many requests"
        assert int(limited.headers["Retry-After"]) >= 1
        other = {"Authorization": "Bearer someone-else"}
        assert (
            await http.get(f"{P}/execute/none", headers=other)
        ).status_code == 401  # its own bucket
        assert (await http.get(f"{P}/health")).status_code != 429  # health is never limited


# Issue 15, items 14-15: what a hostile or careless caller can make the API do --------


def limited_app(kube: client.ApiClient, redis_url: str, namespace: str, **settings: Any) -> Any:
    merged: dict[str, Any] = {"rate_per_second": 0.5, "rate_burst": 5, **settings}
    return create_app(
        ApiSettings(redis_url=redis_url, namespace=namespace, token=TOKEN, **merged), kube=kube
    )


async def test_made_up_tokens_and_forwarded_addresses_are_limited_by_address(
    kube: client.ApiClient, redis_server: RedisServer, namespace: str
) -> None:
    app = limited_app(kube, redis_server.url, namespace)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http,
    ):
        codes = [
            (
                await http.get(
                    f"{P}/workers",
                    headers={
                        "Authorization": f"Bearer bogus-{i}",  # each one a TokenReview
                        "X-Forwarded-For": f"10.9.8.{i}",  # and a new "client"
                    },
                )
            ).status_code
            for i in range(8)
        ]
        assert codes[:5] == [401] * 5
        assert codes[5:] == [429] * 3

        # A caller whose token is known good has a bucket of its own.
        async def answered() -> bool:
            # (A fresh control plane may still be starting: 503 until it is.)
            return (await http.get(f"{P}/workers", headers=AUTH)).status_code == 200

        await wait_for("the known caller answered", answered, within=30)


async def test_forwarded_headers_count_only_from_trusted_proxies(
    cluster: Any, redis_server: RedisServer, api_namespace: str
) -> None:
    from tests.conftest import API_TOKEN, ApiProcess

    proc = ApiProcess(
        cluster.kubeconfig,
        redis_server.url,
        api_namespace,
        API_TOKEN,
        env={"DAGWRIGHT_API_RATE_PER_SECOND": "0.5", "DAGWRIGHT_API_RATE_BURST": "5"},
    )
    proc.start()
    try:
        async with httpx.AsyncClient(base_url=proc.url) as http:
            codes = [
                (
                    await http.get(
                        f"{P}/workers",
                        headers={"Authorization": "Bearer nope", "X-Forwarded-For": f"10.0.0.{i}"},
                    )
                ).status_code
                for i in range(8)
            ]
    finally:
        proc.stop()
    assert codes[5:] == [429] * 3, codes  # loopback is no trusted proxy by default


async def test_bodies_are_limited_as_they_stream_and_only_after_authentication(
    kube: client.ApiClient, redis_server: RedisServer, namespace: str
) -> None:
    app = limited_app(kube, redis_server.url, namespace, rate_burst=100, max_body_bytes=10_000)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"x" * 1000  # chunked: no Content-Length to refuse up front

    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http,
    ):
        big = await http.post(f"{P}/execute", content=chunks(), headers=AUTH)
        assert big.status_code == 413
        stranger = await http.post(
            f"{P}/execute", content=chunks(), headers={"Authorization": "Bearer nope"}
        )
        assert stranger.status_code == 401  # refused before its body was read
        malformed = await http.post(
            f"{P}/execute",
            content=b"{not json",
            headers={**AUTH, "Content-Type": "application/json"},
        )
        assert malformed.status_code == 400  # as the README says
        assert malformed.json()["error"] == "malformed JSON"


async def test_redis_trouble_is_a_503_that_does_not_say_where_redis_is(
    kube: client.ApiClient, namespace: str
) -> None:
    app = limited_app(kube, "redis://127.0.0.1:1/0", namespace, rate_burst=100)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http,
    ):
        response = await http.get(f"{P}/workers", headers=AUTH)
    assert response.status_code == 503
    assert response.json() == {"error": "redis unavailable"}


async def test_an_execution_too_large_to_store_is_a_413(
    kube: client.ApiClient, redis_server: RedisServer, namespace: str, pools: Pools
) -> None:
    await pools.create(["cpu"])
    app = limited_app(kube, redis_server.url, namespace, rate_burst=100)
    body = request([{"id": "a", "config": {"blob": "x" * 2_500_000}}])
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http,
    ):
        response = await http.post(f"{P}/execute", json=body, headers=AUTH)
    assert response.status_code == 413, response.text
    assert "too large" in response.json()["error"]
    assert "grpc" not in response.text.lower()


async def test_the_swagger_page_needs_no_network_but_the_api(api: httpx.AsyncClient) -> None:
    page = await api.get("/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower()
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets
    for asset in assets:
        assert asset.startswith("/"), f"{asset} is not served by the API itself"
        assert (await api.get(asset)).status_code == 200, asset
