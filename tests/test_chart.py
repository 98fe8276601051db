"""The Helm chart: lint, schema-checked values, a server-side dry run on the
real API server, a real install, and the operator running with exactly the
chart's RBAC (a ServiceAccount token minted for it), which must be enough to
finish a DAG and must not allow more."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from dagwright.devcluster.build import ensure_binary
from tests.conftest import REPO, OperatorProcess, Pools, TestCluster, apply_crd, wait_for
from tests.helpers import SIM, create_execution, wait_phase

CHART = REPO / "charts" / "dagwright"


async def run(cluster: TestCluster, *argv: str, stdin: str | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
        stdin=asyncio.subprocess.PIPE if stdin is not None else None,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin else None), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def kubectl() -> list[str]:
    """kubectl from the PATH, else the one built into the rig's multi-call binary."""
    found = shutil.which("kubectl")
    return [found] if found else [str(ensure_binary("kube")), "kubectl"]


async def helm(cluster: TestCluster, *args: str) -> tuple[int, str, str]:
    return await run(cluster, str(ensure_binary("helm")), *args)


async def test_chart_lints_clean(cluster: TestCluster) -> None:
    code, out, err = await helm(cluster, "lint", "--strict", str(CHART))
    assert code == 0, out + err
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["--set", "operator.replicas=0"], "/operator/replicas"),
        (["--set", "operator.logFormat=xml"], "/operator/logFormat"),
        (["--set", "redis.persistence.size=lots"], "/redis/persistence/size"),
        (["--set", "operator.typo=1"], "additional properties 'typo' not allowed"),
        (["--set", "redis.bundled=false"], "redis.external.url or redis.external.existingSecret"),
    ],
)
async def test_bad_values_fail_with_a_clear_message(
    cluster: TestCluster, values: list[str], message: str
) -> None:
    code, out, err = await helm(cluster, "template", "dw", str(CHART), *values)
    assert code != 0, out
    assert message in err


async def test_rendered_chart_passes_a_server_side_dry_run(
    cluster: TestCluster, namespace: str
) -> None:
    code, rendered, err = await helm(
        cluster,
        "template",
        "dw",
        str(CHART),
        "--namespace",
        namespace,
        "--set",
        "scaleTargets[0].apiGroup=apps,scaleTargets[0].resource=deployments",
        "--set",
        "api.tokenSecret=dw-token",
    )
    assert code == 0, err
    kinds = sorted({doc["kind"] for doc in yaml.safe_load_all(rendered) if doc})
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "DaemonSet",
        "Deployment",
        "JobTemplate",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
        "StatefulSet",
    ]
    code, out, err = await run(
        cluster,
        *kubectl(),
        "apply",
        "--dry-run=server",
        "-n",
        namespace,
        "-f",
        "-",
        stdin=rendered,
    )
    assert code == 0, out + err
    assert "deployment.apps/dw-dagwright-operator created (server dry run)" in out


@pytest.fixture
async def release(
    cluster: TestCluster, core: client.CoreV1Api, namespace: str
) -> AsyncIterator[tuple[str, str]]:
    """The chart installed into a namespace that enforces the restricted Pod Security Standard."""
    await core.patch_namespace(
        namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )
    name = f"dw{secrets.token_hex(2)}"
    code, out, err = await helm(
        cluster, "install", name, str(CHART), "--namespace", namespace, "--set", "api.replicas=1"
    )
    assert code == 0, out + err
    try:
        yield name, namespace
    finally:
        await helm(cluster, "uninstall", name, "--namespace", namespace)


async def token_kubeconfig(cluster: TestCluster, core: client.CoreV1Api, sa: str, ns: str) -> Path:
    """A kubeconfig that authenticates as ServiceAccount ``sa``: its real identity, no impersonation."""
    minted = await core.create_namespaced_service_account_token(
        sa, ns, {"spec": {"expirationSeconds": 3600}}
    )
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    context = next(c["context"] for c in admin["contexts"] if c["name"] == admin["current-context"])
    cluster_entry = next(c for c in admin["clusters"] if c["name"] == context["cluster"])
    path = cluster.kubeconfig.parent / f"{sa}.kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster_entry],
                "users": [{"name": sa, "user": {"token": minted.status.token}}],
                "contexts": [
                    {"name": sa, "context": {"cluster": cluster_entry["name"], "user": sa}}
                ],
                "current-context": sa,
            }
        )
    )
    return path


