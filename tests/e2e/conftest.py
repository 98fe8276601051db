from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from dagwright.crdgen import GROUP, VERSION
from tests.conftest import Nodes


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
