"""DAG validation and resolution (pure core)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from dagwright.core.durations import parse_duration
from dagwright.core.graph import build_dag, find_cycle
from dagwright.core.placement import Pool
from dagwright.core.spec import Backoff, DAGExecutionSpec, WorkerPoolSpec
from dagwright.errors import InvalidDag


def spec(*jobs: dict[str, object], **extra: object) -> DAGExecutionSpec:
    return DAGExecutionSpec.model_validate(
        {"defaults": {"image": "busybox"}, "jobs": list(jobs), **extra}
    )


def test_cycle_is_reported_with_its_path() -> None:
    with pytest.raises(InvalidDag) as caught:
        build_dag(
            spec(
                {"name": "a", "dependsOn": ["c"]},
                {"name": "b", "dependsOn": ["a"]},
                {"name": "c", "dependsOn": ["b"]},
                {"name": "d"},
            )
        )
    [problem] = caught.value.problems
    assert problem.startswith("dependency cycle: ")
    path = problem.removeprefix("dependency cycle: ").split(" -> ")
    assert path[0] == path[-1]
    assert set(path) == {"a", "b", "c"}


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(InvalidDag) as caught:
        build_dag(
            DAGExecutionSpec.model_validate(
                {
                    "jobs": [
                        {"name": "a", "dependsOn": ["a"], "image": "x"},
                        {"name": "b", "dependsOn": ["nope"], "image": "x"},
                        {"name": "c"},
                        {"name": "d", "requires": ["gpu", "tpu"], "image": "x"},
                    ]
                }
            ),
            [
                Pool("cpu", WorkerPoolSpec(capabilities=["cpu"], node_selector={"a": "b"})),
                Pool("gpu", WorkerPoolSpec(capabilities=["gpu"], node_selector={"a": "c"})),
            ],
        )
    problems = caught.value.problems
    assert "job 'a' depends on itself" in problems
    assert "job 'b' depends on unknown job(s) 'nope'" in problems
    assert "job 'c' has no image (set jobs[].image or defaults.image)" in problems
    assert "job 'd' requires tpu, which no WorkerPool offers" in problems
    assert len(problems) == 4


def test_duplicate_names_are_rejected() -> None:
    with pytest.raises(InvalidDag, match="job 'a' is defined more than once"):
        build_dag(spec({"name": "a"}, {"name": "a"}))


@pytest.mark.parametrize(
    "bad",
    [
        {"priority": 11},
        {"priority": 0},
        {"jobs": []},
        {"parallelism": 0},
        {"jobs": [{"name": "Bad_Name"}]},
        {"jobs": [{"name": "a", "timeout": "5 minutes"}]},
        {"jobs": [{"name": "a", "timeout": "0s"}]},
        {"jobs": [{"name": "a", "retries": -1}]},
        {"jobs": [{"name": "a", "unknownField": 1}]},
        {"shutdown": "Pause"},
    ],
)
def test_schema_rejects(bad: dict[str, object]) -> None:
    body: dict[str, object] = {"jobs": [{"name": "a"}], **bad}
    with pytest.raises(ValidationError):
        DAGExecutionSpec.model_validate(body)


def test_defaults_are_applied_and_job_settings_win() -> None:
    dag = build_dag(
        DAGExecutionSpec.model_validate(
            {
                "priority": 7,
                "defaults": {"image": "img:1", "retries": 1, "timeout": "1m", "requires": ["cpu"]},
                "jobs": [
                    {"name": "a"},
                    {
                        "name": "b",
                        "dependsOn": ["a"],
                        "retries": 0,
                        "priority": 2,
                        "requires": ["gpu"],
                    },
                ],
            }
        )
    )
    a, b = dag.jobs["a"], dag.jobs["b"]
    assert (a.image, a.retries, a.timeout_seconds, a.priority, a.requires) == (
        "img:1",
        1,
        60.0,
        7,
        frozenset({"cpu"}),
    )
    assert (b.retries, b.priority, b.requires) == (0, 2, frozenset({"gpu"}))
    assert a.backoff == Backoff()
    assert dag.order == ["a", "b"]


def test_default_backoff_is_5_10_20_seconds_capped() -> None:
    backoff = Backoff()
    assert [backoff.delay(n) for n in (1, 2, 3)] == [5.0, 10.0, 20.0]
    assert backoff.delay(50) == 300.0
    assert Backoff(initial="100ms", factor=3, max="1s").delay(3) == pytest.approx(0.9)


@pytest.mark.parametrize(
    ("text", "seconds"), [("500ms", 0.5), ("5s", 5), ("1m30s", 90), ("2h", 7200), ("1.5s", 1.5)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_long_chain_does_not_recurse() -> None:
    n = 10_000
    jobs = [{"name": f"j{i}", "dependsOn": [f"j{i - 1}"] if i else []} for i in range(n)]
    dag = build_dag(spec(*jobs))
    assert dag.order[0] == "j0"
    assert dag.order[-1] == f"j{n - 1}"


@given(st.integers(min_value=2, max_value=30), st.data())
def test_topological_order_respects_every_edge(n: int, data: st.DataObject) -> None:
    # Edges only from later to earlier indices: always acyclic.
    deps = {
        i: data.draw(st.sets(st.integers(min_value=0, max_value=i - 1), max_size=4)) if i else set()
        for i in range(n)
    }
    order = data.draw(st.permutations(list(range(n))))
    jobs = [{"name": f"j{i}", "dependsOn": [f"j{d}" for d in sorted(deps[i])]} for i in order]
    dag = build_dag(spec(*jobs))
    position = {name: i for i, name in enumerate(dag.order)}
    for i, parents in deps.items():
        for p in parents:
            assert position[f"j{p}"] < position[f"j{i}"]


@given(st.integers(min_value=2, max_value=20), st.data())
def test_a_back_edge_is_always_found(n: int, data: st.DataObject) -> None:
    edges = {f"j{i}": [f"j{i - 1}"] if i else [] for i in range(n)}
    closing = data.draw(st.integers(min_value=0, max_value=n - 1))
    edges["j0"] = [f"j{closing}"] if closing else ["j0"]
    cycle = find_cycle(edges)
    assert cycle is not None
    assert cycle[0] == cycle[-1]
    for a, b in itertools.pairwise(cycle):
        assert b in edges[a]
