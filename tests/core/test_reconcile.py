"""The scheduling decision, driven through a simulated world of pods.

The world applies ``reconcile``'s actions the way Kubernetes would, lets
hypothesis pick every pod outcome and interleaving, and checks the core's
invariants after every step.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dagwright.core.attempts import ended
from dagwright.core.graph import Dag, build_dag
from dagwright.core.inputs import CacheHit
from dagwright.core.reconcile import (
    DeletePod,
    Emit,
    Plan,
    Snapshot,
    StartPod,
    failed_message,
    reconcile,
    rerun,
    start_admitted,
)
from dagwright.core.spec import DAGExecutionSpec, PodGCStrategy, Shutdown
from dagwright.core.state import ExecutionPhase, JobPhase, JobState, PodObservation, PodPhase, Slot


def make_dag(deps: dict[str, list[str]], **job_settings: object) -> Dag:
    return build_dag(
        DAGExecutionSpec.model_validate(
            {
                "defaults": {
                    "image": "x",
                    "backoff": {"initial": "1s", "factor": 2, "max": "4s"},
                    **job_settings,
                },
                "jobs": [{"name": n, "dependsOn": d} for n, d in deps.items()],
            }
        )
    )


@dataclass
class World:
    dag: Dag
    parallelism: int = 10
    now: float = 1000.0
    jobs: dict[str, JobState] = field(default_factory=dict)
    pods: dict[tuple[str, int], PodObservation] = field(default_factory=dict)
    suspend: bool = False
    shutdown: Shutdown | None = None
    started: list[tuple[str, int, float]] = field(default_factory=list)
    events: list[Emit] = field(default_factory=list)
    plan: Plan | None = None
    # Cached jobs' lookups: a hit, or None (a job looked up and not here misses).
    cache: dict[str, CacheHit | None] = field(default_factory=dict)

    def snapshot(self) -> Snapshot:
        return Snapshot(
            self.dag,
            self.jobs,
            self.pods,
            self.now,
            self.parallelism,
            self.suspend,
            self.shutdown,
            cache=self.cache,
        )

    def step(self) -> Plan:
        plan = reconcile(self.snapshot())
        if plan.lookups:  # the shell looks them up, then decides again
            for name in plan.lookups:
                self.cache.setdefault(name, None)
            plan = reconcile(self.snapshot())
        self.jobs = plan.jobs  # what the starts are checked against
        for action in plan.actions:
            if isinstance(action, StartPod):
                self.check_start(action)
                self._create(action)
            elif isinstance(action, DeletePod):
                pod = self.pods.get((action.job, action.attempt))
                if pod is not None and action.force:
                    del self.pods[
                        (action.job, action.attempt)
                    ]  # grace period 0: the object is gone
                elif pod is not None and pod.alive:
                    self.pods[(action.job, action.attempt)] = replace(pod, deleting=True)
            else:
                self.events.append(action)
        self.jobs = plan.jobs
        self.plan = plan
        self.check()
        return plan

    def check_start(self, action: StartPod) -> None:
        """Invariants of a start beyond ``_create``'s (subclasses add theirs)."""

    def _create(self, action: StartPod) -> None:
        key = (action.job, action.attempt)
        if key in self.pods:
            return  # AlreadyExists: adopt
        job = self.dag.jobs[action.job]
        for parent in job.depends_on:
            assert any(
                p.phase is PodPhase.SUCCEEDED for (j, _), p in self.pods.items() if j == parent
            ), f"{action.job} started before {parent} succeeded"
        for (j, attempt), pod in self.pods.items():
            assert not (j == action.job and pod.alive), (
                f"{action.job}: attempt {action.attempt} while {attempt} alive"
            )
            assert not (j == action.job and pod.phase is PodPhase.SUCCEEDED), (
                f"{action.job} ran again after success"
            )
        self.pods[key] = PodObservation(action.job, action.attempt, PodPhase.PENDING)
        self.started.append((action.job, action.attempt, self.now))

    def check(self) -> None:
        alive = [k for k, p in self.pods.items() if p.alive]
        assert len(alive) <= self.parallelism, (
            f"{len(alive)} alive > parallelism {self.parallelism}"
        )
        for name, state in self.jobs.items():
            if state.phase is JobPhase.SUCCEEDED:
                assert self.pods[(name, state.attempt)].phase is PodPhase.SUCCEEDED

    # Kubernetes-side transitions of one pod.
    def advance(self, key: tuple[str, int], outcome: str) -> None:
        pod = self.pods[key]
        if pod.deleting:
            del self.pods[key]
        elif outcome in ("lose", "gone"):
            if pod.phase is PodPhase.RUNNING:
                self.pods[key] = replace(
                    pod, node_lost=True, node_gone=pod.node_gone or outcome == "gone"
                )
        elif pod.phase is PodPhase.PENDING:
            if outcome == "vanish":
                del self.pods[key]
            else:
                self.pods[key] = replace(
                    pod, phase=PodPhase.RUNNING, started_at=self.now, node="n1"
                )
        elif pod.phase is PodPhase.RUNNING:
            if outcome == "vanish":
                del self.pods[key]
            elif outcome == "fail":
                self.pods[key] = replace(
                    pod, phase=PodPhase.FAILED, exit_code=1, finished_at=self.now
                )
            elif outcome == "succeed":
                self.pods[key] = replace(
                    pod, phase=PodPhase.SUCCEEDED, exit_code=0, finished_at=self.now
                )

    def settle(self, max_steps: int = 500) -> ExecutionPhase:
        """Fair scheduling from here on: every pod progresses and succeeds."""
        for _ in range(max_steps):
            plan = self.step()
            if plan.phase.terminal:
                return plan.phase
            for key in list(self.pods):
                pod = self.pods[key]
                if pod.node_lost and not pod.phase.terminal:
                    del self.pods[key]  # the node comes back (or is deleted) and the pod goes
                elif pod.alive:
                    self.advance(key, "succeed")
            self.now = max(self.now + 1, plan.wake_at or 0)
        raise AssertionError(f"not terminal after {max_steps} steps: {self.jobs}")


