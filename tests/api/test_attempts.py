"""Job attempts report through the API with the token projected into their
pod: who is reporting comes from that pod (its owner and its immutable
environment), never from what the request says."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from kubernetes_asyncio import client

from dagwright.devcluster.redis_server import RedisServer
from tests.conftest import Pools
from tests.helpers import api_in_process, create_execution, dag
from tests.worker.test_runtime import bound_token, pod_token

pytestmark = pytest.mark.usefixtures("operator")
P = "/api/distributed/attempts"


@pytest.fixture
async def api(
    kube: client.ApiClient, redis_server: RedisServer, namespace: str
) -> AsyncIterator[httpx.AsyncClient]:
    async with api_in_process(kube, redis_server.url, namespace, token="static") as http:
        yield http


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_an_attempt_reports_as_its_pod_and_nothing_else_can(
    api: httpx.AsyncClient,
    kube: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    pools: Pools,
) -> None:
    await pools.create(["cpu"])
    await create_execution(kube, namespace, "rep", dag([{"name": "train"}], duration="600s"))
    token, pod = await pod_token(core, namespace, "rep-train-1")

    assert (await api.get(f"{P}/latest-checkpoint", headers=bearer(token))).status_code == 404
    saved = await api.post(
        f"{P}/checkpoint", json={"path": "s3://b/step-10", "step": 10}, headers=bearer(token)
    )
    assert saved.status_code == 200, saved.text
    assert saved.json() == {"executionId": "rep", "job": "train", "attempt": 1}
    latest = (await api.get(f"{P}/latest-checkpoint", headers=bearer(token))).json()
    assert latest == {"path": "s3://b/step-10", "step": 10, "attempt": 1}
    beat = await api.post(
        f"{P}/heartbeat",
        json={"intervalSeconds": 5, "progress": {"done": 3, "total": 10}},
        headers=bearer(token),
    )
    assert beat.status_code == 200, beat.text

    # What the request says about itself does not matter: there is nothing to say.
    extra = await api.post(
        f"{P}/checkpoint", json={"path": "x", "job": "other", "attempt": 9}, headers=bearer(token)
    )
    assert extra.status_code == 422

    # A token for the Kubernetes API, the static admin token, no token: not a pod's.
    kube_token = await bound_token(
        core, namespace, pod, audience="https://kubernetes.default.svc.cluster.local"
    )
    for headers in (bearer(kube_token), bearer("static"), {}):
        refused = await api.post(f"{P}/checkpoint", json={"path": "y"}, headers=headers)
        assert refused.status_code == 401, refused.text
        assert "error" in refused.json()

    # A pod that is no job attempt of an execution: its own token gets it nowhere.
    await core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "bystander"},
            "spec": {"containers": [{"name": "job", "image": "busybox"}]},
        },
    )
    bystander = await core.read_namespaced_pod("bystander", namespace)
    other = await bound_token(core, namespace, bystander)
    refused = await api.post(f"{P}/checkpoint", json={"path": "z"}, headers=bearer(other))
    assert refused.status_code == 403, refused.text
    latest = (await api.get(f"{P}/latest-checkpoint", headers=bearer(token))).json()
    assert latest["path"] == "s3://b/step-10"  # nothing the refused callers sent landed
