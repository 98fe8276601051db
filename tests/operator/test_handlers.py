"""The kopf wiring's settings and the pod index, without a cluster."""

from __future__ import annotations

from typing import Any, cast

import kopf

from dagwright.core.graph import build_dag
from dagwright.core.spec import DAGExecutionSpec
from dagwright.core.state import PodPhase
from dagwright.operator import handlers
from dagwright.operator.informer import PodIndex
from dagwright.operator.pods import Owner, Placement, build_pod


def test_the_diff_essence_is_only_the_generation() -> None:
    # Safe only while no handler reacts to changes of fields (on.create,
    # on.update, on.field): they would never fire with this essence.
    registry = kopf.get_default_registry()
    assert registry._changing.get_all_handlers() == []
    assert registry._spawning.get_all_handlers()  # the daemon: the registry is the real one
    settings = kopf.OperatorSettings()
    handlers.configure(settings)
    raw = {"metadata": {"generation": 3}, "spec": {"jobs": [{"name": "a"}] * 1000}}
    big = kopf.Body(cast(kopf.RawBody, raw))
    essence = settings.persistence.diffbase_storage.build(body=big)
    assert essence == {"metadata": {"generation": 3}}


def test_kopf_does_not_watch_pods() -> None:
    # They come through the operator's own informer: a kopf handler on pods
    # would open a second, unfiltered watch of every pod in the cluster.
    registry = kopf.get_default_registry()
    for handler in [
        *registry._indexing.get_all_handlers(),
        *registry._watching.get_all_handlers(),
        *registry._spawning.get_all_handlers(),
    ]:
        assert handler.selector is None or handler.selector.plural != "pods"


def pod(
    name: str, phase: str, execution: str = "dag", uid: str = "", **extra: Any
) -> dict[str, Any]:
    """A job pod as ``build_pod`` makes it (``name`` is ``<job>-<attempt>``),
    as the watch shows it in ``phase``."""
    job, attempt = name.rsplit("-", 1)
    spec = DAGExecutionSpec.model_validate({"jobs": [{"name": job, "image": "busybox"}]})
    owner = Owner(name=execution, namespace="ns", uid=f"uid-{execution}")
    built = build_pod(owner, build_dag(spec).jobs[job], int(attempt), 1, Placement(pool="gpu"))
    built["metadata"].update(name=name, resourceVersion="1", uid=uid or f"pod-{execution}-{name}")
    built["spec"]["nodeName"] = "n1"
    built["status"] = {"phase": phase, **extra}
    return built


def test_index_follows_pods_by_execution_and_pool() -> None:
    index = PodIndex()
    assert index.apply("ADDED", pod("a-1", "Pending")) == "uid-dag"
    assert index.apply("ADDED", pod("b-1", "Running", execution="other")) == "uid-other"
    assert [p.job for p in index.pods_of("uid-dag").all.values()] == ["a"]
    assert index.pods_of("uid-dag").unfinished == {("a", 1)}
    assert len(index.running_by_pool["gpu"]) == 2
    # An event that changes nothing the core looks at wakes no runner.
    assert index.apply("MODIFIED", pod("a-1", "Pending")) is None
    assert index.apply("MODIFIED", pod("a-1", "Succeeded")) == "uid-dag"
    assert index.pods_of("uid-dag").all[("a", 1)].phase is PodPhase.SUCCEEDED
    assert index.pods_of("uid-dag").unfinished == set()
    assert index.running_by_pool["gpu"] == {("ns", "b-1")}
    # A deleted pod is kept as its last state, marked removed.
    assert index.apply("DELETED", pod("a-1", "Succeeded")) == "uid-dag"
    (gone,) = index.pods_of("uid-dag").all.values()
    assert gone.removed
    assert gone.phase is PodPhase.SUCCEEDED
    assert not gone.alive
    index.forget("uid-dag")
    assert index.pods_of("uid-dag").all == {}


def test_identity_is_the_owner_and_the_spec_not_the_labels() -> None:
    index = PodIndex()
    forged = pod("a-1", "Running")
    forged["metadata"]["ownerReferences"] = []  # labels say dagwright; no owner
    assert index.apply("ADDED", forged) is None
    relabeled = pod("a-1", "Running")
    relabeled["metadata"]["labels"].update({"dagwright.io/job": "x", "dagwright.io/attempt": "9"})
    assert index.apply("ADDED", relabeled) == "uid-dag"
    assert list(index.pods_of("uid-dag").all) == [("a", 1)]  # from the container's env


def test_a_pod_that_loses_its_label_is_still_ours_and_alive() -> None:
    index = PodIndex()
    index.apply("ADDED", pod("a-1", "Running"))
    # The label-selected watch reports it as DELETED, with its previous
    # content (labels and all): deleted, or gone from the selector? A read tells.
    assert index.apply("DELETED", pod("a-1", "Running")) is None
    assert index.pods_of("uid-dag").all[("a", 1)].alive
    assert set(index.suspect) == {("ns", "a-1")}
    # Read and found gone: the deletion stands, with the pod's last phase.
    assert index.apply("DELETED", pod("a-1", "Running"), verified=True) == "uid-dag"
    assert index.pods_of("uid-dag").all[("a", 1)].removed


def test_a_relist_reports_only_what_changed() -> None:
    index = PodIndex()
    index.apply("ADDED", pod("a-1", "Running"))
    index.apply("ADDED", pod("b-1", "Running", execution="other"))
    index.apply("ADDED", pod("c-1", "Running", execution="third"))
    # Missed while the watch was down: a-1 finished, b-1 vanished, d-1 appeared.
    changed = index.replace(
        [
            pod("a-1", "Succeeded"),
            pod("c-1", "Running", execution="third"),
            pod("d-1", "Pending", execution="fourth"),
        ]
    )
    assert changed == {"uid-dag", "uid-fourth"}
    # Deleted, or stripped of its label? Only a read tells: the informer reads it.
    assert set(index.vanished) == {("ns", "b-1")}
    assert index.tombstone(("ns", "b-1")) == "uid-other"
    assert index.pods_of("uid-other").all[("b", 1)].removed
    assert index.running_by_pool["gpu"] == {("ns", "c-1"), ("ns", "d-1")}
