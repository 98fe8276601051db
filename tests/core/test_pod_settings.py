"""Pod settings, their merge order, job templates, the platform's policy and
best-fit pool choice (pure: no cluster)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from dagwright.core.admission import plan_admission
from dagwright.core.graph import build_dag
from dagwright.core.placement import Pool, best_fit, choose_pool
from dagwright.core.podspec import PodSettings, merge
from dagwright.core.policy import JobPolicy, quantity, violations
from dagwright.core.spec import (
    DAGExecutionSpec,
    JobTemplateSpec,
    WorkerPoolSpec,
    visible_templates,
)
from dagwright.core.state import JobPhase, JobState
from dagwright.errors import InvalidDag


def pool(name: str, *capabilities: str, **spec: Any) -> Pool:
    return Pool(
        name,
        WorkerPoolSpec.model_validate(
            {"capabilities": list(capabilities), "nodeSelector": {"p": name}, **spec}
        ),
    )


def execution(*jobs: dict[str, Any], **defaults: Any) -> DAGExecutionSpec:
    return DAGExecutionSpec.model_validate({"defaults": defaults, "jobs": list(jobs)})


# --- merge order --------------------------------------------------------------


def test_layers_merge_pool_then_defaults_then_template_then_job() -> None:
    pool_layer = PodSettings.model_validate(
        {
            "env": [{"name": "A", "value": "pool"}, {"name": "P", "value": "pool"}],
            "labels": {"team": "pool", "tier": "batch"},
            "serviceAccountName": "pool-sa",
            "tolerations": [{"key": "gpu", "operator": "Exists"}],
        }
    )
    spec = execution(
        {"name": "j", "type": "train", "env": [{"name": "A", "value": "job"}]},
        image="x",
        env=[{"name": "A", "value": "defaults"}, {"name": "D", "value": "defaults"}],
        labels={"team": "defaults"},
        securityContext={"runAsUser": 1000, "fsGroup": 100},
    )
    template = JobTemplateSpec.model_validate(
        {
            "serviceAccountName": "template-sa",
            "securityContext": {"runAsUser": 0},
            "tolerations": [{"key": "spot", "operator": "Exists"}],
        }
    )
    job = build_dag(spec, templates={"train": template}).jobs["j"]
    merged = merge(pool_layer, job.pod)
    assert [(e.name, e.value) for e in merged.env or []] == [
        ("A", "job"),
        ("P", "pool"),
        ("D", "defaults"),
    ]
    assert merged.labels == {"team": "defaults", "tier": "batch"}
    assert merged.service_account_name == "template-sa"
    assert merged.security_context is not None
    assert merged.security_context.run_as_user == 0  # the template's, field by field
    assert merged.security_context.fs_group == 100  # the defaults'
    assert [t.key for t in merged.tolerations or []] == ["gpu", "spot"]


def test_a_job_without_pod_settings_shares_one_empty_object() -> None:
    dag = build_dag(execution({"name": "a"}, {"name": "b"}, image="x"))
    assert dag.jobs["a"].pod is dag.jobs["b"].pod


@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["A", "B", "C"]), st.text(max_size=3), min_size=0, max_size=3
        ),
        min_size=1,
        max_size=4,
    )
)
def test_env_merges_by_name_and_the_last_layer_wins(layers: list[dict[str, str]]) -> None:
    settings = [
        PodSettings.model_validate({"env": [{"name": k, "value": v} for k, v in layer.items()]})
        for layer in layers
    ]
    merged = {e.name: e.value for e in merge(*settings).env or []}
    expected: dict[str, str] = {}
    for layer in layers:
        expected.update(layer)
    assert merged == expected


# --- schema ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("job", "where"),
    [
        ({"volumes": [{"name": "v"}]}, "set exactly one of"),
        (
            {"volumes": [{"name": "v", "emptyDir": {}, "secret": {"secretName": "s"}}]},
            "got secret, emptyDir",
        ),
        (
            {"env": [{"name": "X", "value": "1", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}]},
            "not both",
        ),
        ({"securityContext": {"runAsUser": -1}}, "greater than or equal to 0"),
        ({"volumes": [{"name": "v", "emptyDir": {"medium": "Disk"}}]}, "medium"),
        ({"hostNetwork": True}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_pod_settings_are_refused_with_their_field(job: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError, match=where):
        execution({"name": "a", **job}, image="x")


def test_reserved_names_are_refused() -> None:
    with pytest.raises(InvalidDag) as caught:
        build_dag(
            execution(
                {
                    "name": "a",
                    "labels": {"dagwright.io/job": "b"},
                    "env": [{"name": "DAGWRIGHT_JOB", "value": "b"}],
                    "volumes": [{"name": "dagwright-token", "emptyDir": {}}],
                },
                image="x",
            )
        )
    text = str(caught.value)
    assert "labels[dagwright.io/job]" in text
    assert "env[DAGWRIGHT_JOB]" in text
    assert "volumes[dagwright-token]" in text


# --- templates ----------------------------------------------------------------------


def test_a_job_type_takes_its_templates_settings_and_its_own_override_them() -> None:
    template = JobTemplateSpec.model_validate(
        {
            "image": "prep:1",
            "command": ["prep"],
            "args": ["--all"],
            "requires": ["cpu", "high-memory"],
            "retries": 7,
            "resources": {"requests": {"cpu": "4", "memory": "8Gi"}},
        }
    )
    spec = execution(
        {"name": "a", "type": "preprocessing"},
        {
            "name": "b",
            "type": "preprocessing",
            "image": "mine",
            "args": ["--some"],
            "resources": {"requests": {"cpu": "1"}},
        },
        requires=["cpu"],
        retries=1,
    )
    dag = build_dag(spec, templates={"preprocessing": template})
    a, b = dag.jobs["a"], dag.jobs["b"]
    assert (a.image, a.command, a.args, a.retries) == ("prep:1", ("prep",), ("--all",), 7)
    assert a.requires == {"cpu", "high-memory"}
    assert (b.image, b.command, b.args) == ("mine", ("prep",), ("--some",))
    assert b.resources is not None
    assert b.resources.requests == {"cpu": "1", "memory": "8Gi"}


def test_a_type_without_a_template_and_no_image_is_refused_naming_the_type() -> None:
    spec = execution({"name": "a", "type": "distillation"})
    with pytest.raises(InvalidDag, match="type 'distillation' has no JobTemplate"):
        build_dag(spec, templates={})
    build_dag(spec)  # templates unknown (offline): not refused for that


# --- policy -------------------------------------------------------------------------------


def settings(**values: Any) -> PodSettings:
    return PodSettings.model_validate(values)


def test_the_default_policy_refuses_host_paths_privilege_and_added_capabilities() -> None:
    default = JobPolicy()
    assert not violations(settings(securityContext={"runAsUser": 0}), {}, default)
    found = violations(
        settings(
            volumes=[{"name": "h", "hostPath": {"path": "/"}}],
            containerSecurityContext={
                "privileged": True,
                "capabilities": {"add": ["SYS_ADMIN"]},
                "seccompProfile": {"type": "Unconfined"},
            },
        ),
        {},
        default,
    )
    text = "\n".join(found)
    assert "volumes[h].hostPath: hostPath volumes are not allowed" in text
    assert "containerSecurityContext.privileged" in text
    assert "SYS_ADMIN is not allowed (policy.allowedCapabilities: none)" in text
    assert "Unconfined is not allowed" in text


def test_a_pool_policy_allows_what_it_lists_and_caps_resources() -> None:
    policy = JobPolicy.model_validate(
        {
            "volumeTypes": ["hostPath"],
            "allowRoot": False,
            "allowedCapabilities": ["SYS_PTRACE"],
            "serviceAccounts": ["trainer"],
            "reservedPrefixes": ["billing.example.com/"],
            "maxResources": {"nvidia.com/gpu": "4", "memory": "64Gi"},
        }
    )
    ok = settings(
        volumes=[{"name": "h", "hostPath": {"path": "/data"}}],
        containerSecurityContext={"capabilities": {"add": ["SYS_PTRACE"]}, "runAsUser": 1000},
        serviceAccountName="trainer",
    )
    assert not violations(ok, {"limits": {"nvidia.com/gpu": "4", "memory": "64Gi"}}, policy)
    bad = settings(
        volumes=[{"name": "s", "secret": {"secretName": "x"}}],
        securityContext={"runAsNonRoot": False},
        serviceAccountName="admin",
        annotations={"billing.example.com/team": "x"},
    )
    text = "\n".join(violations(bad, {"limits": {"memory": "65Gi"}}, policy))
    assert "secret volumes are not allowed (policy.volumeTypes: hostPath)" in text
    assert "securityContext.runAsNonRoot: root is not allowed" in text
    assert "serviceAccountName: admin is not allowed (policy.serviceAccounts: trainer)" in text
    assert "annotations[billing.example.com/team]" in text
    assert "resources.limits[memory]: 65Gi is more than one job may ask for" in text


@pytest.mark.parametrize(
    ("text", "value"),
    [("500m", 0.5), ("2", 2), ("1Gi", 2**30), ("1.5k", 1500), ("1e3", 1000)],
)
def test_quantities(text: str, value: float) -> None:
    assert float(quantity(text)) == value


def test_validation_names_the_pool_whose_policy_refuses() -> None:
    pools = [pool("cpu", "cpu", policy={"allowRoot": False}), pool("gpu", "cpu", "gpu")]
    spec = execution(
        {"name": "a", "securityContext": {"runAsUser": 0}, "requires": ["cpu"]}, image="x"
    )
    build_dag(spec, pools)  # the gpu pool's (default) policy allows root: placeable there
    with pytest.raises(
        InvalidDag, match=r"root is not allowed \(policy.allowRoot: false\) in WorkerPool cpu"
    ):
        build_dag(spec, pools[:1])


# --- best fit -----------------------------------------------------------------------------


CPU, MEMORY, GPU = pool("cpu", "cpu"), pool("mem", "cpu", "high-memory"), pool("gpu", "gpu", "cpu")


@pytest.mark.parametrize(
    ("requires", "expected"),
    [
        (frozenset({"cpu"}), "cpu"),
        (frozenset(), "cpu"),  # requires nothing: placed as cpu
        (frozenset({"high-memory"}), "mem"),
        (frozenset({"gpu"}), "gpu"),
    ],
)
def test_the_pool_that_offers_the_least_beyond_the_job_is_chosen(
    requires: frozenset[str], expected: str
) -> None:
    # Even when the best fit is the most loaded.
    load = {"cpu": 0.9, "mem": 0.0, "gpu": 0.0}
    chosen = choose_pool(requires, [GPU, MEMORY, CPU], load)
    assert chosen is not None
    assert chosen.name == expected


def test_a_cpu_job_goes_to_a_bigger_pool_only_when_no_better_fit_can_ever_take_it() -> None:
    usable = {"cpu": True, "mem": True, "gpu": True}

    def fit() -> list[str]:
        chosen = best_fit(frozenset({"cpu"}), [CPU, MEMORY, GPU], lambda p: usable[p.name])
        return [p.name for p in chosen]

    assert fit() == ["cpu"]
    usable["cpu"] = False
    assert fit() == ["mem"]  # an unneeded accelerator weighs more than high-memory
    usable["mem"] = False
    assert fit() == ["gpu"]
    # A pool that can scale up can take it some time: the job waits for it.
    scaling = pool("cpu", "cpu", autoscaling={"maxNodes": 3})
    assert [p.name for p in best_fit(frozenset({"cpu"}), [scaling, GPU], lambda p: False)] == [
        "cpu"
    ]


def test_admission_asks_only_the_best_fitting_pools_with_nodes() -> None:
    dag = build_dag(
        execution({"name": "c", "requires": ["cpu"]}, {"name": "g", "requires": ["gpu"]}, image="x")
    )
    jobs = {n: JobState(phase=JobPhase.READY, ready_at=1.0) for n in dag.jobs}
    pools = [CPU, MEMORY, GPU]
    members = {"cpu": ["n1"], "mem": ["n2"], "gpu": ["n3"]}
    plan = plan_admission(
        "u", dag, ["c", "g"], jobs, pools, members, {"cpu": 1.0, "mem": 0.0, "gpu": 0.0}, 2.0
    )
    asked = {r.job: [p.name for p in r.pools] for r in plan.requests}
    assert asked == {"c": ["cpu"], "g": ["gpu"]}
    members["cpu"] = []  # the cpu pool lost its nodes (and cannot scale): the next fit
    plan = plan_admission(
        "u", dag, ["c"], jobs, pools, members, {"cpu": 1.0, "mem": 0.5, "gpu": 0.0}, 2.0
    )
    assert [p.name for p in plan.requests[0].pools] == ["mem"]


def test_a_namespace_sees_the_installs_templates_and_its_own_win() -> None:
    def t(image: str) -> JobTemplateSpec:
        return JobTemplateSpec(image=image)

    found = [
        ("ml", "train", t("own")),
        ("system", "train", t("install")),
        ("system", "prep", t("install-prep")),
        ("other", "eval", t("not-visible")),
    ]
    seen = visible_templates(found, "ml", "system")
    assert {name: spec.image for name, spec in seen.items()} == {
        "train": "own",
        "prep": "install-prep",
    }
    assert visible_templates(found, "ml", None) == {"train": t("own")}
