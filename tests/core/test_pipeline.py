"""Pipeline semantics in the pure core: sweeps, outputs, conditions, finally
jobs, caching and retry policies, through the simulated world of
``test_reconcile`` and with hypothesis choosing outcomes and interleavings."""

from __future__ import annotations

import contextlib
import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dagwright.core import expr, inputs, sweeps
from dagwright.core.failures import Failure, of_pod, retried
from dagwright.core.graph import Dag, build_dag
from dagwright.core.inputs import CacheHit
from dagwright.core.reconcile import StartPod, rerun
from dagwright.core.spec import DAGExecutionSpec, RetryOn, RetryPolicy, Shutdown
from dagwright.core.state import ExecutionPhase, JobPhase, JobState, PodObservation, PodPhase
from dagwright.errors import InvalidDag
from tests.core.test_reconcile import World


def dag_of(*jobs: dict[str, Any], **defaults: Any) -> Dag:
    return build_dag(
        DAGExecutionSpec.model_validate(
            {"defaults": {"image": "x", "retries": 0, **defaults}, "jobs": list(jobs)}
        )
    )


def problems(*jobs: dict[str, Any]) -> str:
    with pytest.raises(InvalidDag) as caught:
        dag_of(*jobs)
    return str(caught.value)


class PipelineWorld(World):
    """Pods that write their outputs: a succeeded attempt's message names its
    job and attempt; a failed one's says "failed" (never to be taken)."""

    values: dict[str, Any]

    def check_start(self, action: StartPod) -> None:
        job = self.dag.jobs[action.job]
        assert action.job not in self.cache or self.cache[action.job] is None, (
            f"cached job {action.job} created a pod"
        )
        if job.finally_on is not None:
            for name, other in self.dag.jobs.items():
                if other.finally_on is None:
                    assert self.jobs[name].phase.terminal, f"{action.job} before {name} ended"

    def _create(self, action: StartPod) -> None:
        key = (action.job, action.attempt)
        if key in self.pods:
            return
        job = self.dag.jobs[action.job]
        for parent in job.depends_on:
            state = self.jobs[parent]
            assert state.phase.done or (job.allow_skipped and state.phase is JobPhase.SKIPPED), (
                f"{action.job} started before {parent} was done"
            )
        self.pods[key] = PodObservation(action.job, action.attempt, PodPhase.PENDING)
        self.started.append((action.job, action.attempt, self.now))

    def advance(self, key: tuple[str, int], outcome: str) -> None:
        pod = self.pods[key]
        if pod.deleting:
            del self.pods[key]
        elif pod.phase is PodPhase.PENDING:
            self.pods[key] = replace(pod, phase=PodPhase.RUNNING, started_at=self.now, node="n1")
        elif pod.phase is PodPhase.RUNNING and outcome == "fail":
            message = json.dumps({"v": "failed"})
            self.pods[key] = replace(pod, phase=PodPhase.FAILED, exit_code=1, message=message)
        elif pod.phase is PodPhase.RUNNING and outcome == "succeed":
            job = self.dag.jobs[key[0]]
            value = self.values.get(key[0], f"{key[0]}-{key[1]}")
            message = json.dumps({"v": value}) if job.outputs else ""
            self.pods[key] = replace(pod, phase=PodPhase.SUCCEEDED, exit_code=0, message=message)


def world(dag: Dag, **kwargs: Any) -> PipelineWorld:
    w = PipelineWorld(dag, **kwargs)
    w.values = {}
    return w


# --- sweeps --------------------------------------------------------------


def test_a_matrix_expands_to_every_combination_named_by_index_with_its_item() -> None:
    dag = dag_of(
        {
            "name": "train",
            "matrix": {"lr": [0.1, 0.01], "batch": [32, 64, 128]},
            "args": ["--lr={{item.lr}}", "--batch={{ item.batch }}"],
            "outputs": ["acc"],
        },
        {"name": "pick", "dependsOn": ["train"]},
    )
    members = dag.sweeps["train"]
    assert members == tuple(f"train-{i}" for i in range(6))
    assert dag.jobs["train-4"].item == {"lr": 0.01, "batch": 64}
    assert set(dag.jobs["pick"].depends_on) == set(members)
    started = inputs.render(dag, {n: JobState() for n in dag.jobs}, dag.jobs["train-4"])
    assert started.args == ("--lr=0.01", "--batch=64")