async def test_installed_chart_runs_a_dag_with_exactly_its_rbac(
    cluster: TestCluster,
    core: client.CoreV1Api,
    kube: client.ApiClient,
    release: tuple[str, str],
    operator: OperatorProcess,
    pools: Pools,
) -> None:
    name, ns = release
    apps = client.AppsV1Api(kube)
    deployments = {d.metadata.name for d in (await apps.list_namespaced_deployment(ns)).items}
    assert deployments == {f"{name}-dagwright-operator", f"{name}-dagwright-api"}

    # Under the restricted Pod Security Standard the pods are admitted.
    async def operator_pods() -> bool:
        pods = await core.list_namespaced_pod(
            ns, label_selector="app.kubernetes.io/component=operator"
        )
        return len(pods.items) == 2

    await wait_for("both of the chart's operator pods admitted", operator_pods, within=30)

    kubeconfig = await token_kubeconfig(cluster, core, f"{name}-dagwright-operator", ns)
    as_operator = await config.new_client_from_config(config_file=str(kubeconfig))
    try:
        # Left out on purpose, and so forbidden.
        for call in (
            lambda: client.CoreV1Api(as_operator).list_namespaced_secret(ns),
            lambda: client.CoreV1Api(as_operator).delete_node("any"),
            lambda: client.CustomObjectsApi(as_operator).delete_namespaced_custom_object(
                "dagwright.io", "v1alpha1", ns, "dagexecutions", "any"
            ),
        ):
            with pytest.raises(ApiException) as refused:
                await call()
            assert refused.value.status == 403
    finally:
        await as_operator.close()

    # The shared operator steps aside; one with the chart's identity takes its place.
    await pools.create(["cpu"])
    operator.stop()
    restricted = OperatorProcess(kubeconfig, operator.redis_url)
    restricted.start()
    try:
        await create_execution(
            kube,
            ns,
            "rbac-check",
            {
                "defaults": {
                    "image": "busybox",
                    "requires": ["cpu"],
                    "annotations": {SIM: "200ms"},
                },
                "jobs": [{"name": "a"}, {"name": "b", "dependsOn": ["a"]}],
            },
        )
        await wait_phase(kube, ns, "rbac-check", "Succeeded", within=60)
        restricted.check()
        log = restricted.log.read_text()
        assert "Forbidden" not in log, log[-3000:]
        assert " 403" not in log, log[-3000:]
    finally:
        restricted.stop()
        operator.start()


async def test_a_pdb_only_where_there_is_more_than_one_replica(
    cluster: TestCluster, namespace: str
) -> None:
    async def pdbs(*values: str) -> list[str]:
        code, rendered, err = await helm(
            cluster, "template", "dw", str(CHART), "--namespace", namespace, *values
        )
        assert code == 0, err
        docs = [d for d in yaml.safe_load_all(rendered) if d]
        return sorted(d["metadata"]["name"] for d in docs if d["kind"] == "PodDisruptionBudget")

    assert await pdbs() == ["dw-dagwright-api", "dw-dagwright-operator"]
    assert await pdbs("--set", "operator.replicas=1") == ["dw-dagwright-api"]
    assert await pdbs("--set", "operator.replicas=1,api.replicas=1") == []
    named = await pdbs("--set", "fullnameOverride=flow")
    assert named == ["flow-api", "flow-operator"]


async def test_namespace_editors_may_create_executions_and_viewers_only_read(
    cluster: TestCluster,
    core: client.CoreV1Api,
    kube: client.ApiClient,
    release: tuple[str, str],
) -> None:
    """The chart's roles are folded into Kubernetes' own edit and view."""
    _, ns = release
    rbac = client.RbacAuthorizationV1Api(kube)
    for user, role in (("alice", "edit"), ("bob", "view")):
        await core.create_namespaced_service_account(ns, {"metadata": {"name": user}})
        await rbac.create_namespaced_role_binding(
            ns,
            {
                "metadata": {"name": f"{user}-{role}"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": role,
                },
                "subjects": [{"kind": "ServiceAccount", "name": user, "namespace": ns}],
            },
        )

    async def can(user: str, verb: str) -> bool:
        _, out, _ = await run(
            cluster,
            *kubectl(),
            "auth",
            "can-i",
            verb,
            "dagexecutions.dagwright.io",
            "-n",
            ns,
            f"--as=system:serviceaccount:{ns}:{user}",
        )
        return out.strip() == "yes"

    async def aggregated() -> bool:  # the controller-manager folds the rules in
        return await can("alice", "create")

    await wait_for("the edit role to include DAGExecutions", aggregated, within=30)
    assert await can("bob", "list")
    assert not await can("bob", "create")

    kubeconfig = await token_kubeconfig(cluster, core, "alice", ns)
    as_alice = await config.new_client_from_config(config_file=str(kubeconfig))
    try:
        await client.CustomObjectsApi(as_alice).create_namespaced_custom_object(
            "dagwright.io",
            "v1alpha1",
            ns,
            "dagexecutions",
            {
                "apiVersion": "dagwright.io/v1alpha1",
                "kind": "DAGExecution",
                "metadata": {"name": "by-an-editor"},
                "spec": {"jobs": [{"name": "a", "image": "busybox"}]},
            },
        )
    finally:
        await as_alice.close()


