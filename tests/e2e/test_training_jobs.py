"""Real training jobs (issue 18): full pod settings under the namespace's Pod
Security level and the pool's policy, job types from JobTemplates, and
best-fit pool choice, on the real control plane."""

from __future__ import annotations

import contextlib
import json
import secrets
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from dagwright.devcluster.nodes import SIM_DURATION
from dagwright.devcluster.redis_server import RedisServer
from dagwright.names import GROUP, TEMPLATES, VERSION
from tests.conftest import Pools, wait_for
from tests.helpers import api_in_process, create_execution, dag, read_pod, wait_phase

pytestmark = pytest.mark.usefixtures("operator")

TOKEN = "training-jobs-token"


async def enforce(core: client.CoreV1Api, namespace: str, level: str) -> None:
    """Label the namespace with a Pod Security level, and wait until the
    API server's admission applies it (it reads namespaces from a cache)."""
    await core.patch_namespace(
        namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": level}}}
    )
    root = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe"},
        "spec": {
            "containers": [{"name": "c", "image": "busybox"}],
            "securityContext": {"runAsUser": 0},
        },
    }

    async def applied() -> bool:
        try:
            await core.create_namespaced_pod(namespace, root, dry_run="All")
        except ApiException as exc:
            return exc.status == 403
        return level != "restricted"

    await wait_for(f"Pod Security {level} in {namespace}", applied)


async def training_prerequisites(core: client.CoreV1Api, namespace: str) -> str:
    """A bound PVC (a PV made for it), a Secret and a ServiceAccount; the PV's name."""
    pv = f"dataset-{secrets.token_hex(3)}"
    await core.create_persistent_volume(
        {
            "metadata": {"name": pv},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "manual",
                "persistentVolumeReclaimPolicy": "Delete",
                "claimRef": {"namespace": namespace, "name": "dataset"},
                "hostPath": {"path": f"/tmp/{pv}"},
            },
        }
    )
    await core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": "dataset"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "manual",
                "volumeName": pv,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    await core.create_namespaced_secret(
        namespace, {"metadata": {"name": "bucket"}, "stringData": {"key": "s3cr3t"}}
    )
    await core.create_namespaced_service_account(namespace, {"metadata": {"name": "trainer"}})

    async def bound() -> bool:
        claim = await core.read_namespaced_persistent_volume_claim("dataset", namespace)
        return bool(claim.status.phase == "Bound")

    await wait_for("the dataset PVC bound", bound)
    return pv


@contextlib.asynccontextmanager
async def training_namespace(
    core: client.CoreV1Api, namespace: str, pools: Pools, level: str
) -> AsyncIterator[None]:
    """The namespace at a Pod Security level, with what TRAIN uses, and a pool."""
    await enforce(core, namespace, level)
    pv = await training_prerequisites(core, namespace)
    try:
        await pools.create(["cpu", "gpu"])
        yield
    finally:
        await core.delete_persistent_volume(pv)


TRAIN = {
    "name": "train",
    # A root image, as the common training images are; run as root explicitly.
    "image": "pytorch/pytorch:2.4.0-cuda12.1-cudnn9-runtime",
    "serviceAccountName": "trainer",
    "securityContext": {"runAsUser": 0},
    "env": [
        {"name": "BUCKET_KEY", "valueFrom": {"secretKeyRef": {"name": "bucket", "key": "key"}}}
    ],
    "volumes": [
        {"name": "data", "persistentVolumeClaim": {"claimName": "dataset"}},
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
    ],
    "volumeMounts": [
        {"name": "data", "mountPath": "/data", "readOnly": True},
        {"name": "shm", "mountPath": "/dev/shm"},
    ],
}


async def test_a_training_job_with_a_pvc_secret_shm_and_root_runs_in_a_baseline_namespace(
    kube: client.ApiClient, core: client.CoreV1Api, namespace: str, pools: Pools
) -> None:
    async with training_namespace(core, namespace, pools, "baseline"):
        await create_execution(kube, namespace, "train", dag([TRAIN]))
        obj = await wait_phase(kube, namespace, "train", "Succeeded", "Failed", within=60)
        assert obj["status"]["phase"] == "Succeeded", obj["status"]
        pod = await read_pod(core, namespace, "train-train-1")
        assert pod is not None
        spec = pod.spec
        assert spec.service_account_name == "trainer"
        assert spec.automount_service_account_token is False
        assert spec.security_context.run_as_user == 0
        assert spec.security_context.run_as_non_root is None  # no longer forced
        assert spec.security_context.seccomp_profile.type == "RuntimeDefault"
        (container,) = spec.containers
        assert container.security_context.allow_privilege_escalation is False
        assert container.security_context.capabilities.drop == ["ALL"]
        volumes = {v.name: v for v in spec.volumes}
        assert volumes["data"].persistent_volume_claim.claim_name == "dataset"
        assert volumes["shm"].empty_dir.medium == "Memory"
        mounts = {m.mount_path: m.name for m in container.volume_mounts}
        assert mounts["/dev/shm"] == "shm"
        assert mounts["/data"] == "data"
        env = {e.name: e for e in container.env}
        assert env["BUCKET_KEY"].value_from.secret_key_ref.name == "bucket"