def test_sweep_names_from_the_raw_manifest_match_the_expansion() -> None:
    raw = [
        {"name": "a"},
        {"name": "s", "withItems": [1, 2, 3]},
        {"name": "m", "matrix": {"x": [1, 2]}},
    ]
    dag = dag_of(*raw)
    assert sweeps.names(raw) == ["a", "s-0", "s-1", "s-2", "m-0", "m-1"]
    assert set(sweeps.names(raw)) == set(dag.jobs)


def test_sweeps_are_checked_before_anything_runs() -> None:
    assert "at most 10000" in problems(
        {"name": "s", "matrix": {"a": list(range(200)), "b": list(range(60))}}
    )
    assert "also a sweep" in problems({"name": "s", "withItems": [1]}, {"name": "s"})
    assert "defined more than once" in problems({"name": "s", "withItems": [1, 2]}, {"name": "s-1"})
    assert "longer than 63" in problems({"name": "a" * 62, "withItems": [1, 2]})
    assert "no key 'lr'" in problems(
        {"name": "s", "withItems": [{"x": 1}], "args": ["{{item.lr}}"]}
    )
    assert "only the jobs of a sweep" in problems({"name": "a", "args": ["{{item}}"]})


# --- references ------------------------------------------------------------


def test_references_to_unknown_not_upstream_or_undeclared_outputs_are_refused() -> None:
    base = {"name": "train", "outputs": ["uri"]}
    assert "no job or sweep named 'nope'" in problems(
        base, {"name": "d", "dependsOn": ["train"], "args": ["{{jobs.nope.outputs.uri}}"]}
    )
    assert "is not upstream of 'd'" in problems(
        base, {"name": "d", "args": ["{{jobs.train.outputs.uri}}"]}
    )
    assert "declares no output 'loss'" in problems(
        base, {"name": "d", "dependsOn": ["train"], "when": "jobs.train.outputs.loss < 1"}
    )
    assert "unknown name 'exitCode'" in problems(
        base, {"name": "d", "dependsOn": ["train"], "when": "exitCode == 1"}
    )
    # Upstream through another job counts.
    dag_of(
        base,
        {"name": "m", "dependsOn": ["train"]},
        {
            "name": "d",
            "dependsOn": ["m"],
            "env": [{"name": "U", "value": "{{jobs.train.outputs.uri}}"}],
        },
    )


def test_a_bad_expression_is_refused_with_where_it_is() -> None:
    with pytest.raises(ValueError, match="expected"):
        DAGExecutionSpec.model_validate({"jobs": [{"name": "a", "image": "x", "when": "(a"}]})
    assert "args[0]" in problems(
        {"name": "a", "outputs": ["x"]},
        {"name": "b", "dependsOn": ["a"], "args": ["{{ jobs.a.outputs.x | nope }}"]},
    )


@given(st.text(max_size=40))
def test_the_parser_never_raises_anything_but_expr_error(text: str) -> None:
    try:
        node = expr.parse(text)
    except expr.ExprError:
        return
    with contextlib.suppress(expr.ExprError):
        expr.evaluate(node, lambda p: 1)


def test_expressions() -> None:
    values = {"a": 2, "s": "abc", "l": [1, 2]}

    def ev(text: str) -> Any:
        return expr.evaluate(expr.parse(text), lambda p: values[str(p)])

    assert ev("a > 1 and s == 'abc'") is True
    assert ev("not a in l") is False
    assert ev("a not in [3, 4] || false") is True
    assert ev("l | max") == 2
    assert ev("l | len") == 2
    assert ev("-1.5 < a") is True
    with pytest.raises(expr.ExprError, match="cannot compare"):
        ev("s > 1")
    # A literal {{ is written {{ '{{' }}: a Go template in an argument stays one.
    dag = dag_of({"name": "a", "args": ["--format={{ '{{' }}.Name}}"]})
    assert inputs.render(dag, {"a": JobState()}, dag.jobs["a"]).args == ("--format={{.Name}}",)


# --- outputs, conditions, argmax ---------------------------------------------


def run(
    w: PipelineWorld, fail: frozenset[str] = frozenset(), max_steps: int = 200
) -> ExecutionPhase:
    for _ in range(max_steps):
        plan = w.step()
        if plan.phase.terminal:
            phase: ExecutionPhase = plan.phase
            return phase
        for key in list(w.pods):
            pod = w.pods[key]
            if pod.alive or pod.deleting:
                w.advance(key, "fail" if key[0] in fail else "succeed")
        w.now = max(w.now + 1, plan.wake_at or 0)
    raise AssertionError(f"not terminal: {w.jobs}")


