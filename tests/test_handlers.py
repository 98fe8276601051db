"""The kopf wiring's settings, without a cluster."""

from __future__ import annotations

import kopf
from kopf._cogs.structs.references import Resource

from dagwright.operator import handlers
from dagwright.operator.pods import MANAGED_SELECTOR


def pods() -> Resource:
    return Resource(group="", version="v1", plural="pods", kind="Pod", namespaced=True)


def test_only_managed_pods_are_watched() -> None:
    settings = kopf.OperatorSettings()
    handlers.configure(settings)
    (selector,) = settings.watching.label_selectors.collect(pods())
    key, value = selector.split("=")
    assert {key: value} == MANAGED_SELECTOR
    nodes = Resource(group="", version="v1", plural="nodes", kind="Node", namespaced=False)
    assert not list(settings.watching.label_selectors.collect(nodes))


def test_the_diff_essence_is_only_the_generation() -> None:
    # Safe only while no handler reacts to changes of fields (on.create,
    # on.update, on.field): they would never fire with this essence.
    registry = kopf.get_default_registry()
    assert registry._changing.get_all_handlers() == []
    assert registry._spawning.get_all_handlers()  # the daemon: the registry is the real one
    settings = kopf.OperatorSettings()
    handlers.configure(settings)
    big = kopf.Body({"metadata": {"generation": 3}, "spec": {"jobs": [{"name": "a"}] * 1000}})
    essence = settings.persistence.diffbase_storage.build(body=big)
    assert essence == {"metadata": {"generation": 3}}
