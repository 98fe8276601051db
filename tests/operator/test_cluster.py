"""The node picture from the watches and the worker registry, without a
cluster: what a registered worker's heartbeats, load and drain say of its node."""

from __future__ import annotations

import time
from typing import Any

from dagwright.core.placement import Pool
from dagwright.core.spec import WorkerPoolSpec
from dagwright.operator.cluster import ClusterView, NodeInfo

LABELS = {"pool": "cpu"}
POOL = Pool(
    "cpu",
    WorkerPoolSpec.model_validate(
        {"capabilities": ["cpu"], "nodeSelector": LABELS, "maxConcurrency": 4}
    ),
)


def view(*names: str) -> ClusterView:
    cluster = ClusterView({})
    nodes = [NodeInfo(name, LABELS, ready=True) for name in names]
    cluster.bind({None: [POOL]}, {None: nodes}, {}, {})
    return cluster


def record(node: str, ago: float, **extra: Any) -> dict[str, Any]:
    return {
        "workerId": f"w-{node}",
        "hostname": node,
        "maxConcurrency": 2,
        "currentLoad": 1,
        "timeoutSeconds": 90,
        "lastHeartbeat": time.time() - ago,
        **extra,
    }


def test_a_silent_worker_loses_its_node_and_it_takes_no_new_job() -> None:
    cluster = view("n1", "n2", "n3")
    assert cluster.register([record("n1", ago=100), record("n2", ago=1)])  # n1 fell silent
    health = cluster.node_health()
    assert health("n1") == (True, False, True)
    assert health("n2") == (False, False, False)
    assert health("n3") == (False, False, False)  # no worker: the Ready condition decides
    assert cluster.members(POOL) == ["n2", "n3"]
    assert cluster.slots(POOL, "n2") == 2  # its worker's maxConcurrency, not the pool's 4
    assert cluster.slots(POOL, "n3") == 4
    assert cluster.reported() == {"n1": 1, "n2": 1}
    assert not cluster.register([record("n1", ago=101), record("n2", ago=2)])  # nothing new


def test_silence_outlives_the_registration_until_the_worker_speaks_again() -> None:
    cluster = view("n1", "n2")
    cluster.register([record("n1", ago=100)])
    cluster.register([])  # its registration lapsed
    assert cluster.node_health()("n1")[2] is True
    assert cluster.members(POOL) == ["n2"]
    cluster.register([record("n1", ago=0)])  # registered again, heartbeating
    assert cluster.node_health()("n1") == (False, False, False)
    assert cluster.members(POOL) == ["n1", "n2"]


def test_most_workers_silent_at_once_is_the_channel_not_the_machines() -> None:
    cluster = view("n1", "n2", "n3")
    cluster.register([record("n1", ago=100), record("n2", ago=100), record("n3", ago=1)])
    health = cluster.node_health()
    assert [health(n)[0] for n in ("n1", "n2", "n3")] == [False, False, False]
    # Workers that name no node do not count either way.
    lab = [record(f"lab-{i}", ago=1) for i in range(5)]
    cluster.register([record("n1", ago=100), record("n2", ago=100), record("n3", ago=1), *lab])
    assert cluster.node_health()("n1")[0] is False


def test_a_draining_worker_keeps_its_jobs_but_gets_no_new_one() -> None:
    cluster = view("n1", "n2")
    cluster.register([record("n1", ago=1, draining=True)])
    assert cluster.node_health()("n1") == (False, False, False)
    assert cluster.members(POOL) == ["n2"]
