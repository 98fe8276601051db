"""``make bench``: run the scenarios on fresh local control planes, print a
table each, write bench/results/<scenario>.json and a PNG plot.

    python -m bench [--only throughput,latency,scale,failover,small] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

from bench import scenarios
from bench.rig import dump

RESULTS = Path(__file__).resolve().parent / "results"


def table(title: str, rows: list[tuple[str, Any]], since: float) -> None:
    """The scenario's results, and how long it took (rigs included)."""
    print(f"\n{title} [{time.monotonic() - since:.0f} s]")
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")


def plot_throughput(result: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.bar(
        ["baseline: plain client,\ndagwright's pods", "dagwright"],
        [result["baseline_jobs_per_second"], result["dagwright_jobs_per_second"]],
        color=["#999999", "#2b6cb0"],
    )
    left.set_ylabel("jobs per second")
    left.set_title(f"{result['jobs']} jobs, {result['shape']}, {result['nodes']} nodes")
    right.hist(result["latencies_ms"], bins=50, color="#2b6cb0")
    right.set_xlabel("last dependency Succeeded -> pod created (ms)")
    right.set_title("scheduling latency")
    fig.tight_layout()
    fig.savefig(RESULTS / "throughput.png", dpi=100)


def plot_scale(result: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for shape in ("fan-out", "chains"):
        runs = [r for r in result["runs"] if r["shape"] == shape]
        jobs = [r["jobs"] for r in runs]
        axes[0].plot(jobs, [r["seconds"] for r in runs], marker="o", label=shape)
        axes[1].plot(jobs, [r["operator_peak_rss_mb"] for r in runs], marker="o", label=shape)
        axes[2].plot(
            jobs, [r["apiserver_writes"] / r["jobs"] for r in runs], marker="o", label=shape
        )
    for ax, label in zip(
        axes, ["wall time (s)", "operator peak RSS (MB)", "API writes per job"], strict=True
    ):
        ax.set_xlabel("jobs in the DAG")
        ax.set_ylabel(label)
        ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "scale.png", dpi=100)


async def main(
    only: set[str], quick: bool, shapes: tuple[str, ...] = ("fan-out", "chains")
) -> None:
    started = time.monotonic()
    if {"throughput", "latency"} & only:
        since = time.monotonic()
        width, depth = (50, 4) if quick else (200, 10)
        result = await scenarios.throughput(width=width, depth=depth)
        dump(RESULTS / "throughput.json", result)
        plot_throughput(result)
        lat = result["scheduling_latency_ms"]
        table(
            "1-2. dispatch throughput and scheduling latency",
            [
                ("DAG", f"{result['jobs']} jobs ({result['shape']}) on {result['nodes']} nodes"),
                (
                    "baseline (plain client, dagwright's pods, layer by layer)",
                    f"{result['baseline_jobs_per_second']} jobs/s {result['baseline_seconds']} s",
                ),
                (
                    "dagwright",
                    f"{result['dagwright_jobs_per_second']} jobs/s ({result['dagwright_seconds']} s)",
                ),
                ("ratio dagwright / baseline", result["ratio_dagwright_over_baseline"]),
                (
                    "API writes per job (baseline, dagwright)",
                    f"{result['apiserver_writes_per_job']['baseline']}, {result['apiserver_writes_per_job']['dagwright']}",
                ),
                (
                    "scheduling latency p50 / p95 / p99 (ms)",
                    f"{lat['p50']} / {lat['p95']} / {lat['p99']}",
                ),
            ],
            since,
        )
    if "scale" in only:
        since = time.monotonic()
        sizes = {shape: [500, 1000] if quick else [1000, 5000, 10000] for shape in shapes}
        result = await scenarios.scale(sizes)
        dump(RESULTS / "scale.json", result)
        plot_scale(result)
        table(
            "3. scale (wall s, jobs/s, operator peak RSS MB, Redis peak MB, API writes/job)",
            [
                (
                    f"{r['shape']} {r['jobs']}",
                    f"{r['seconds']} s  {r['jobs_per_second']}/s  {r['operator_peak_rss_mb']} MB  "
                    f"{r['redis_peak_mb']} MB  {r['apiserver_writes'] / r['jobs']:.2f}",
                )
                for r in result["runs"]
            ],
            since,
        )
    if "failover" in only:
        since = time.monotonic()
        result = await scenarios.failover(runs=2 if quick else 3)
        dump(RESULTS / "failover.json", result)
        table(
            "4. failover (median)",
            [
                ("node killed -> NotReady", f"{result['median_kill_to_not_ready']} s"),
                (
                    "NotReady -> replacement Running",
                    f"{result['median_not_ready_to_replacement_running']} s",
                ),
                (
                    f"instance kill -9 -> takeover (lease {result['lease_seconds']} s)",
                    f"{result['median_takeover_seconds']} s {result['takeover_seconds']}",
                ),
            ],
            since,
        )
    if "small" in only:
        since = time.monotonic()
        result = await scenarios.small_dags(count=100 if quick else 500)
        dump(RESULTS / "small.json", result)
        table(
            "5. many small DAGs through the REST API",
            [
                ("DAGs x jobs", f"{result['dags']} x {result['jobs_per_dag']}"),
                ("all submitted in", f"{result['submit_seconds']} s"),
                (
                    "all succeeded after",
                    f"{result['completion_seconds']} s ({result['jobs_per_second']} jobs/s)",
                ),
                (
                    "API latency p50 / p99",
                    f"{result['api_latency_ms']['p50']} / {result['api_latency_ms']['p99']} ms",
                ),
            ],
            since,
        )
    print(f"\nbench finished in {time.monotonic() - started:.0f} s; results in {RESULTS}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--only", default="throughput,scale,failover,small")
    parser.add_argument("--quick", action="store_true", help="small sizes, to try the harness")
    parser.add_argument("--shapes", default="fan-out,chains", help="scale: DAG shapes")
    args = parser.parse_args()
    shapes = tuple(args.shapes.split(","))
    asyncio.run(main(set(args.only.split(",")), args.quick, shapes))