def test_sweep_pick_best_condition_and_finally() -> None:
    dag = dag_of(
        {"name": "train", "withItems": [{"lr": 1}, {"lr": 2}, {"lr": 3}], "outputs": ["v"]},
        {
            "name": "pick",
            "dependsOn": ["train"],
            "args": ["{{ jobs.train.outputs.v | argmax }}", "{{jobs.train.outputs.v | max}}"],
            "outputs": ["v"],
        },
        {"name": "deploy", "dependsOn": ["pick"], "when": "jobs.pick.outputs.v > 0.9"},
        {"name": "after", "dependsOn": ["deploy"]},
        {"name": "after-any", "dependsOn": ["deploy"], "allowSkipped": True},
        {"name": "notify", "finally": "Always"},
        {"name": "on-fail", "finally": "OnFailure"},
    )
    w = world(dag)
    w.values = {"train-0": 0.5, "train-1": 0.8, "train-2": 0.7, "pick": 0.8}
    captured: dict[str, Any] = {}
    original = w.check_start

    def check(action: StartPod) -> None:
        original(action)
        captured[action.job] = inputs.render(dag, w.jobs, dag.jobs[action.job])

    w.check_start = check  # type: ignore[method-assign]
    assert run(w) is ExecutionPhase.SUCCEEDED
    assert captured["pick"].args == ("train-1", "0.8")
    assert w.jobs["pick"].outputs == {"v": 0.8}
    assert w.jobs["deploy"].phase is JobPhase.SKIPPED
    assert "is false" in w.jobs["deploy"].message
    assert w.jobs["after"].phase is JobPhase.SKIPPED
    assert w.jobs["after-any"].phase is JobPhase.SUCCEEDED
    env = {v.name: v.value for v in captured["notify"].pod.env or ()}
    assert env["DAGWRIGHT_EXECUTION_PHASE"] == "Succeeded"
    assert w.jobs["on-fail"].phase is JobPhase.SKIPPED
    assert "on-fail" not in {j for j, _, _ in w.started}


def test_outputs_that_were_not_declared_or_missing_fail_the_attempt() -> None:
    dag = dag_of({"name": "a", "outputs": ["v"], "retries": 1})
    w = world(dag)
    w.values = {"a": "ok"}
    original = w.advance

    def advance(key: tuple[str, int], outcome: str) -> None:
        original(key, outcome)
        pod = w.pods.get(key)
        if pod is not None and pod.phase is PodPhase.SUCCEEDED and key[1] == 1:
            w.pods[key] = replace(pod, message='{"y": 1}')

    w.advance = advance  # type: ignore[method-assign]
    assert run(w) is ExecutionPhase.SUCCEEDED
    assert w.jobs["a"].attempt == 2
    assert w.jobs["a"].outputs == {"v": "ok"}
    assert w.plan is not None


def test_a_failing_dag_runs_its_notifier_and_cleanup_but_not_on_success() -> None:
    dag = dag_of(
        {"name": "a"},
        {"name": "b", "dependsOn": ["a"]},
        {"name": "notify", "finally": "OnFailure"},
        {"name": "cleanup", "finally": "Always", "dependsOn": ["notify"], "allowSkipped": True},
        {"name": "celebrate", "finally": "OnSuccess"},
    )
    w = world(dag)
    assert run(w, fail=frozenset({"a"})) is ExecutionPhase.FAILED
    assert w.jobs["notify"].phase is JobPhase.SUCCEEDED
    assert w.jobs["cleanup"].phase is JobPhase.SUCCEEDED
    assert w.jobs["celebrate"].phase is JobPhase.SKIPPED


def test_a_finally_job_that_affects_the_outcome_fails_the_execution() -> None:
    dag = dag_of({"name": "a"}, {"name": "check", "finally": "Always", "affectsOutcome": True})
    assert run(world(dag), fail=frozenset({"check"})) is ExecutionPhase.FAILED
    dag = dag_of({"name": "a"}, {"name": "check", "finally": "Always"})
    w = world(dag)
    assert run(w, fail=frozenset({"check"})) is ExecutionPhase.SUCCEEDED
    assert "finally job check failed" in w.plan.message  # type: ignore[union-attr]


