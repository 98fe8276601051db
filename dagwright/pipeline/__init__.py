"""Pipelines in Python: jobs, dependencies, sweeps, outputs, conditions and
finally jobs, validated as admission would, then written as YAML, submitted
(Kubernetes API or the REST facade), waited on, or run locally.

    from dagwright.pipeline import Job, Pipeline, item

    with Pipeline("hpo", image="python:3.12-slim") as p:
        train = Job("train", matrix={"lr": [0.1, 0.01]}, outputs=["accuracy", "model_uri"],
                    command=["python", "train.py", f"--lr={item.lr}"])
        pick = Job("pick", outputs=["model_uri"],
                   args=[train.outputs.model_uri.argmax("accuracy")])
        deploy = Job("deploy", when=train.outputs.accuracy.max() > 0.9,
                     args=[pick.outputs.model_uri])
        notify = Job("notify", finally_="Always")
        train >> pick >> deploy
    p.submit().wait()

This module needs only pydantic, PyYAML and httpx (``pip install dagwright``):
not kopf, FastAPI or the Kubernetes client, which the operator and API need
(``pip install 'dagwright[cluster]'``).
"""

from __future__ import annotations

import contextvars
import json
import re
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from dagwright.core.graph import Dag, build_dag
from dagwright.core.spec import DAGExecutionSpec, JobTemplateSpec
from dagwright.core.state import ENDED_PHASES, ExecutionPhase, JobState
from dagwright.errors import InvalidDag
from dagwright.names import API_VERSION, EXECUTION_KIND, WORKFLOW_LABEL

__all__ = [
    "Condition",
    "Job",
    "Pipeline",
    "PipelineError",
    "Ref",
    "Submission",
    "item",
]

_CURRENT: contextvars.ContextVar[Pipeline | None] = contextvars.ContextVar(
    "dagwright_pipeline", default=None
)


