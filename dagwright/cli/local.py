"""``dagwright run FILE --local``: the DAG's commands as local processes,
scheduled by the same core (dependency order, parallelism, retries with
backoff, timeouts) the operator uses, so a pipeline can be debugged on a
laptop without a cluster. Images, pools and resources are ignored."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from rich.console import Console

from dagwright.cli.view import PHASE_STYLE
from dagwright.core.graph import Dag, Job
from dagwright.core.reconcile import DeletePod, Plan, Snapshot, StartPod, reconcile
from dagwright.core.spec import DAGExecutionSpec
from dagwright.core.state import ExecutionPhase, JobPhase, JobState, PodObservation, PodPhase
from dagwright.names import PodEnv


@dataclass
class Attempt:
    process: subprocess.Popen[bytes] | None  # None: the command could not start
    log: Path
    out: IO[bytes]
    started_at: float
    finished_at: float | None = None

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

    def command_line(self, job: Job) -> list[str]:
        line = [*(job.command or []), *(job.args or [])]
        if not line:
            raise ValueError(f"job {job.name!r} has no command or args to run locally")
        return line

    def _start(self, action: StartPod) -> None:
        key = (action.job, action.attempt)
        if key in self.attempts:  # asked again for the same attempt: it exists (as a 409 would say)
            return
        job = self.dag.jobs[action.job]
        # (A valueFrom names a Secret or a field of a pod: there is none here.)
        env = {**os.environ, **{e.name: e.value for e in job.env if e.value is not None}}
        env |= {
            PodEnv.EXECUTION: self.name,
            PodEnv.JOB: job.name,
            PodEnv.JOB_TYPE: job.type,
            PodEnv.ATTEMPT: str(action.attempt),
        }
        log = self.workdir / f"{job.name}-{action.attempt}.log"
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
        self.attempts[key] = Attempt(process, log, out, time.time())

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
                phase = PodPhase.SUCCEEDED if code == 0 else PodPhase.FAILED
            pods[(job, number)] = PodObservation(
                job=job,
                attempt=number,
                phase=phase,
                started_at=attempt.started_at,
                finished_at=attempt.finished_at,
                exit_code=code,
                node="local",
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
            )
            plan = reconcile(snap)
            self._report(self.jobs, plan)
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

    def _close(self) -> None:
        for attempt in self.attempts.values():
            attempt.out.close()

    def failed_logs(self) -> list[Path]:
        return [
            self.attempts[(name, state.attempt)].log
            for name, state in self.jobs.items()
            if state.phase is JobPhase.FAILED and (name, state.attempt) in self.attempts
        ]
