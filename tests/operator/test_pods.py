"""Job pods as the operator builds them (pure: no cluster needed)."""

from __future__ import annotations

import pytest

from dagwright.core.graph import build_dag
from dagwright.core.spec import DAGExecutionSpec
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
