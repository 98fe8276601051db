"""The manifests in examples/ run as the README says."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client

from dagwright.names import GROUP, VERSION
from tests.conftest import Nodes
from tests.helpers import record_pods, wait_phase

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

pytestmark = pytest.mark.usefixtures("operator")


@pytest.fixture
async def example_pools(
    kube: client.ApiClient, nodes: Nodes
) -> AsyncIterator[dict[str, list[str]]]:
    """The pools of examples/pools.yaml, each with two simulated nodes."""
    objects = client.CustomObjectsApi(kube)
    gpu_taint = [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
    members = {
        "cpu": [await nodes.create({"dagwright.io/pool": "cpu"}) for _ in range(2)],
        "high-memory": [
            await nodes.create({"dagwright.io/pool": "high-memory"}, memory="1Ti") for _ in range(2)
        ],
        "gpu": [
            await nodes.create({"dagwright.io/pool": "gpu"}, gpus=8, taints=gpu_taint)
            for _ in range(2)
        ],
    }
    pools = list(yaml.safe_load_all((EXAMPLES / "pools.yaml").read_text()))
    for pool in pools:
        await objects.create_cluster_custom_object(GROUP, VERSION, "workerpools", pool)
    try:
        yield members
    finally:
        for pool in pools:
            await objects.delete_cluster_custom_object(
                GROUP, VERSION, "workerpools", pool["metadata"]["name"]
            )


async def test_training_pipeline_example_runs_to_success(
    kube: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    example_pools: dict[str, list[str]],
) -> None:
    manifest: dict[str, Any] = yaml.safe_load((EXAMPLES / "training-pipeline.yaml").read_text())
    objects = client.CustomObjectsApi(kube)
    async with record_pods(core, namespace) as history:
        await objects.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "dagexecutions", manifest
        )
        obj = await wait_phase(
            kube, namespace, "training-pipeline", "Succeeded", "Failed", within=90
        )
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    history.check_never_twice()
    assert history.max_alive() <= 4  # parallelism: 4
    pods = {
        p.metadata.labels["dagwright.io/job"]: p
        for p in (await core.list_namespaced_pod(namespace)).items
    }
    assert pods["preprocess"].spec.node_name in example_pools["high-memory"]
    for shard in range(4):
        pod = pods[f"train-shard-{shard}"]
        assert pod.spec.node_name in example_pools["gpu"]
        assert pod.spec.containers[0].resources.limits == {
            "nvidia.com/gpu": "1"
        }  # the pool's default
        env = {e.name: e.value for e in pod.spec.containers[0].env}
        config = {"shard": shard, "shards": 4, "epochs": 10, "lr": 0.001, "batchSize": 256}
        assert json.loads(env["DAGWRIGHT_CONFIG"]) == config
    assert pods["register-model"].spec.node_name in example_pools["cpu"]
