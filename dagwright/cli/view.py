"""The live view of one execution: a progress bar over finished jobs, one
line per job transition, and a final per-job table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dagwright.core.state import ExecutionPhase
from dagwright.local import PHASE_STYLE


def finished(status: dict[str, Any]) -> tuple[int, int]:
    counts = status.get("counts") or {}
    done = sum(counts.get(k, 0) for k in ("succeeded", "cached", "failed", "skipped", "cancelled"))
    return done, int(counts.get("total", 0))


def summary(status: dict[str, Any]) -> str:
    counts = status.get("counts") or {}
    parts = [f"{k} {v}" for k, v in counts.items() if k != "total" and v]
    return " · ".join(parts)


def job_table(status: dict[str, Any]) -> Table:
    table = Table("JOB", "PHASE", "ATTEMPT", "EXIT", "MESSAGE", box=None, pad_edge=False)
    for job in status.get("jobs") or []:
        phase = job.get("phase", "")
        table.add_row(
            job["name"],
            f"[{PHASE_STYLE.get(phase, 'white')}]{phase}[/]",
            str(job.get("attempt", 0)),
            "" if job.get("exitCode") is None else str(job["exitCode"]),
            job.get("message", ""),
        )
    return table


def transitions(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """One line per job whose phase or attempt changed between two statuses."""
    old = {j["name"]: j for j in before.get("jobs") or []}
    lines = []
    for job in after.get("jobs") or []:
        prev = old.get(job["name"], {})
        if (prev.get("phase"), prev.get("attempt")) != (job.get("phase"), job.get("attempt")):
            phase = job.get("phase", "")
            style = PHASE_STYLE.get(phase, "white")
            attempt = f" (attempt {job['attempt']})" if job.get("attempt", 0) > 1 else ""
            message = f": {job['message']}" if job.get("message") and phase != "Running" else ""
            lines.append(f"  {job['name']} [{style}]{phase}[/]{attempt}{message}")
    return lines


def follow(
    name: str,
    fetch: Callable[[], dict[str, Any]],
    sleep: Callable[[float], None],
    console: Console,
    interval: float = 0.5,
) -> str:
    """Show ``name`` until it ends; return its final phase."""
    status: dict[str, Any] = {}
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[summary]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(name, total=None, summary="waiting for the operator")
        while True:
            current = fetch().get("status") or {}
            for line in transitions(status, current):
                progress.console.print(line)
            status = current
            done, total = finished(status)
            phase = status.get("phase") or "Pending"
            progress.update(
                task,
                description=f"{name} {phase}",
                completed=done,
                total=total or None,
                summary=summary(status),
            )
            if phase in {p.value for p in ExecutionPhase if p.terminal}:
                break
            sleep(interval)
    if status.get("message"):
        console.print(status["message"])
    return str(status.get("phase"))
