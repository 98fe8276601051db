"""What flows between jobs: outputs read from an attempt that succeeded,
templates resolved when a job starts, the outcome a finally job is told,
and the key a cached job is found by."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from dagwright.core import expr
from dagwright.core.durations import parse_duration
from dagwright.core.graph import Dag, Job
from dagwright.core.podspec import EnvVar
from dagwright.core.state import ExecutionPhase, JobPhase, JobState
from dagwright.names import MAX_OUTPUT_BYTES, PodEnv

# Failed jobs named in a finally job's $DAGWRIGHT_FAILED_JOBS.
MAX_NAMED = 1000


def parse_outputs(job: Job, message: str) -> tuple[dict[str, Any], str]:
    """The outputs a succeeded attempt recorded (its termination message, a
    JSON object), and what is wrong with them ("" if nothing): every declared
    output must be there, and nothing else."""
    if not job.outputs:
        return {}, ""
    if not message.strip():
        return {}, f"declared outputs {', '.join(job.outputs)} were not set"
    if len(message.encode()) > MAX_OUTPUT_BYTES:
        return {}, f"outputs take more than {MAX_OUTPUT_BYTES} bytes"
    try:
        values = json.loads(message)
    except ValueError:
        return {}, f"outputs are not JSON: {message[:80]!r}"
    if not isinstance(values, dict):
        return {}, "outputs are not a JSON object of name: value"
    missing = [name for name in job.outputs if name not in values]
    if missing:
        return {}, f"declared outputs {', '.join(missing)} were not set"
    extra = sorted(set(values) - set(job.outputs))
    if extra:
        return {}, f"undeclared outputs {', '.join(extra)} (declare them in outputs)"
    return values, ""


def outcome(dag: Dag, states: Mapping[str, JobState]) -> tuple[ExecutionPhase, list[str]]:
    """How the jobs other than the finally jobs ended (once they all have):
    Failed if any failed, Cancelled if any was cancelled, else Succeeded;
    and the failed ones."""
    failed: list[str] = []
    cancelled = False
    for name, job in dag.jobs.items():
        if job.finally_on is not None:
            continue
        phase = states[name].phase
        if phase is JobPhase.FAILED:
            failed.append(name)
        elif phase is JobPhase.CANCELLED:
            cancelled = True
    if failed:
        return ExecutionPhase.FAILED, failed
    return (ExecutionPhase.CANCELLED if cancelled else ExecutionPhase.SUCCEEDED), failed


def resolver(dag: Dag, states: Mapping[str, JobState], job: Job) -> expr.Resolver:
    """Looks up the paths of ``job``'s expressions (checked by
    ``core.references`` when the DAG was built). A job that did not succeed
    (a finally job or ``allowSkipped`` may read one) has null outputs; a
    sweep's members that did not succeed are left out."""

    def output(name: str, key: str) -> Any:
        state = states[name]
        if not state.phase.done:
            return None
        return (state.outputs or {}).get(key)

    def resolve(path: expr.Path) -> Any:
        parts = path.parts
        if parts[0] == "item":
            value = job.item
            for key in parts[1:]:
                if not isinstance(value, Mapping) or key not in value:
                    raise expr.ExprError(f"{path}: the item {expr.show(job.item)} has no {key!r}")
                value = value[key]
            return value
        if parts[0] == "jobs" and len(parts) >= 3:
            target = parts[1]
            members = dag.sweeps.get(target)
            if parts[2] == "phase":
                if members is not None:
                    return expr.Members(members, tuple(states[m].phase.value for m in members))
                return states[target].phase.value
            if members is not None:
                done = tuple(m for m in members if states[m].phase.done)
                return expr.Members(done, tuple(output(m, parts[3]) for m in done))
            return output(target, parts[3])
        raise expr.ExprError(f"unknown name {path}")

    return resolve


