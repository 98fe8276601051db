"""Job pods as the operator builds them (pure: no cluster needed)."""

from __future__ import annotations

from typing import Any

import pytest

from dagwright.core.graph import build_dag
from dagwright.core.podspec import PodSettings
from dagwright.core.spec import DAGExecutionSpec, Resources
from dagwright.operator.pods import Owner, Placement, build_pod, repository

WORKER = "ghcr.io/dagwright/worker:0.1.0"


def pod_for(image: str, **job: object) -> dict[str, object]:
    spec = DAGExecutionSpec.model_validate({"jobs": [{"name": "train", "image": image, **job}]})
    owner = Owner(name="pipeline", namespace="ml", uid="uid-1")
    return build_pod(
        owner,
        build_dag(spec).jobs["train"],
        attempt=2,
        epoch=7,
        placement=Placement(),
        runtime_api_url="http://dagwright-api.dagwright.svc:8080",
        runtime_image=WORKER,
    )


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("ghcr.io/dagwright/worker:0.1.0", "ghcr.io/dagwright/worker"),
        ("ghcr.io/dagwright/worker", "ghcr.io/dagwright/worker"),
        ("localhost:5000/worker:dev", "localhost:5000/worker"),
        ("ghcr.io/dagwright/worker@sha256:abc", "ghcr.io/dagwright/worker"),
    ],
)
def test_repository_strips_tag_and_digest(image: str, expected: str) -> None:
    assert repository(image) == expected


def test_worker_image_jobs_keep_the_runtime_entrypoint() -> None:
    pod = pod_for("ghcr.io/dagwright/worker:0.2.0", command=["python", "train.py"], args=["--x"])
    container = pod["spec"]["containers"][0]  # type: ignore[index]
    assert "command" not in container
    assert container["args"] == ["python", "train.py", "--x"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["DAGWRIGHT_EXECUTION_UID"] == "uid-1"
    assert env["DAGWRIGHT_ATTEMPT"] == "2"
    assert env["DAGWRIGHT_API_URL"] == "http://dagwright-api.dagwright.svc:8080"
    assert not any("REDIS" in name for name in env)  # no credentials to dagwright's state


def test_job_pods_report_with_a_token_only_dagwright_accepts() -> None:
    pod = pod_for(WORKER)
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False  # type: ignore[index]
    (volume,) = spec["volumes"]  # type: ignore[index]
    (source,) = volume["projected"]["sources"]
    assert source["serviceAccountToken"]["audience"] == "dagwright"
    container = spec["containers"][0]  # type: ignore[index]
    (mount,) = container["volumeMounts"]
    assert mount == {
        "name": volume["name"],
        "mountPath": "/var/run/secrets/dagwright",
        "readOnly": True,
    }
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["DAGWRIGHT_TOKEN_FILE"] == "/var/run/secrets/dagwright/token"


def test_other_images_get_their_command_as_written() -> None:
    pod = pod_for("busybox:1.36", command=["sh", "-c"], args=["echo hi"])
    container = pod["spec"]["containers"][0]  # type: ignore[index]
    assert container["command"] == ["sh", "-c"]
    assert container["args"] == ["echo hi"]


def placed(placement: Placement, **job: object) -> dict[str, Any]:
    spec = DAGExecutionSpec.model_validate({"jobs": [{"name": "j", "image": "x", **job}]})
    owner = Owner(name="p", namespace="ml", uid="u")
    return build_pod(owner, build_dag(spec).jobs["j"], 1, 1, placement)


def test_restricted_defaults_without_forcing_non_root() -> None:
    pod = placed(Placement())
    assert pod["spec"]["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    container = pod["spec"]["containers"][0]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod["spec"]["automountServiceAccountToken"] is False
    # A pool whose policy forbids root: non-root unless the job names a user.
    assert placed(Placement(non_root=True))["spec"]["securityContext"]["runAsNonRoot"] is True
    named = placed(Placement(non_root=True), securityContext={"runAsUser": 1000})
    assert "runAsNonRoot" not in named["spec"]["securityContext"]


def test_a_jobs_security_context_is_merged_field_by_field() -> None:
    pod = placed(
        Placement(),
        containerSecurityContext={"privileged": True, "capabilities": {"add": ["SYS_ADMIN"]}},
    )
    context = pod["spec"]["containers"][0]["securityContext"]
    # The API server refuses allowPrivilegeEscalation false beside privileged.
    assert context == {"privileged": True, "capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]}}


def test_the_jobs_affinity_keeps_the_operators_node_pinning_in_every_term() -> None:
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
                ]
            }
        },
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname"}}
            ]
        },
    }
    pod = placed(Placement(node="n1", avoid=("n2",)), affinity=affinity)
    got = pod["spec"]["affinity"]
    terms = got["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    pin = [
        {"key": "metadata.name", "operator": "In", "values": ["n1"]},
        {"key": "metadata.name", "operator": "NotIn", "values": ["n2"]},
    ]
    assert [t["matchFields"] for t in terms] == [pin, pin]
    assert terms[0]["matchExpressions"][0]["values"] == ["a"]
    assert got["podAntiAffinity"] == affinity["podAntiAffinity"]


def test_pool_resources_and_settings_sit_below_the_jobs() -> None:
    placement = Placement(
        pool="gpu",
        resources=Resources(limits={"nvidia.com/gpu": "1", "memory": "8Gi"}),
        defaults=PodSettings.model_validate(
            {
                "volumes": [{"name": "shm", "emptyDir": {"medium": "Memory"}}],
                "volumeMounts": [{"name": "shm", "mountPath": "/dev/shm"}],
                "priorityClassName": "batch-low",
            }
        ),
    )
    pod = placed(placement, resources={"limits": {"memory": "16Gi"}}, schedulerName="volcano")
    container = pod["spec"]["containers"][0]
    assert container["resources"] == {"limits": {"nvidia.com/gpu": "1", "memory": "16Gi"}}
    assert container["volumeMounts"] == [{"name": "shm", "mountPath": "/dev/shm"}]
    assert pod["spec"]["volumes"] == [{"name": "shm", "emptyDir": {"medium": "Memory"}}]
    assert pod["spec"]["schedulerName"] == "volcano"
    assert pod["spec"]["priorityClassName"] == "batch-low"