async def test_the_same_pod_in_a_restricted_namespace_fails_at_once_with_the_admission_message(
    kube: client.ApiClient, core: client.CoreV1Api, namespace: str, pools: Pools
) -> None:
    async with training_namespace(core, namespace, pools, "restricted"):
        spec = dag([{**TRAIN, "retries": 3}])
        await create_execution(kube, namespace, "train", spec)
        obj = await wait_phase(kube, namespace, "train", "Failed", "Succeeded", within=20)
        assert obj["status"]["phase"] == "Failed"
        job = obj["status"]["jobs"][0]
        assert job["failures"] == 1  # not retried into the same refusal
        assert 'violates PodSecurity "restricted:latest"' in job["message"]
        assert "runAsUser=0" in job["message"]
        assert "violates PodSecurity" in obj["status"]["message"]
        events = await core.list_namespaced_event(
            namespace, field_selector="involvedObject.name=train,reason=PodCreateFailed"
        )
        assert any("violates PodSecurity" in e.message for e in events.items)
        # A job that names no user follows the namespace: runAsNonRoot, admitted.
        await create_execution(kube, namespace, "plain", dag([{"name": "p"}]))
        await wait_phase(kube, namespace, "plain", "Succeeded", within=30)
        pod = await read_pod(core, namespace, "plain-p-1")
        assert pod.spec.security_context.run_as_non_root is True


async def test_the_specifications_execute_body_runs_against_a_preprocessing_job_template(
    kube: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    pools: Pools,
    redis_server: RedisServer,
) -> None:
    await pools.create(["cpu", "high-memory"])
    objects = client.CustomObjectsApi(kube)
    for name, requires in (("preprocessing", ["cpu", "high-memory"]), ("training", ["cpu"])):
        await objects.create_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            TEMPLATES,
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "JobTemplate",
                "metadata": {"name": name},
                "spec": {
                    "image": "python:3.11-slim",
                    "command": ["python", "-c", "import os; print(os.environ['DAGWRIGHT_CONFIG'])"],
                    "requires": requires,
                    "annotations": {SIM_DURATION: "300ms"},
                },
            },
        )
    # The original specification's body, verbatim: jobs name a type, no image.
    body = {
        "workflowId": "ml-pipeline",
        "jobs": [
            {
                "id": "data-prep",
                "name": "Data Preprocessing",
                "type": "preprocessing",
                "dependsOn": [],
                "config": {"dataset": "s3://datasets/imagenet", "batchSize": 256},
            },
            {
                "id": "train-model",
                "name": "Model Training",
                "type": "training",
                "dependsOn": ["data-prep"],
                "config": {"epochs": 10, "learningRate": 0.001},
            },
        ],
    }
    async with api_in_process(kube, redis_server.url, namespace, token=TOKEN) as api:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        created = await api.post("/api/distributed/execute", json=body, headers=auth)
        assert created.status_code == 201, created.text
        execution = created.json()["executionId"]
        obj = await wait_phase(kube, namespace, execution, "Succeeded", "Failed", within=60)
        assert obj["status"]["phase"] == "Succeeded", obj["status"]
        pod = await read_pod(core, namespace, f"{execution}-data-prep-1")
        (container,) = pod.spec.containers
        assert container.image == "python:3.11-slim"
        env = {e.name: e.value for e in container.env}
        config = {"dataset": "s3://datasets/imagenet", "batchSize": 256}
        assert json.loads(env["DAGWRIGHT_CONFIG"]) == config
        # The file's source: the annotation a downward API volume mounts.
        assert json.loads(pod.metadata.annotations["dagwright.io/config"]) == config
        (source,) = (v for v in pod.spec.volumes if v.name == "dagwright-config")
        assert source.downward_api.items[0].path == "config.json"
        assert env["DAGWRIGHT_CONFIG_FILE"] == "/etc/dagwright/config.json"
        assert env["DAGWRIGHT_JOB_TYPE"] == "preprocessing"

        # A type with no template, and no image: a 422 naming the type.
        body["jobs"] = [{"id": "x", "type": "distillation"}]
        refused = await api.post("/api/distributed/execute", json=body, headers=auth)
        assert refused.status_code == 422, refused.text
        assert "'distillation' has no JobTemplate" in refused.text

    # The same through kubectl: Failed, with the same sentence.
    await create_execution(kube, namespace, "untyped", {"jobs": [{"name": "x", "type": "nope"}]})
    obj = await wait_phase(kube, namespace, "untyped", "Failed", within=30)
    assert "'nope' has no JobTemplate" in obj["status"]["message"]


