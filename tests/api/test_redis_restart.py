"""The API after Redis restarts: its pooled connections died with the old
server; the first request on each must not become the caller's 503."""

from __future__ import annotations

from kubernetes_asyncio import client

from dagwright.devcluster.redis_server import RedisServer
from tests.conftest import API_TOKEN, wait_for
from tests.helpers import api_in_process


async def test_requests_after_a_redis_restart_succeed(kube: client.ApiClient, crds: None) -> None:
    server = RedisServer()
    server.start()
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    try:
        async with api_in_process(kube, server.url, "default", token=API_TOKEN) as http:

            async def served() -> bool | None:
                # (A fresh cluster's CRD storage may still be initializing: 503.)
                answer = await http.get("/api/distributed/queue/stats", headers=auth)
                return answer.status_code == 200 or None

            await wait_for("the API's first answer", served, within=30)
            for _ in range(3):  # several pooled connections
                answer = await http.get("/api/distributed/queue/stats", headers=auth)
                assert answer.status_code == 200, answer.text
            server.restart()
            for _ in range(5):
                answer = await http.get("/api/distributed/queue/stats", headers=auth)
                assert answer.status_code == 200, answer.text
    finally:
        server.stop()