async def test_a_crd_upgrade_from_the_previous_chart_version_adds_a_field(
    cluster: TestCluster, kube: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    """Helm installs crds/ once and never upgrades them: the documented step
    (`kubectl apply --server-side -f charts/dagwright/crds/` before
    `helm upgrade`) brings a field a new version added. The previous version
    is this chart with its DAGExecution CRD lacking spec.retry."""
    crd_file = CHART / "crds" / "dagwright.io_dagexecutions.yaml"
    current = yaml.safe_load(crd_file.read_text())
    previous = yaml.safe_load(crd_file.read_text())
    spec_schema = previous["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    del spec_schema["properties"]["retry"]
    top = previous["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    top["x-kubernetes-validations"] = [  # the rule about ended executions came with retry
        rule for rule in top["x-kubernetes-validations"] if "retry" not in rule["rule"]
    ]
    old_chart = tmp_path / "dagwright"
    shutil.copytree(CHART, old_chart)
    (old_chart / "crds" / crd_file.name).write_text(yaml.safe_dump(previous))
    chart_yaml = yaml.safe_load((old_chart / "Chart.yaml").read_text())
    (old_chart / "Chart.yaml").write_text(yaml.safe_dump({**chart_yaml, "version": "0.0.1"}))
    objects = client.CustomObjectsApi(kube)
    body = {
        "apiVersion": "dagwright.io/v1alpha1",
        "kind": "DAGExecution",
        "metadata": {"name": "retried"},
        "spec": {"retry": 1, "suspend": True, "jobs": [{"name": "a", "image": "busybox"}]},
    }
    name = f"up{secrets.token_hex(2)}"
    try:
        # As a cluster that ran the previous version has it.
        await apply_crd(kube, previous)
        code, out, err = await helm(
            cluster, "install", name, str(old_chart), "-n", namespace, "--set", "api.enabled=false"
        )
        assert code == 0, out + err
        created = await objects.create_namespaced_custom_object(
            "dagwright.io", "v1alpha1", namespace, "dagexecutions", body
        )
        assert "retry" not in created["spec"]  # unknown to the old schema: pruned
        code, out, err = await run(
            cluster,
            *kubectl(),
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            str(CHART / "crds"),
        )
        assert code == 0, out + err
        code, out, err = await helm(
            cluster, "upgrade", name, str(CHART), "-n", namespace, "--set", "api.enabled=false"
        )
        assert code == 0, out + err

        attempts = iter(range(1000))

        async def served() -> bool:  # the API server may take a moment to switch schemas
            made = await objects.create_namespaced_custom_object(
                "dagwright.io",
                "v1alpha1",
                namespace,
                "dagexecutions",
                {**body, "metadata": {"name": f"retried-{next(attempts)}"}},
            )
            return bool(made["spec"].get("retry") == 1)

        await wait_for("the upgraded CRD to keep spec.retry", served, within=30)
    finally:
        await helm(cluster, "uninstall", name, "-n", namespace)
        await apply_crd(kube, current)


async def test_the_optional_parts_render_and_pass_a_server_side_dry_run(
    cluster: TestCluster, namespace: str
) -> None:
    """Ingress, aggregated roles, overrides: what the values schema accepts renders
    to objects the API server accepts (the monitoring CRDs are not installed
    here: their objects are checked in tests/e2e/test_day_two.py)."""
    code, rendered, err = await helm(
        cluster,
        "template",
        "dw",
        str(CHART),
        "--namespace",
        namespace,
        "--set",
        "api.ingress.enabled=true,api.ingress.host=dagwright.example.com,"
        "api.ingress.className=nginx,podAnnotations.team=ml,priorityClassName=system-cluster-critical,"
        "serviceAccount.annotations.iam=role",
    )
    assert code == 0, err
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    ingress = next(d for d in docs if d["kind"] == "Ingress")
    assert ingress["spec"]["rules"][0]["host"] == "dagwright.example.com"
    operator = next(
        d for d in docs if d["kind"] == "Deployment" and "operator" in d["metadata"]["name"]
    )
    assert operator["spec"]["template"]["metadata"]["annotations"] == {"team": "ml"}
    assert operator["spec"]["template"]["spec"]["priorityClassName"] == "system-cluster-critical"
    code, out, err = await run(
        cluster, *kubectl(), "apply", "--dry-run=server", "-n", namespace, "-f", "-", stdin=rendered
    )
    assert code == 0, out + err
    code, _, err = await helm(cluster, "template", "dw", str(CHART), "--set", "api.ingress.tls=yes")
    assert code != 0
    assert "tls" in err
