"""``dagwright run FILE --local`` (and ``Pipeline.run_local()``): the DAG's
commands as local processes, scheduled by the same core the operator uses
(dependency order, parallelism, retries and their policies, timeouts,
conditions, finally jobs, outputs, sweeps, caching), so a pipeline can be
debugged on a laptop without a cluster. Images, pools and resources are
ignored; outputs are read from $DAGWRIGHT_OUTPUTS_FILE when a job ends; the
cache lives in ``$XDG_CACHE_HOME/dagwright/memo`` (``~/.cache/...``)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from rich.console import Console

from dagwright.core import expr, inputs
from dagwright.core.graph import Dag, Job
from dagwright.core.inputs import CacheHit
from dagwright.core.reconcile import (
    DeletePod,
    Plan,
    Refusal,
    Snapshot,
    StartPod,
    reconcile,
)
from dagwright.core.spec import DAGExecutionSpec
from dagwright.core.state import ExecutionPhase, JobPhase, JobState, PodObservation, PodPhase
from dagwright.names import PodEnv

PHASE_STYLE = {
    "Succeeded": "green",
    "Cached": "green",
    "Failed": "red",
    "Cancelled": "yellow",
    "Skipped": "yellow",
    "Running": "cyan",
    "Backoff": "magenta",
    "Suspended": "yellow",
}


def memo_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "dagwright" / "memo"


@dataclass
class Attempt:
    process: subprocess.Popen[bytes] | None  # None: the command could not start
    log: Path
    out: IO[bytes]
    started_at: float
    outputs: Path | None = None
    finished_at: float | None = None
    message: str = ""

    def poll(self) -> int | None:
        return self.process.poll() if self.process is not None else 127


@dataclass
class LocalRun:
    name: str
    spec: DAGExecutionSpec
    dag: Dag
    workdir: Path
    console: Console
    tick: float = 0.05
    jobs: dict[str, JobState] = field(default_factory=dict)
    attempts: dict[tuple[str, int], Attempt] = field(default_factory=dict)
    refused: dict[tuple[str, int], Refusal] = field(default_factory=dict)
    cache: dict[str, CacheHit | None] = field(default_factory=dict)
    memo: Path = field(default_factory=memo_dir)

    def command_line(self, job: Job) -> list[str]:
        line = [*(job.command or []), *(job.args or [])]
        if not line:
            raise ValueError(f"job {job.name!r} has no command or args to run locally")
        return line

    def _start(self, action: StartPod) -> None:
        key = (action.job, action.attempt)
        if key in self.attempts:  # asked again for the same attempt: it exists (as a 409 would say)
            return
        try:
            job = inputs.render(self.dag, self.jobs, self.dag.jobs[action.job])
        except expr.ExprError as exc:
            self.refused[key] = Refusal(f"cannot resolve: {exc}", final=True)
            return
        # (A valueFrom names a Secret or a field of a pod: there is none here.)
        env = {**os.environ, **{e.name: e.value for e in job.env if e.value is not None}}
        env |= {
            PodEnv.EXECUTION: self.name,
            PodEnv.JOB: job.name,
            PodEnv.JOB_TYPE: job.type,
            PodEnv.ATTEMPT: str(action.attempt),
        }
        log = self.workdir / f"{job.name}-{action.attempt}.log"
        outputs = None
        if job.outputs:
            outputs = self.workdir / f"{job.name}-{action.attempt}.outputs.json"
            env[PodEnv.OUTPUTS_FILE] = str(outputs)
        if job.config is not None:
            env[PodEnv.CONFIG] = json.dumps(job.config)
            config_file = self.workdir / f"{job.name}-{action.attempt}.config.json"
            config_file.write_text(env[PodEnv.CONFIG])
            env[PodEnv.CONFIG_FILE] = str(config_file)
        out = open(log, "wb")  # noqa: SIM115  (closed when the attempt ends)
        process: subprocess.Popen[bytes] | None = None
        try:
            process = subprocess.Popen(
                self.command_line(job), env=env, stdout=out, stderr=subprocess.STDOUT
            )
        except OSError as exc:  # a failed attempt (exit 127), as a missing binary in an image
            out.write(f"cannot start: {exc}\n".encode())
            out.flush()
        self.attempts[key] = Attempt(process, log, out, time.time(), outputs)

    def _stop(self, action: DeletePod) -> None:
        attempt = self.attempts.pop((action.job, action.attempt), None)
        if attempt is None:
            return
        if attempt.process is not None and attempt.process.poll() is None:
            attempt.process.terminate()
            try:
                attempt.process.wait(10)
            except subprocess.TimeoutExpired:
                attempt.process.kill()
                attempt.process.wait()
        attempt.out.close()

    def _observe(self) -> dict[tuple[str, int], PodObservation]:
        pods = {}
        for (job, number), attempt in self.attempts.items():
            code = attempt.poll()
            if code is None:
                phase = PodPhase.RUNNING
            else:
                if attempt.finished_at is None:
                    attempt.finished_at = time.time()
                    attempt.out.close()
                    if attempt.outputs is not None and attempt.outputs.exists():
                        attempt.message = attempt.outputs.read_text(errors="replace")
                phase = PodPhase.SUCCEEDED if code == 0 else PodPhase.FAILED
            pods[(job, number)] = PodObservation(
                job=job,
                attempt=number,
                phase=phase,
                started_at=attempt.started_at,
                finished_at=attempt.finished_at,
                exit_code=code,
                node="local",
                message=attempt.message,
            )
        return pods

    def _report(self, before: dict[str, JobState], plan: Plan) -> None:
        for name in sorted(plan.changed, key=lambda n: self.dag.jobs[n].index):
            old, new = before.get(name, JobState()), plan.jobs[name]
            if (old.phase, old.attempt) == (new.phase, new.attempt):
                continue
            style = PHASE_STYLE.get(new.phase.value, "white")
            more = f" (attempt {new.attempt})" if new.attempt > 1 else ""
            shown = new.phase.terminal or new.phase is JobPhase.BACKOFF
            why = f": {new.message}" if new.message and shown else ""
            self.console.print(f"  {name} [{style}]{new.phase.value}[/]{more}{why}")

    def run(self) -> ExecutionPhase:
        while True:
            now = time.time()
            snap = Snapshot(
                dag=self.dag,
                jobs=self.jobs,
                pods=self._observe(),
                now=now,
                parallelism=self.spec.parallelism,
                suspend=False,
                shutdown=self.spec.shutdown,
                refused=self.refused,
                cache=self.cache,
            )
            plan = reconcile(snap)
            if plan.lookups:
                self._look_up(plan)
                continue
            self._report(self.jobs, plan)
            self._remember(plan)
            self.jobs = plan.jobs
            for action in plan.actions:
                if isinstance(action, DeletePod):
                    self._stop(action)
            for action in plan.actions:
                if isinstance(action, StartPod):
                    self._start(action)
            alive = any(a.poll() is None for a in self.attempts.values())
            if plan.phase.terminal and not alive:
                self._close()
                return plan.phase
            wake = plan.wake_at if plan.wake_at is not None else now + 1.0
            time.sleep(max(0.0, min(wake - now, self.tick)))

    def _look_up(self, plan: Plan) -> None:
        now = time.time()
        for name in plan.lookups:
            job = self.dag.jobs[name]
            try:
                path = self.memo / f"{inputs.cache_key(self.dag, plan.jobs, job)}.json"
                entry = json.loads(path.read_text())
            except (expr.ExprError, OSError, ValueError):
                entry = None
            self.cache[name] = inputs.cache_hit(job, entry, now)

    def _remember(self, plan: Plan) -> None:
        """Record the runs of cached jobs that succeeded."""
        entries = inputs.cache_entries(
            self.dag, self.jobs, plan.jobs, plan.changed, f"local {self.name}", time.time()
        )
        for key, entry, _ in entries:
            self.memo.mkdir(parents=True, exist_ok=True)
            (self.memo / f"{key}.json").write_text(json.dumps(entry))

    def _close(self) -> None:
        for attempt in self.attempts.values():
            attempt.out.close()

    def failed_logs(self) -> list[Path]:
        return [
            self.attempts[(name, state.attempt)].log
            for name, state in self.jobs.items()
            if state.phase is JobPhase.FAILED and (name, state.attempt) in self.attempts
        ]