@pytest.mark.parametrize("mode", list(Shutdown))
def test_on_cancel_runs_only_when_stopped(mode: Shutdown) -> None:
    dag = dag_of(
        {"name": "a"},
        {"name": "b", "dependsOn": ["a"]},
        {"name": "on-cancel", "finally": "OnCancel"},
        {"name": "always", "finally": "Always"},
    )
    w = world(dag)
    w.step()  # a starts
    w.shutdown = mode
    assert run(w) is ExecutionPhase.CANCELLED
    ran = {j for j, _, _ in w.started}
    if mode is Shutdown.STOP:
        assert {"on-cancel", "always"} <= ran
        assert w.jobs["a"].phase is JobPhase.SUCCEEDED  # ran on to its end
    else:
        assert not {"on-cancel", "always"} & ran
        assert w.jobs["on-cancel"].phase is JobPhase.CANCELLED


def test_a_cached_job_never_creates_a_pod_and_its_dependents_read_its_outputs() -> None:
    dag = dag_of(
        {"name": "prep", "outputs": ["v"], "cache": {}},
        {"name": "train", "dependsOn": ["prep"], "args": ["{{jobs.prep.outputs.v}}"]},
    )
    w = world(dag)
    w.cache = {"prep": CacheHit({"v": "s3://old"}, "execution ns/x job prep")}
    assert run(w) is ExecutionPhase.SUCCEEDED
    assert w.jobs["prep"].phase is JobPhase.CACHED
    assert w.jobs["prep"].outputs == {"v": "s3://old"}
    assert inputs.render(dag, w.jobs, dag.jobs["train"]).args == ("s3://old",)
    assert [j for j, _, _ in w.started] == ["train"]


def test_a_cache_key_follows_what_the_job_runs() -> None:
    def key(**changes: Any) -> str:
        dag = dag_of({"name": "a", "args": ["x"], "cache": {}, **changes})
        return inputs.cache_key(dag, {"a": JobState()}, dag.jobs["a"])

    assert key() == key()
    assert key() != key(args=["y"])
    assert key() != key(config={"k": 1})
    dag = dag_of(
        {"name": "a", "outputs": ["v"]},
        {"name": "b", "dependsOn": ["a"], "cache": {"key": "v1-{{jobs.a.outputs.v}}"}},
    )
    first = inputs.cache_key(
        dag,
        {"a": JobState(phase=JobPhase.SUCCEEDED, outputs={"v": 1}), "b": JobState()},
        dag.jobs["b"],
    )
    second = inputs.cache_key(
        dag,
        {"a": JobState(phase=JobPhase.SUCCEEDED, outputs={"v": 2}), "b": JobState()},
        dag.jobs["b"],
    )
    assert first != second


# --- retry policies -----------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_on", "failure", "expected"),
    [
        ("Always", Failure("exit", 1), True),
        ("OnFailure", Failure("exit", 1), True),
        ("OnFailure", Failure("evicted", None, "Evicted"), False),
        ("OnError", Failure("evicted", None, "Evicted"), True),
        ("OnError", Failure("exit", 2), False),
        ("OnTransient", Failure("oom", 137, "OOMKilled"), True),
        ("OnTransient", Failure("exit", 1), False),
        ("OnTransient", Failure("start", None, "ImagePullBackOff: back-off"), True),
        ("OnTransient", Failure("start", None, "InvalidImageName: bad"), False),
        ("OnTransient", Failure("deleted"), True),
        ("OnFailure", Failure("timeout"), True),
        ("OnError", Failure("refused"), True),
    ],
)
def test_each_failure_kind_is_retried_by_its_classes(
    retry_on: str, failure: Failure, expected: bool
) -> None:
    assert retried(RetryPolicy(retry_on=RetryOn(retry_on)), failure, 1)[0] is expected


def test_pods_are_classified_by_their_reason() -> None:
    assert of_pod(137, "OOMKilled").kind == "oom"
    assert of_pod(None, "Evicted").kind == "evicted"
    assert of_pod(2, "Error").kind == "exit"
    assert of_pod(None, "").kind == "start"


def test_a_retry_expression_retries_137_and_143_never_2() -> None:
    policy = RetryPolicy(expression="exitCode in [137, 143]")
    assert retried(policy, Failure("exit", 143), 1)[0]
    verdict, why = retried(policy, Failure("exit", 2), 1)
    assert not verdict
    assert "is false" in why
    with pytest.raises(ValueError, match="reads only"):
        RetryPolicy(expression="jobs.a.phase == 'x'")


def test_a_failure_the_policy_does_not_retry_fails_the_job_with_why() -> None:
    dag = dag_of({"name": "a", "retries": 5, "retryPolicy": {"expression": "exitCode != 1"}})
    w = world(dag)
    assert run(w, fail=frozenset({"a"})) is ExecutionPhase.FAILED
    assert w.jobs["a"].attempt == 1
    assert "not retried: retry expression 'exitCode != 1' is false" in w.jobs["a"].message