# --- examples --------------------------------------------------------------


def run_all_succeed(world: World) -> ExecutionPhase:
    return world.settle()


def test_diamond_runs_in_dependency_order() -> None:
    world = World(make_dag({"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}))
    assert run_all_succeed(world) is ExecutionPhase.SUCCEEDED
    first = {job: t for job, _, t in reversed(world.started)}
    assert first["a"] < first["b"]
    assert first["a"] < first["c"]
    assert max(first["b"], first["c"]) < first["d"]
    assert first["b"] == first["c"]  # independent jobs start together


def test_parallelism_caps_a_wide_layer() -> None:
    world = World(make_dag({f"j{i}": [] for i in range(7)}), parallelism=3)
    plan = world.step()
    assert sum(isinstance(a, StartPod) for a in plan.actions) == 3
    assert world.settle() is ExecutionPhase.SUCCEEDED


def test_retries_back_off_exponentially_then_fail_and_skip_downstream() -> None:
    world = World(make_dag({"a": [], "b": ["a"]}, retries=2))
    world.step()
    gaps = []
    for _ in range(3):
        key = ("a", world.jobs["a"].attempt)
        world.advance(key, "run")
        world.step()
        world.advance(key, "fail")
        failed_at = world.now
        plan = world.step()
        if plan.phase.terminal:
            break
        assert plan.wake_at is not None
        world.now = plan.wake_at
        world.step()
        gaps.append(world.now - failed_at)
    assert gaps == [1.0, 2.0]  # initial 1s, factor 2
    assert world.jobs["a"].phase is JobPhase.FAILED
    assert world.jobs["a"].attempt == 3
    assert world.jobs["b"].phase is JobPhase.SKIPPED
    assert world.plan is not None
    assert world.plan.phase is ExecutionPhase.FAILED
    assert world.plan.message == "job a failed: exit code 1; no retries left (2 allowed)"
    assert not any(job == "b" for job, _, _ in world.started)


def test_timeout_deletes_the_pod_and_retries_only_after_it_is_gone() -> None:
    world = World(make_dag({"a": []}, timeout="10s", retries=1))
    world.step()
    world.advance(("a", 1), "run")
    world.step()
    world.now += 10
    plan = world.step()
    assert DeletePod("a", 1, "timeout") in plan.actions
    assert world.jobs["a"].phase is JobPhase.BACKOFF
    world.now += 60  # long past the backoff
    plan = world.step()
    assert not any(isinstance(a, StartPod) for a in plan.actions), (
        "retry while the old pod is alive"
    )
    world.advance(("a", 1), "gone")  # the deleting pod disappears
    plan = world.step()
    assert StartPod("a", 2) in plan.actions


def test_pending_pod_deleted_by_hand_is_recreated_without_a_retry() -> None:
    world = World(make_dag({"a": []}))
    world.step()
    del world.pods[("a", 1)]
    world.now += 10
    plan = world.step()
    assert StartPod("a", 1) in plan.actions
    assert world.jobs["a"].failures == 0


def test_running_pod_deleted_by_hand_uses_a_retry() -> None:
    world = World(make_dag({"a": []}))
    world.step()
    world.advance(("a", 1), "run")
    world.step()
    world.advance(("a", 1), "vanish")
    world.step()
    assert world.jobs["a"].phase is JobPhase.BACKOFF
    assert world.jobs["a"].failures == 1
    assert world.jobs["a"].message == "pod deleted while running"


def test_suspend_starts_nothing_new_and_resume_continues() -> None:
    world = World(make_dag({"a": [], "b": ["a"]}))
    world.step()
    world.suspend = True
    world.advance(("a", 1), "run")
    world.step()
    world.advance(("a", 1), "succeed")
    plan = world.step()
    assert plan.phase is ExecutionPhase.SUSPENDED
    assert world.jobs["a"].phase is JobPhase.SUCCEEDED  # the running job finished
    assert not any(isinstance(a, StartPod) for a in plan.actions)
    world.suspend = False
    plan = world.step()
    assert StartPod("b", 1) in plan.actions
    assert world.settle() is ExecutionPhase.SUCCEEDED
    assert [job for job, _, _ in world.started] == ["a", "b"]


@pytest.mark.parametrize("mode", [Shutdown.STOP, Shutdown.TERMINATE])
def test_shutdown(mode: Shutdown) -> None:
    world = World(make_dag({"a": [], "b": ["a"]}))
    world.step()
    world.advance(("a", 1), "run")
    world.step()
    world.shutdown = mode
    plan = world.step()
    if mode is Shutdown.TERMINATE:
        assert DeletePod("a", 1, "terminated") in plan.actions
        assert world.jobs["a"].phase is JobPhase.CANCELLED
    else:
        assert world.jobs["a"].phase is JobPhase.RUNNING
    assert world.jobs["b"].phase is JobPhase.CANCELLED
    assert world.settle() is ExecutionPhase.CANCELLED
    expected = JobPhase.SUCCEEDED if mode is Shutdown.STOP else JobPhase.CANCELLED
    assert world.jobs["a"].phase is expected
    assert [job for job, _, _ in world.started] == ["a"]


def test_reconcile_is_idempotent() -> None:
    world = World(make_dag({"a": [], "b": ["a"]}))
    world.step()
    snap = Snapshot(world.dag, world.jobs, world.pods, world.now, 10)
    again = reconcile(snap)
    assert again.changed == set()
    assert [a for a in again.actions if not isinstance(a, Emit)] == []


# --- properties ------------------------------------------------------------


@st.composite
def dags(draw: st.DrawFn) -> Dag:
    n = draw(st.integers(min_value=1, max_value=12))
    deps = {
        f"j{i}": [f"j{d}" for d in sorted(draw(st.sets(st.integers(0, i - 1), max_size=3)))]
        if i
        else []
        for i in range(n)
    }
    retries = draw(st.integers(min_value=0, max_value=2))
    return make_dag(deps, retries=retries, timeout="30s")


OUTCOMES = st.sampled_from(["run", "succeed", "fail", "vanish", "wait", "lose", "gone"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dags(), st.integers(min_value=1, max_value=4), st.data())
def test_any_interleaving_keeps_the_invariants_and_terminates(
    dag: Dag, parallelism: int, data: st.DataObject
) -> None:
    world = World(dag, parallelism=parallelism)
    for _ in range(data.draw(st.integers(min_value=0, max_value=40), label="adversarial steps")):
        plan = world.step()
        if plan.phase.terminal:
            break
        for key in list(world.pods):
            outcome = data.draw(OUTCOMES)
            if outcome != "wait":
                world.advance(key, outcome)
        if data.draw(st.booleans(), label="toggle suspend"):
            world.suspend = not world.suspend
        world.now += data.draw(st.floats(min_value=0, max_value=40), label="time passes")
    world.suspend = False
    phase = world.settle()
    assert phase in (ExecutionPhase.SUCCEEDED, ExecutionPhase.FAILED)
    for name, state in world.jobs.items():
        assert state.phase.terminal
        assert state.failures <= dag.jobs[name].retries + 1
        if phase is ExecutionPhase.SUCCEEDED:
            assert state.phase is JobPhase.SUCCEEDED
    assert not any(p.alive for p in world.pods.values())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dags(), st.integers(min_value=1, max_value=6), st.data())
def test_starting_newly_admitted_jobs_equals_a_full_reconcile(
    dag: Dag, parallelism: int, data: st.DataObject
) -> None:
    """The shell asks the pools' queues between ``reconcile`` and
    ``start_admitted``: the two together decide what one full pass would."""
    world = World(dag, parallelism=parallelism)
    for _ in range(data.draw(st.integers(min_value=0, max_value=8), label="steps")):
        if world.step().phase.terminal:
            break
        for key in list(world.pods):
            outcome = data.draw(OUTCOMES)
            if outcome != "wait":
                world.advance(key, outcome)
        world.now += data.draw(st.floats(min_value=0, max_value=40), label="time passes")
    names = sorted(dag.jobs)
    before = data.draw(st.sets(st.sampled_from(names)), label="admitted before")
    more = data.draw(st.sets(st.sampled_from(names)), label="admitted now")
    slots = {name: Slot("pool", f"node-{name}") for name in before | more}
    snap = Snapshot(
        dag,
        world.jobs,
        world.pods,
        world.now,
        parallelism,
        admitted={n: slots[n] for n in before},
        suspend=data.draw(st.booleans(), label="suspend"),
    )
    full = replace(snap, admitted=slots)
    expected = reconcile(full)
    got = start_admitted(full, reconcile(snap))
    # The same actions; starts granted before this pass come first.
    assert Counter(got.actions) == Counter(expected.actions)
    assert replace(got, actions=[]) == replace(expected, actions=[])


def test_without_a_slot_ready_jobs_are_wanted_in_priority_order_not_started() -> None:
    dag = build_dag(
        DAGExecutionSpec.model_validate(
            {
                "defaults": {"image": "x"},
                "jobs": [
                    {"name": "low", "priority": 2},
                    {"name": "high", "priority": 9},
                    {"name": "mid"},
                ],
            }
        )
    )
    snap = Snapshot(dag, {}, {}, 0.0, parallelism=2, admitted={})
    plan = reconcile(snap)
    assert plan.wants == ["high", "mid"]  # parallelism 2: only two could start
    assert not any(isinstance(a, StartPod) for a in plan.actions)
    plan = reconcile(replace(snap, jobs=plan.jobs, admitted={"mid": Slot("pool-a")}))
    assert StartPod("mid", 1, "pool-a") in plan.actions
    assert plan.jobs["mid"].pool == "pool-a"
    assert plan.wants == ["high"]


@pytest.mark.parametrize(
    ("strategy", "deleted_while_running", "deleted_at_end"),
    [
        (PodGCStrategy.NEVER, set(), set()),
        (PodGCStrategy.ON_JOB_SUCCESS, {("a", 1)}, {("a", 1), ("b", 1)}),
        (PodGCStrategy.ON_EXECUTION_SUCCESS, set(), {("a", 1), ("b", 1)}),
        (PodGCStrategy.ON_EXECUTION_COMPLETION, set(), {("a", 1), ("b", 1)}),
    ],
)
def test_pod_gc(
    strategy: PodGCStrategy,
    deleted_while_running: set[tuple[str, int]],
    deleted_at_end: set[tuple[str, int]],
) -> None:
    world = World(make_dag({"a": [], "b": ["a"]}))
    deleted: set[tuple[str, int]] = set()

    def step() -> Plan:
        plan = reconcile(
            Snapshot(world.dag, world.jobs, world.pods, world.now, 10, pod_gc=strategy)
        )
        deleted.update((a.job, a.attempt) for a in plan.actions if isinstance(a, DeletePod))
        return plan

    world.step()
    world.advance(("a", 1), "run")
    world.step()
    world.advance(("a", 1), "succeed")
    world.step()
    step()  # b starting, a succeeded
    assert deleted == deleted_while_running
    world.advance(("b", 1), "run")
    world.step()
    world.advance(("b", 1), "succeed")
    plan = step()
    assert plan.phase is ExecutionPhase.SUCCEEDED
    assert deleted == deleted_at_end


# --- node failover ------------------------------------------------------------


def lose_node(world: World, key: tuple[str, int], gone: bool = False) -> None:
    world.pods[key] = replace(world.pods[key], node_lost=True, node_gone=gone)


def test_lost_node_fails_over_without_using_a_retry_and_waits_for_the_old_pod() -> None:
    world = World(make_dag({"a": []}, retries=0))
    world.step()
    world.advance(("a", 1), "run")
    world.step()
    lose_node(world, ("a", 1))
    plan = world.step()
    # Left alone: a delete stops nothing on a dead machine, and kills a healthy
    # run on one that is only cut off from the control plane.
    assert not any(isinstance(a, DeletePod) for a in plan.actions)
    state = world.jobs["a"]
    assert (state.phase, state.failures, state.infra_failures, state.avoid) == (
        JobPhase.READY,
        0,
        1,
        ("n1",),
    )
    assert not any(isinstance(a, StartPod) for a in plan.actions)  # the old pod may still run
    del world.pods[("a", 1)]  # the node came back and its kubelet removed the pod
    plan = world.step()
    assert StartPod("a", 2, None, ("n1",)) in plan.actions
    world.advance(("a", 2), "run")
    world.step()
    world.advance(("a", 2), "succeed")
    assert world.step().phase is ExecutionPhase.SUCCEEDED  # retries=0, yet it succeeded


def test_an_attempt_on_a_node_that_comes_back_finishes_and_counts() -> None:
    """An API server or etcd outage makes every node NotReady for a while:
    jobs whose attempts keep running are not run a second time."""
    world = World(make_dag({"a": [], "b": ["a"]}, retries=0))
    world.step()
    world.advance(("a", 1), "run")
    world.step()
    lose_node(world, ("a", 1))
    world.step()
    assert world.jobs["a"].phase is JobPhase.READY
    world.pods[("a", 1)] = replace(world.pods[("a", 1)], node_lost=False)  # the node is back
    plan = world.step()
    assert not any(isinstance(a, (DeletePod, StartPod)) for a in plan.actions)
    world.advance(("a", 1), "succeed")
    plan = world.step()
    assert (world.jobs["a"].phase, world.jobs["a"].attempt) == (JobPhase.SUCCEEDED, 1)
    assert StartPod("b", 1) in plan.actions
    assert world.settle() is ExecutionPhase.SUCCEEDED
    assert [(job, attempt) for job, attempt, _ in world.started] == [("a", 1), ("b", 1)]


def test_an_attempt_left_on_a_lost_node_is_deleted_once_the_node_is_gone() -> None:
    world = World(make_dag({"a": []}))
    world.step()
    world.advance(("a", 1), "run")
    world.step()
    lose_node(world, ("a", 1))
    world.step()
    lose_node(world, ("a", 1), gone=True)
    plan = world.step()
    assert DeletePod("a", 1, "node n1 lost; resuming on another node", force=True) in (plan.actions)
    assert StartPod("a", 2, None, ("n1",)) in plan.actions


def test_forced_failover_pool_force_deletes_at_once() -> None:
    world = World(make_dag({"a": []}))
    plan = reconcile(Snapshot(world.dag, {}, {}, world.now, 10, admitted={"a": Slot("gpu")}))
    world.jobs = plan.jobs
    world.pods[("a", 1)] = PodObservation("a", 1, PodPhase.RUNNING, node="n1", node_lost=True)
    plan = reconcile(
        Snapshot(
            world.dag,
            world.jobs,
            world.pods,
            world.now,
            10,
            admitted={},
            forced_failover=frozenset({"gpu"}),
        )
    )
    assert DeletePod("a", 1, "node n1 lost", force=True) in plan.actions


def test_pod_on_a_deleted_node_is_replaced_in_the_same_pass() -> None:
    world = World(make_dag({"a": []}))
    world.step()
    world.advance(("a", 1), "run")
    world.step()
    lose_node(world, ("a", 1), gone=True)
    plan = world.step()
    assert DeletePod("a", 1, "node n1 lost", force=True) in plan.actions
    assert StartPod("a", 2, None, ("n1",)) in plan.actions


def test_a_job_that_keeps_losing_nodes_fails_eventually() -> None:
    world = World(make_dag({"a": []}))
    world.step()
    for attempt in range(1, 12):
        world.advance(("a", attempt), "run")
        world.step()
        lose_node(world, ("a", attempt), gone=True)
        plan = world.step()
        if plan.phase.terminal:
            break
    assert world.jobs["a"].phase is JobPhase.FAILED
    assert world.jobs["a"].infra_failures == 11
    assert "lost 11 attempts to node failures" in world.jobs["a"].message


def test_a_running_attempt_that_stops_heartbeating_is_lost_and_retried_elsewhere() -> None:
    world = World(make_dag({"a": []}, retries=0))
    world.step()
    world.advance(("a", 1), "run")
    world.pods[("a", 1)] = replace(world.pods[("a", 1)], heartbeat_at=world.now)
    plan = world.step()
    assert plan.wake_at == world.now + 90.0  # checks again when the heartbeat would be overdue
    world.now += 91
    plan = world.step()
    assert DeletePod("a", 1, "no heartbeat for 91s", force=False) in plan.actions
    state = world.jobs["a"]
    assert (state.phase, state.failures, state.infra_failures, state.avoid) == (
        JobPhase.READY,
        0,
        1,
        ("n1",),
    )


def test_a_heartbeat_is_recorded_once_and_a_new_attempt_starts_unwatched() -> None:
    world = World(make_dag({"a": []}, retries=1))
    world.step()
    world.advance(("a", 1), "run")
    world.pods[("a", 1)] = replace(world.pods[("a", 1)], heartbeat_at=world.now)
    plan = world.step()
    assert world.jobs["a"].heartbeats
    assert "a" in plan.changed
    assert "a" not in world.step().changed  # recorded once, not per beat
    world.advance(("a", 1), "fail")
    world.step()
    world.now = world.jobs["a"].not_before
    world.step()
    assert world.jobs["a"].attempt == 2
    assert not world.jobs["a"].heartbeats


def test_a_retry_reruns_failed_skipped_and_cancelled_jobs_with_attempts_numbered_on() -> None:
    jobs = {
        "ok": JobState(phase=JobPhase.SUCCEEDED, attempt=1),
        "bad": JobState(phase=JobPhase.FAILED, attempt=4, failures=4, avoid=("n1",)),
        "skipped": JobState(phase=JobPhase.SKIPPED),
        "cancelled": JobState(phase=JobPhase.CANCELLED, attempt=1),
    }
    reset = rerun(jobs)
    assert set(reset) == {"bad", "skipped", "cancelled"}
    assert reset["bad"] == JobState(attempt=4)  # fresh budget, no nodes avoided, attempt 5 next
    dag = make_dag({"ok": [], "bad": [], "skipped": ["bad"], "cancelled": []})
    plan = reconcile(Snapshot(dag, {**jobs, **reset}, {}, 100.0, 10))
    starts = {a.job: a.attempt for a in plan.actions if isinstance(a, StartPod)}
    assert starts == {"bad": 5, "cancelled": 2}
    assert plan.jobs["ok"].phase is JobPhase.SUCCEEDED
    assert plan.jobs["skipped"].phase is JobPhase.WAITING
    assert failed_message(["a"], "exit 1") == "job a failed: exit 1"
    many = failed_message([f"j{i}" for i in range(9)], "exit 1")
    assert many == "job j0 failed: exit 1 (and 8 more: j1, j2, j3, j4, j5, ...)"


def test_an_ended_attempt_is_recorded_with_its_outcome() -> None:
    running = JobState(phase=JobPhase.RUNNING, attempt=2, started_at=10.0, pool="p", node="n")
    after = {
        "ok": JobState(phase=JobPhase.SUCCEEDED, attempt=2, finished_at=20.0, exit_code=0),
        "bad": JobState(phase=JobPhase.BACKOFF, attempt=2, failures=1, exit_code=1, message="x"),
        "slow": JobState(phase=JobPhase.FAILED, attempt=2, failures=1, message="timed out"),
        "lost": JobState(phase=JobPhase.READY, attempt=2, infra_failures=1),
        "still": running,
    }
    pods = {("ok", 2): PodObservation("ok", 2, PodPhase.SUCCEEDED, name="pod-ok", node="n2")}
    records = dict(ended(dict.fromkeys(after, running), after, list(after), pods, 30.0))
    assert {job: r["outcome"] for job, r in records.items()} == {
        "ok": "succeeded",
        "bad": "user_failure",
        "slow": "timeout",
        "lost": "infrastructure_failure",
    }
    assert records["ok"] == {
        "attempt": 2,
        "outcome": "succeeded",
        "pod": "pod-ok",
        "node": "n2",
        "pool": "p",
        "startedAt": 10.0,
        "finishedAt": 20.0,
        "exitCode": 0,
        "message": "",
    }
    assert records["bad"]["finishedAt"] == 30.0  # when the pass saw it end