def render(dag: Dag, states: Mapping[str, JobState], job: Job) -> Job:
    """The job as it starts: templates resolved; a finally job also told the
    outcome. Raises ``expr.ExprError`` when a template cannot be evaluated."""
    env_added: list[tuple[str, str]] = []
    if job.finally_on is not None:
        phase, failed = outcome(dag, states)
        named = ",".join(failed[:MAX_NAMED]) + (",..." if len(failed) > MAX_NAMED else "")
        env_added = [(PodEnv.EXECUTION_PHASE, phase.value), (PodEnv.FAILED_JOBS, named)]
    if not job.templated and not env_added:
        return job
    resolve = resolver(dag, states, job)
    pod = job.pod
    if job.templated:
        job = replace(
            job,
            command=_strings(job.command, resolve),
            args=_strings(job.args, resolve),
            config=expr.render_json(dict(job.config), resolve) if job.config is not None else None,
        )
        env = [
            var.model_copy(update={"value": expr.render_text(var.value, resolve)})
            if var.value and "{{" in var.value
            else var
            for var in pod.env or ()
        ]
        annotations = {k: expr.render_text(v, resolve) for k, v in (pod.annotations or {}).items()}
        pod = pod.model_copy(
            update={"env": env or pod.env, "annotations": annotations or pod.annotations}
        )
    if env_added:
        extra = [EnvVar(name=name, value=value) for name, value in env_added]
        pod = pod.model_copy(update={"env": [*(pod.env or ()), *extra]})
    return replace(job, pod=pod)


def _strings(values: Sequence[str] | None, resolve: expr.Resolver) -> tuple[str, ...] | None:
    if values is None:
        return None
    return tuple(expr.render_text(v, resolve) for v in values)


def cache_key(dag: Dag, states: Mapping[str, JobState], job: Job) -> str:
    """What a cached job is found by: its ``cache.key`` resolved, or else a
    hash of what it runs, resolved (image, command, args, env values,
    config, item, declared outputs)."""
    resolve = resolver(dag, states, job)
    if job.cache is not None and job.cache.key:
        basis: Any = {"key": expr.render_text(job.cache.key, resolve)}
    else:
        started = render(dag, states, job)
        basis = {
            "image": started.image,
            "command": started.command,
            "args": started.args,
            "env": {v.name: v.value for v in started.pod.env or () if v.value is not None},
            "config": started.config,
            "item": started.item,
            "outputs": started.outputs,
        }
    text = json.dumps(basis, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class CacheHit:
    """A succeeded run of a cached job, found by its key."""

    outputs: dict[str, Any]
    source: str  # where it comes from, for people: "execution ns/name job j"


def cache_hit(job: Job, entry: Mapping[str, Any] | None, now: float) -> CacheHit | None:
    """The hit a stored cache entry is for ``job``, if it is one: no older
    than the job's ``maxAge`` and holding every output the job declares."""
    if entry is None or job.cache is None:
        return None
    if now - float(entry.get("at", 0)) > parse_duration(job.cache.max_age):
        return None
    outputs = entry.get("outputs") or {}
    if not isinstance(outputs, dict) or not set(job.outputs) <= set(outputs):
        return None
    source = f"execution {entry.get('execution')} job {entry.get('job')}"
    return CacheHit({k: outputs[k] for k in job.outputs}, source)


def cache_entries(
    dag: Dag,
    before: Mapping[str, JobState],
    after: Mapping[str, JobState],
    changed: Iterable[str],
    execution: str,
    now: float,
) -> list[tuple[str, dict[str, Any], int]]:
    """(key, entry, seconds to keep it) for each cached job that succeeded
    between ``before`` and ``after``: what a later execution may reuse."""
    found = []
    for name in changed:
        job, state = dag.jobs[name], after[name]
        if job.cache is None or state.phase is not JobPhase.SUCCEEDED:
            continue
        old = before.get(name)
        if old is not None and old.phase is JobPhase.SUCCEEDED:
            continue
        try:
            key = cache_key(dag, after, job)
        except expr.ExprError:
            continue
        entry = {"outputs": state.outputs or {}, "at": now, "execution": execution, "job": name}
        found.append((key, entry, int(parse_duration(job.cache.max_age))))
    return found
