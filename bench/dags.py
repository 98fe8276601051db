"""DAG shapes for the benchmarks, as DAGExecution specs and as layers."""

from __future__ import annotations

from typing import Any

SIM = "sim.dagwright.io/duration"


def spec(jobs: list[dict[str, Any]], duration: str, parallelism: int) -> dict[str, Any]:
    return {
        "parallelism": parallelism,
        "defaults": {
            "image": "registry.example/bench:1",
            "requires": ["cpu"],
            "retries": 0,
            "annotations": {SIM: duration},
        },
        "jobs": jobs,
    }


def wide_layers(width: int, depth: int) -> list[list[dict[str, Any]]]:
    """Layers of ``width`` jobs; each job needs two jobs of the layer above."""
    layers = []
    for layer in range(depth):
        jobs = []
        for i in range(width):
            deps = (
                []
                if layer == 0
                else sorted({f"l{layer - 1}-{i}", f"l{layer - 1}-{(i + 1) % width}"})
            )
            jobs.append({"name": f"l{layer}-{i}", "dependsOn": deps})
        layers.append(jobs)
    return layers


def chains(total: int, length: int = 50) -> list[dict[str, Any]]:
    """Chain-heavy: ``total / length`` independent chains."""
    jobs = []
    for c in range(total // length):
        for i in range(length):
            deps = [f"c{c}-{i - 1}"] if i else []
            jobs.append({"name": f"c{c}-{i}", "dependsOn": deps})
    return jobs


def fan_out(total: int) -> list[dict[str, Any]]:
    """Fan-out-heavy: one root and ``total - 1`` children of it (a job may
    have at most 100 dependencies, so there is no single sink)."""
    return [{"name": "root"}] + [{"name": f"w{i}", "dependsOn": ["root"]} for i in range(total - 1)]
