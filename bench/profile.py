"""Profile the operator's hot path with py-spy while it runs a fan-out DAG.

python -m bench.profile [JOBS] [fan-out|layers]   -> bench/results/profile.txt

``layers`` is the throughput scenario's shape (layers of 200 jobs).
"""

from __future__ import annotations

import asyncio
import collections
import subprocess
import sys
import time
from pathlib import Path

from bench.dags import fan_out, spec, wide_layers
from bench.rig import rig
from bench.scenarios import create_dag
from bench.watcher import pod_times, wait_count

RESULTS = Path(__file__).resolve().parent / "results"


def summarize(raw: Path, top: int = 25) -> str:
    """Own time and inclusive time per frame, from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples", "", "own time:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines += ["", "inclusive time (dagwright and kopf frames):"]
    ours = [(f, n) for f, n in inclusive.most_common() if "dagwright" in f or "kopf/" in f]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in ours[:top]]
    return "\n".join(lines)


async def main(jobs: int, shape: str) -> None:
    dag = (
        [job for layer in wide_layers(200, max(jobs // 200, 1)) for job in layer]
        if shape == "layers"
        else fan_out(jobs)
    )
    jobs = len(dag)
    async with rig() as r:
        await r.nodes(50)
        await r.pool(max_concurrency=20)
        proc = r.start_operator()
        await r.wait_operators(1)
        namespace = await r.namespace("profile")
        raw = RESULTS / "profile.raw"
        RESULTS.mkdir(exist_ok=True)
        spy = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("py-spy")),
                "record",
                "--pid",
                str(proc.pid),
                "--format",
                "raw",
                "-o",
                str(raw),
                "--rate",
                "50",
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        async with pod_times(r.core, namespace) as times:
            started = time.monotonic()
            await create_dag(r, namespace, "p", spec(dag, "10ms", parallelism=jobs))
            await wait_count(times, "p-", jobs, 900)
            print(f"{jobs} jobs in {time.monotonic() - started:.1f} s")
        spy.send_signal(2)
        spy.wait(30)
        report = summarize(raw)
        (RESULTS / "profile.txt").write_text(report + "\n")
        print(report)


if __name__ == "__main__":
    asyncio.run(
        main(
            int(sys.argv[1]) if len(sys.argv) > 1 else 1000,
            sys.argv[2] if len(sys.argv) > 2 else "fan-out",
        )
    )
