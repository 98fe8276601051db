"""The kopf wiring's settings and the pod index, without a cluster."""

from __future__ import annotations

from typing import Any, cast

import kopf

from dagwright.core.state import PodPhase
from dagwright.operator import handlers
from dagwright.operator.informer import PodIndex
from dagwright.operator.pods import EXECUTION_LABEL, POOL_LABEL


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


def pod(name: str, phase: str, execution: str = "dag", **extra: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "resourceVersion": "1",
            "labels": {
                EXECUTION_LABEL: execution,
                POOL_LABEL: "gpu",
                "dagwright.io/job": name.rsplit("-", 1)[0],
                "dagwright.io/attempt": name.rsplit("-", 1)[1],
            },
        },
        "spec": {"nodeName": "n1"},
        "status": {"phase": phase, **extra},
    }


def test_index_follows_pods_by_execution_and_pool() -> None:
    index = PodIndex()
    assert index.apply("ADDED", pod("a-1", "Pending")) == ("ns", "dag")
    assert index.apply("ADDED", pod("b-1", "Running", execution="other")) == ("ns", "other")
    assert [p.job for p in index.pods_of(("ns", "dag")).all.values()] == ["a"]
    assert index.pods_of(("ns", "dag")).unfinished == {("a", 1)}
    assert len(index.running_by_pool["gpu"]) == 2
    # An event that changes nothing the core looks at wakes no runner.
    assert index.apply("MODIFIED", pod("a-1", "Pending")) is None
    assert index.apply("MODIFIED", pod("a-1", "Succeeded")) == ("ns", "dag")
    assert index.pods_of(("ns", "dag")).all[("a", 1)].phase is PodPhase.SUCCEEDED
    assert index.pods_of(("ns", "dag")).unfinished == set()
    assert index.running_by_pool["gpu"] == {("ns", "b-1")}
    assert index.apply("DELETED", pod("a-1", "Succeeded")) == ("ns", "dag")
    assert index.pods_of(("ns", "dag")).all == {}


def test_a_relist_reports_only_what_changed() -> None:
    index = PodIndex()
    index.apply("ADDED", pod("a-1", "Running"))
    index.apply("ADDED", pod("b-1", "Running", execution="other"))
    index.apply("ADDED", pod("c-1", "Running", execution="third"))
    # Missed while the watch was down: a-1 finished, b-1 was deleted, d-1 appeared.
    changed = index.replace(
        [
            pod("a-1", "Succeeded"),
            pod("c-1", "Running", execution="third"),
            pod("d-1", "Pending", execution="fourth"),
        ]
    )
    assert changed == {("ns", "dag"), ("ns", "other"), ("ns", "fourth")}
    assert index.pods_of(("ns", "other")).all == {}
    assert index.running_by_pool["gpu"] == {("ns", "c-1"), ("ns", "d-1")}