async def test_cpu_jobs_never_get_a_gpu_while_the_cpu_pool_has_room(
    kube: client.ApiClient, core: client.CoreV1Api, namespace: str, pools: Pools
) -> None:
    gpu_default = {"gpu": {"limits": {"nvidia.com/gpu": "1"}}}
    cpu = await pools.create(["cpu"], max_concurrency=10)
    memory = await pools.create(["cpu", "high-memory"], max_concurrency=10)
    gpu = await pools.create(
        ["cpu", "gpu", "ssd"],
        size=2,
        max_concurrency=50,
        gpus=8,
        extra_spec={"capabilityResources": gpu_default},
    )
    jobs: list[dict[str, Any]] = [{"name": f"c{i}"} for i in range(100)]
    jobs.append({"name": "gpu-job", "requires": ["gpu"]})
    jobs.append({"name": "plain", "requires": []})  # requires nothing: placed as cpu
    await create_execution(kube, namespace, "mixed", dag(jobs, "200ms", parallelism=60))
    obj = await wait_phase(kube, namespace, "mixed", "Succeeded", "Failed", within=120)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    listing = await core.list_namespaced_pod(namespace)
    placed: Counter[str] = Counter()
    for pod in listing.items:
        env = {e.name: e.value for e in pod.spec.containers[0].env}
        limits = pod.spec.containers[0].resources.limits or {}
        placed[env["DAGWRIGHT_POOL"]] += 1
        if env["DAGWRIGHT_JOB"] == "gpu-job":
            assert env["DAGWRIGHT_POOL"] == gpu
            assert limits.get("nvidia.com/gpu") == "1"
        else:
            assert env["DAGWRIGHT_POOL"] == cpu, env["DAGWRIGHT_JOB"]
            assert "nvidia.com/gpu" not in limits
    assert placed[cpu] == 101
    assert placed[gpu] == 1
    assert placed[memory] == 0


async def test_hostpath_or_root_on_a_pool_that_forbids_it_is_refused_with_the_rule(
    kube: client.ApiClient, namespace: str, pools: Pools, redis_server: RedisServer
) -> None:
    pool = await pools.create(["cpu"], extra_spec={"policy": {"allowRoot": False}})
    host = {"name": "host", "volumes": [{"name": "h", "hostPath": {"path": "/var/lib"}}]}
    root = {"name": "root", "containerSecurityContext": {"runAsUser": 0}}
    await create_execution(kube, namespace, "forbidden", dag([host, root]))
    obj = await wait_phase(kube, namespace, "forbidden", "Failed", within=20)
    message = obj["status"]["message"]
    assert (
        "volumes[h].hostPath: hostPath volumes are not allowed (policy.volumeTypes: "
        "persistentVolumeClaim, secret, configMap, emptyDir, ephemeral) in WorkerPool "
        f"{pool}" in message
    )
    assert "containerSecurityContext.runAsUser: root is not allowed (policy.allowRoot: false)" in (
        message
    )
    valid = next(c for c in obj["status"]["conditions"] if c["type"] == "Valid")
    assert valid["status"] == "False"
    assert not (await client.CoreV1Api(kube).list_namespaced_pod(namespace)).items

    # The REST API refuses the same before creating anything.
    async with api_in_process(kube, redis_server.url, namespace, token=TOKEN) as api:
        body = {
            "workflowId": "w",
            "jobs": [{"id": "host", "volumes": host["volumes"]}],
            "defaults": {"image": "busybox", "requires": ["cpu"]},
        }
        refused = await api.post(
            "/api/distributed/execute", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert refused.status_code == 422, refused.text
        assert "hostPath volumes are not allowed" in refused.text

    # And a job without root settings on that pool runs as non-root.
    await create_execution(kube, namespace, "plain", dag([{"name": "p"}]))
    await wait_phase(kube, namespace, "plain", "Succeeded", within=30)
    pod = await read_pod(client.CoreV1Api(kube), namespace, "plain-p-1")
    assert pod.spec.security_context.run_as_non_root is True