class PipelineError(ValueError):
    """What admission would refuse, every problem at once (``problems``)."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("invalid pipeline:\n" + "\n".join(f"- {p}" for p in self.problems))


def _literal(value: Any) -> str:
    if isinstance(value, Ref):
        return value.expression
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return json.dumps(value)


class Condition:
    """A boolean expression, for ``when=``: combine with ``&``, ``|``, ``~``."""

    def __init__(self, expression: str):
        self.expression = expression

    def __and__(self, other: Condition) -> Condition:
        return Condition(f"({self.expression}) and ({other.expression})")

    def __or__(self, other: Condition) -> Condition:
        return Condition(f"({self.expression}) or ({other.expression})")

    def __invert__(self) -> Condition:
        return Condition(f"not ({self.expression})")

    def __str__(self) -> str:
        return self.expression

    def __repr__(self) -> str:
        return f"Condition({self.expression!r})"


class Ref:
    """A value known when a job runs (an output, a phase, the sweep's item):
    in a string it becomes ``{{ expression }}``; compared, a Condition."""

    def __init__(self, expression: str):
        self.expression = expression

    def __str__(self) -> str:
        return "{{ " + self.expression + " }}"

    def __format__(self, spec: str) -> str:
        return str(self)

    def __repr__(self) -> str:
        return f"Ref({self.expression!r})"

    def __getattr__(self, key: str) -> Ref:
        if key.startswith("_"):
            raise AttributeError(key)
        return Ref(f"{self.expression}.{key}")

    def _compare(self, op: str, other: Any) -> Condition:
        return Condition(f"{self.expression} {op} {_literal(other)}")

    def __gt__(self, other: Any) -> Condition:
        return self._compare(">", other)

    def __ge__(self, other: Any) -> Condition:
        return self._compare(">=", other)

    def __lt__(self, other: Any) -> Condition:
        return self._compare("<", other)

    def __le__(self, other: Any) -> Condition:
        return self._compare("<=", other)

    def __eq__(self, other: object) -> Condition:  # type: ignore[override]
        return self._compare("==", other)

    def __ne__(self, other: object) -> Condition:  # type: ignore[override]
        return self._compare("!=", other)

    __hash__ = None  # type: ignore[assignment]

    def isin(self, values: Iterable[Any]) -> Condition:
        return Condition(f"{self.expression} in [{', '.join(_literal(v) for v in values)}]")

    def max(self) -> Ref:
        """The highest of a sweep's values."""
        return Ref(f"{self.expression} | max")

    def min(self) -> Ref:
        return Ref(f"{self.expression} | min")

    def len(self) -> Ref:
        return Ref(f"{self.expression} | len")

    def argmax(self, by: str | None = None) -> Ref:
        """This output of the sweep member with the highest output ``by``
        (without ``by``: the name of the member with the highest value)."""
        return Ref(f"{self.expression} | argmax" + (f"({by})" if by else ""))

    def argmin(self, by: str | None = None) -> Ref:
        return Ref(f"{self.expression} | argmin" + (f"({by})" if by else ""))


item = Ref("item")  # a sweep member's item: f"--lr={item.lr}"


class _Outputs:
    def __init__(self, job: Job):
        self._job = job

    def __getattr__(self, name: str) -> Ref:
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._job.outputs_declared:
            raise AttributeError(
                f"job {self._job.name!r} declares no output {name!r} "
                f"(it declares: {', '.join(self._job.outputs_declared) or 'none'})"
            )
        return Ref(f"jobs.{self._job.name}.outputs.{name}")

    def __getitem__(self, name: str) -> Ref:
        ref: Ref = getattr(self, name)
        return ref


_REFERENCE = re.compile(r"\bjobs\.([a-z0-9](?:[-a-z0-9]*[a-z0-9])?)\.")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _plain(value: Any) -> Any:
    """Refs and Conditions as the strings they stand for, everywhere."""
    if isinstance(value, Ref | Condition):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class Job:
    """One job (or, with ``with_items``/``matrix``, a sweep of jobs). Every
    DAGExecution job field is a keyword, in snake_case (``finally_`` for
    ``finally``); ``env`` may be a dict. Reading another job's outputs
    makes it a dependency."""

    def __init__(
        self,
        name: str,
        *,
        outputs: Sequence[str] = (),
        depends_on: Sequence[Job | str] = (),
        when: Condition | str | None = None,
        env: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        pipeline: Pipeline | None = None,
        **fields: Any,
    ):
        self.name = name
        self.outputs_declared = tuple(outputs)
        self.depends: list[str] = []
        self.when = when
        self.env = env
        self.fields = fields
        self.outputs = _Outputs(self)
        for dep in depends_on:
            self.after(dep)
        owner = pipeline or _CURRENT.get()
        if owner is not None:
            owner.add(self)

    @property
    def phase(self) -> Ref:
        return Ref(f"jobs.{self.name}.phase")

    def after(self, *others: Job | str) -> Job:
        for other in others:
            name = other.name if isinstance(other, Job) else other
            if name not in self.depends:
                self.depends.append(name)
        return self

    def __rshift__(self, other: Job | Sequence[Job]) -> Job | Sequence[Job]:
        """``a >> b``: b depends on a; ``a >> [b, c]``: both do."""
        for job in [other] if isinstance(other, Job) else other:
            job.after(self)
        return other

    def __rrshift__(self, other: Sequence[Job]) -> Job:
        """``[a, b] >> c``: c depends on both."""
        self.after(*other)
        return self

    def __repr__(self) -> str:
        return f"Job({self.name!r})"

    def manifest(self, known: Iterable[str] = (), finals: Iterable[str] = ()) -> dict[str, Any]:
        """The job as a DAGExecution ``spec.jobs`` entry. ``known``: the
        pipeline's job and sweep names, for dependencies read from references."""
        out: dict[str, Any] = {"name": self.name}
        for key, value in self.fields.items():
            if value is None:
                continue
            out["finally" if key == "finally_" else _camel(key)] = _plain(value)
        if self.outputs_declared:
            out["outputs"] = list(self.outputs_declared)
        if self.when is not None:
            out["when"] = str(self.when)
        if self.env is not None:
            if isinstance(self.env, Mapping):
                out["env"] = [{"name": k, "value": str(_plain(v))} for k, v in self.env.items()]
            else:
                out["env"] = _plain(list(self.env))
        depends = list(self.depends)
        finals = set(finals)
        if "finally" not in out:
            text = json.dumps(out)
            for found in _REFERENCE.findall(text):
                if found in known and found not in (self.name, *finals, *depends):
                    depends.append(found)
        if depends:
            out["dependsOn"] = depends
        return out


@dataclass
class LocalResult:
    phase: ExecutionPhase
    jobs: dict[str, JobState]
    workdir: Path

    @property
    def succeeded(self) -> bool:
        return self.phase is ExecutionPhase.SUCCEEDED

    def outputs(self, job: str) -> dict[str, Any]:
        return dict(self.jobs[job].outputs or {})


class Pipeline:
    """A DAGExecution being written. Jobs created inside ``with Pipeline(...)``
    join it; settings given here go to ``spec.defaults`` (``image``,
    ``retries``, ``requires``...) or the spec (``parallelism``, ``priority``,
    ``pod_gc``, ``shutdown``)."""

    _SPEC_FIELDS = ("parallelism", "priority", "suspend", "shutdown", "pod_gc")

    def __init__(
        self,
        name: str,
        *,
        namespace: str | None = None,
        labels: Mapping[str, str] | None = None,
        generate_name: bool = False,
        **settings: Any,
    ):
        self.name = name
        self.namespace = namespace
        self.labels = dict(labels or {})
        self.generate_name = generate_name
        self.spec_fields = {k: settings.pop(k) for k in self._SPEC_FIELDS if k in settings}
        self.defaults = settings
        self.jobs: list[Job] = []
        self._token: contextvars.Token[Pipeline | None] | None = None

    def __enter__(self) -> Pipeline:
        self._token = _CURRENT.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _CURRENT.reset(self._token)
            self._token = None

    def add(self, *jobs: Job) -> Pipeline:
        for job in jobs:
            if job not in self.jobs:
                self.jobs.append(job)
        return self

    # --- what it is -----------------------------------------------------------

    def spec_dict(self) -> dict[str, Any]:
        known = {job.name for job in self.jobs}
        finals = {job.name for job in self.jobs if job.fields.get("finally_")}
        spec: dict[str, Any] = {_camel(k): _plain(v) for k, v in self.spec_fields.items()}
        if "podGc" in spec:
            spec["podGC"] = spec.pop("podGc")
        if self.defaults:
            spec["defaults"] = {_camel(k): _plain(v) for k, v in self.defaults.items()}
        spec["jobs"] = [job.manifest(known, finals) for job in self.jobs]
        return spec

    def spec(self) -> DAGExecutionSpec:
        try:
            return DAGExecutionSpec.model_validate(self.spec_dict())
        except ValidationError as exc:
            raise PipelineError(
                [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
            ) from None

    def validate(
        self,
        pools: Sequence[Any] | None = None,
        templates: Mapping[str, JobTemplateSpec] | None = None,
    ) -> Dag:
        """The checks admission and the operator make (schema, graph,
        references; pools and templates when given); raises PipelineError."""
        try:
            return build_dag(self.spec(), pools, templates)
        except InvalidDag as exc:
            raise PipelineError(exc.problems) from None

    def to_manifest(self) -> dict[str, Any]:
        self.validate()
        spec = self.spec().model_dump(
            mode="json", by_alias=True, exclude_none=True, exclude_defaults=True
        )
        metadata: dict[str, Any] = {"labels": {WORKFLOW_LABEL: self.name, **self.labels}}
        if self.generate_name:
            metadata["generateName"] = f"{self.name}-"
        else:
            metadata["name"] = self.name
        if self.namespace:
            metadata["namespace"] = self.namespace
        return {
            "apiVersion": API_VERSION,
            "kind": EXECUTION_KIND,
            "metadata": metadata,
            "spec": spec,
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_manifest(), sort_keys=False)

    # --- running it -------------------------------------------------------------

    def submit(
        self,
        *,
        api_url: str | None = None,
        token: str | None = None,
        kubeconfig: str | None = None,
        context: str | None = None,
        verify: bool | str = True,
    ) -> Submission:
        """Create the DAGExecution: through the REST facade when ``api_url``
        is given (with ``token``), else through the Kubernetes API of
        ``kubeconfig`` (default $KUBECONFIG, ~/.kube/config)."""
        from dagwright.pipeline import _client

        manifest = self.to_manifest()
        if api_url:
            return _client.submit_rest(self, manifest, api_url, token, verify)
        return _client.submit_kube(manifest, kubeconfig, context, self.namespace)

    def run_local(self, workdir: str | Path | None = None, quiet: bool = False) -> LocalResult:
        """Run every job's command here, with the operator's scheduling (no
        cluster): ``dagwright run --local``."""
        from rich.console import Console

        from dagwright.local import LocalRun

        self.validate()
        spec = self.spec()
        where = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        where.mkdir(parents=True, exist_ok=True)
        console = Console(quiet=quiet)
        run = LocalRun(self.name, spec, build_dag(spec), where, console)
        for job in run.dag.jobs.values():
            run.command_line(job)
        phase = run.run()
        return LocalResult(phase, dict(run.jobs), where)


@dataclass
class Submission:
    """A submitted execution: ``status()`` and ``wait()``."""

    name: str
    namespace: str
    client: Any  # _client.Kube or _client.Rest

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self.client.status(self.name, self.namespace)
        return result

    def wait(self, timeout: float | None = None, poll: float = 1.0) -> str:
        """The execution's phase once it has ended; TimeoutError after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            phase = self.status().get("phase")
            if phase in ENDED_PHASES:
                return str(phase)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"{self.namespace}/{self.name} still {phase} after {timeout}s")
            time.sleep(poll)