def test_the_infrastructure_budget_is_configurable() -> None:
    dag = dag_of({"name": "a", "retryPolicy": {"infraRetries": 1}})
    w = world(dag)
    for _ in range(6):
        w.step()
        for key, pod in list(w.pods.items()):
            if pod.phase is PodPhase.PENDING and not pod.deleting:
                w.pods[key] = replace(pod, phase=PodPhase.RUNNING, node="n1", started_at=w.now)
            elif pod.alive:
                w.pods[key] = replace(pod, node_lost=True, node_gone=True)
        w.now += 1
    assert w.jobs["a"].phase is JobPhase.FAILED
    assert "infraRetries allows 1" in w.jobs["a"].message


def test_a_retry_runs_the_finally_jobs_again_only_with_something_else() -> None:
    states = {
        "a": JobState(JobPhase.FAILED, attempt=2),
        "f": JobState(JobPhase.SUCCEEDED, attempt=1),
    }
    assert set(rerun(states, ["f"])) == {"a", "f"}
    assert rerun({"a": JobState(JobPhase.SUCCEEDED, attempt=1), "f": states["f"]}, ["f"]) == {}


# --- properties ----------------------------------------------------------------


@st.composite
def pipelines(draw: st.DrawFn) -> Dag:
    n = draw(st.integers(min_value=1, max_value=8))
    jobs: list[dict[str, Any]] = []
    for i in range(n):
        deps = sorted(draw(st.sets(st.integers(0, i - 1), max_size=2))) if i else []
        job: dict[str, Any] = {
            "name": f"j{i}",
            "dependsOn": [f"j{d}" for d in deps],
            "outputs": ["v"],
        }
        if deps and draw(st.booleans()):
            job["when"] = f"jobs.j{deps[0]}.outputs.v != 'j{deps[0]}-2'"
        if draw(st.booleans()):
            job["allowSkipped"] = True
        if draw(st.integers(0, 3)) == 0:
            job["cache"] = {}
        jobs.append(job)
    for k, on in enumerate(
        draw(
            st.lists(st.sampled_from(["Always", "OnSuccess", "OnFailure", "OnCancel"]), max_size=3)
        )
    ):
        jobs.append({"name": f"f{k}", "finally": on})
    retries = draw(st.integers(min_value=0, max_value=2))
    return dag_of(*jobs, retries=retries, timeout="30s")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pipelines(), st.integers(min_value=1, max_value=3), st.data())
def test_pipelines_keep_their_invariants_under_any_interleaving(
    dag: Dag, parallelism: int, data: st.DataObject
) -> None:
    w = world(dag, parallelism=parallelism)
    w.cache = {
        name: CacheHit({"v": "cached"}, "earlier")
        for name, job in dag.jobs.items()
        if job.cache is not None and data.draw(st.booleans(), label=f"{name} cached")
    }
    hits = {name for name, hit in w.cache.items() if hit is not None}
    stop = data.draw(st.sampled_from([None, *Shutdown]), label="shutdown")
    for step in range(data.draw(st.integers(min_value=0, max_value=30), label="steps")):
        plan = w.step()
        if plan.phase.terminal:
            break
        for key in list(w.pods):
            outcome = data.draw(st.sampled_from(["run", "succeed", "fail", "wait"]))
            if outcome != "wait":
                w.advance(key, outcome)
        if stop is not None and step == 3:
            w.shutdown = stop
        w.now += data.draw(st.floats(min_value=0, max_value=40), label="time passes")
    phase = run(w)
    starts: dict[str, int] = {}
    for started, attempt, _ in w.started:
        starts[started] = max(starts.get(started, 0), attempt)
    for name, state in w.jobs.items():
        job = dag.jobs[name]
        assert state.phase.terminal
        if name in hits:
            assert name not in starts  # a cached job never creates a pod
        if state.phase is JobPhase.SUCCEEDED and job.outputs:
            # Only the attempt that succeeded gives outputs.
            assert state.outputs == {"v": f"{name}-{state.attempt}"}
        if job.finally_on is not None:
            # Once per ending: one run of attempts, never again after a success.
            if name in starts:
                assert starts[name] == state.attempt
            if state.phase is JobPhase.SKIPPED:
                assert name not in starts
    if stop is Shutdown.TERMINATE:
        assert phase in (ExecutionPhase.CANCELLED, ExecutionPhase.FAILED, ExecutionPhase.SUCCEEDED)
    assert not any(p.alive for p in w.pods.values())
