"""What the core decides from facts it must not misread: pods known only by
their deletion, creates the API server refused, the record of finished jobs."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dagwright.core import record
from dagwright.core.rebuild import rebuild
from dagwright.core.reconcile import (
    DeletePod,
    Refusal,
    Snapshot,
    StartPod,
    collect_pods,
    reconcile,
)
from dagwright.core.spec import PodGCStrategy
from dagwright.core.state import ExecutionPhase, JobPhase, JobState, PodObservation, PodPhase
from tests.core.test_reconcile import World, make_dag


def starting(world: World) -> None:
    world.step()
    assert world.jobs["a"].phase is JobPhase.STARTING


def test_a_pod_deleted_before_we_saw_it_run_is_a_failed_attempt() -> None:
    # The watch showed it Pending, then its deletion, whose last state is Running.
    world = World(make_dag({"a": []}))
    starting(world)
    world.pods[("a", 1)] = PodObservation("a", 1, PodPhase.RUNNING, removed=True)
    world.step()
    assert world.jobs["a"].phase is JobPhase.BACKOFF
    assert world.jobs["a"].failures == 1
    assert world.jobs["a"].message == "pod deleted while running"


def test_a_pod_deleted_while_pending_is_created_again_without_a_retry() -> None:
    world = World(make_dag({"a": []}))
    starting(world)
    world.pods[("a", 1)] = PodObservation("a", 1, PodPhase.PENDING, removed=True)
    world.now += 10
    plan = world.step()
    assert StartPod("a", 1) in plan.actions
    assert world.jobs["a"].failures == 0


def test_a_pod_deleted_right_after_it_succeeded_keeps_its_result() -> None:
    world = World(make_dag({"a": []}))
    starting(world)
    world.pods[("a", 1)] = PodObservation("a", 1, PodPhase.SUCCEEDED, exit_code=0, removed=True)
    plan = world.step()
    assert world.jobs["a"].phase is JobPhase.SUCCEEDED
    assert plan.phase is ExecutionPhase.SUCCEEDED
    assert not any(isinstance(a, DeletePod) for a in plan.actions)


def test_a_refused_create_fails_the_attempt_and_says_why() -> None:
    dag = make_dag({"a": []}, retries=1)
    why = "the API server refused pod a: Invalid value: must be less than or equal to cpu limit"
    state = reconcile(Snapshot(dag, {}, {}, 1000.0, 10)).jobs
    plan = reconcile(Snapshot(dag, state, {}, 1000.1, 10, refused={("a", 1): Refusal(why)}))
    assert plan.jobs["a"].phase is JobPhase.BACKOFF
    assert plan.jobs["a"].failures == 1
    assert why in plan.jobs["a"].message
    # The retry is refused too: no retries left, and the execution says why.
    now = plan.jobs["a"].not_before
    plan = reconcile(Snapshot(dag, plan.jobs, {}, now, 10))
    assert StartPod("a", 2) in plan.actions
    plan = reconcile(Snapshot(dag, plan.jobs, {}, now + 0.1, 10, refused={("a", 2): Refusal(why)}))
    assert plan.jobs["a"].phase is JobPhase.FAILED
    assert plan.phase is ExecutionPhase.FAILED
    assert why in plan.message


def test_finished_pods_are_collected_only_once_their_outcome_is_recorded() -> None:
    dag = make_dag({"a": [], "b": []})
    pods = {
        ("a", 1): PodObservation("a", 1, PodPhase.SUCCEEDED, name="p-a", uid="u-a"),
        ("b", 1): PodObservation("b", 1, PodPhase.SUCCEEDED, name="p-b", uid="u-b"),
    }
    jobs = {n: JobState(phase=JobPhase.SUCCEEDED, attempt=1) for n in ("a", "b")}

    def collected(recorded: frozenset[str]) -> set[str]:
        snap = Snapshot(
            dag, jobs, pods, 1000.0, 10, pod_gc=PodGCStrategy.ON_JOB_SUCCESS, recorded=recorded
        )
        return {a.job for a in collect_pods(snap, ExecutionPhase.SUCCEEDED, jobs)}

    assert collected(frozenset()) == set()
    assert collected(frozenset({"a"})) == {"a"}
    assert collected(frozenset({"a", "b"})) == {"a", "b"}


phases = st.sampled_from(list(JobPhase))


@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True), phases, max_size=40))
def test_the_record_keeps_every_ended_job(jobs: dict[str, JobPhase]) -> None:
    names = list(jobs)
    decoded = record.decode(names, record.encode(names, jobs))
    assert decoded is not None
    assert set(decoded) == {n for n, p in jobs.items() if p.terminal}
    for name, phase in decoded.items():
        if jobs[name] in (JobPhase.SUCCEEDED, JobPhase.FAILED):
            assert phase is jobs[name]


def test_a_record_for_other_jobs_or_malformed_is_not_used() -> None:
    made = record.encode(["a", "b"], {"a": JobPhase.SUCCEEDED})
    assert record.decode(["a", "c"], made) is None
    assert record.decode(["a", "b"], {**made, "outcomes": "not base64!"}) is None
    assert record.decode(["a", "b"], {**made, "outcomes": "AAAA"}) is None  # wrong length
    assert record.decode(["a", "b"], None) is None
    assert record.decode(["a", "b"], {"jobs": 7}) is None


def test_rebuild_never_reruns_a_recorded_success_whose_pod_is_gone() -> None:
    dag = make_dag({"a": [], "b": ["a"]})
    states = rebuild(dag, [], {"a": JobPhase.SUCCEEDED})
    assert states["a"].phase is JobPhase.SUCCEEDED
    assert states["b"].phase is JobPhase.WAITING
    # A record of success beats a failed pod left from an earlier attempt.
    failed = PodObservation("a", 1, PodPhase.FAILED, exit_code=1)
    assert rebuild(dag, [failed], {"a": JobPhase.SUCCEEDED})["a"].phase is JobPhase.SUCCEEDED


def test_kubernetes_own_annotations_pass_only_where_a_pool_allows_them() -> None:
    from dagwright.core.placement import Pool, forbidden_annotations
    from dagwright.core.spec import WorkerPoolSpec

    apparmor = "container.apparmor.security.beta.kubernetes.io/job"
    keys = [apparmor, "seccomp.security.alpha.kubernetes.io/pod", "k8s.io/x", "team.example/y"]
    strict = Pool("strict", WorkerPoolSpec(capabilities=["cpu"], node_selector={"a": "b"}))
    assert forbidden_annotations(keys, strict) == sorted(keys[:3])
    assert forbidden_annotations(keys, None) == sorted(keys[:3])
    lenient = Pool(
        "lenient",
        WorkerPoolSpec(
            capabilities=["cpu"],
            node_selector={"a": "b"},
            allowed_annotations=["container.apparmor.security.beta.kubernetes.io/"],
        ),
    )
    assert forbidden_annotations(keys, lenient) == sorted(keys[1:3])
    # Look-alike domains are not Kubernetes' own.
    assert forbidden_annotations(["notkubernetes.io/x", "dagwright.io/display-name"], None) == []


def test_a_create_admission_refuses_fails_the_job_at_once() -> None:
    """The same pod would be refused again (Pod Security, a policy): no retry
    loop, the job fails with the API server's sentence."""
    dag = make_dag({"a": []}, retries=3)
    why = 'the API server refused pod a: violates PodSecurity "restricted:latest"'
    state = reconcile(Snapshot(dag, {}, {}, 1000.0, 10)).jobs
    plan = reconcile(Snapshot(dag, state, {}, 1000.1, 10, refused={("a", 1): Refusal(why, True)}))
    assert plan.jobs["a"].phase is JobPhase.FAILED
    assert plan.jobs["a"].failures == 1
    assert plan.phase is ExecutionPhase.FAILED
    assert why in plan.message
