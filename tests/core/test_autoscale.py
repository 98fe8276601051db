"""Pool autoscaling decisions (pure core)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dagwright.core.autoscale import PoolObservation, ScaleMemory, decide_scale
from dagwright.core.spec import Autoscaling

SPEC = Autoscaling(min_nodes=1, max_nodes=4, scale_up_delay="0s", scale_down_delay="60s")


def seen(used: dict[str, int], queued: int = 0) -> PoolObservation:
    return PoolObservation(nodes=tuple(sorted(used)), used=used, queued=queued, slots_per_node=2)


def test_queued_jobs_scale_up_to_what_they_need_capped_at_max() -> None:
    decision = decide_scale(SPEC, seen({"n1": 2}, queued=3), None, ScaleMemory(), now=0)
    assert decision.desired == 3  # (2 used + 3 queued) / 2 slots per node
    decision = decide_scale(SPEC, seen({"n1": 2}, queued=50), None, ScaleMemory(), now=0)
    assert decision.desired == 4


def test_scale_up_waits_for_the_delay() -> None:
    spec = SPEC.model_copy(update={"scale_up_delay": "10s"})
    first = decide_scale(spec, seen({"n1": 2}, queued=3), None, ScaleMemory(), now=100)
    assert first.desired == 1
    later = decide_scale(spec, seen({"n1": 2}, queued=3), first.desired, first.memory, now=111)
    assert later.desired == 3


def test_idle_nodes_are_drained_after_the_delay_but_never_busy_ones_or_below_min() -> None:
    observation = seen({"n1": 1, "n2": 0, "n3": 0})
    spec = SPEC.model_copy(update={"scale_down_step": 2})
    first = decide_scale(spec, observation, 3, ScaleMemory(), now=0)
    assert first.desired == 3  # idle, but not for long enough
    later = decide_scale(spec, observation, 3, first.memory, now=61)
    assert later.desired == 1
    assert later.drain == ("n2", "n3")  # n1 runs a job
    all_idle = seen({"n1": 0})
    decision = decide_scale(SPEC, all_idle, 1, ScaleMemory(idle_since={"n1": 0}), now=1000)
    assert decision.desired == 1  # min_nodes
    assert decision.drain == ()


@given(
    st.dictionaries(
        st.sampled_from(["a", "b", "c", "d", "e"]), st.integers(0, 2), min_size=0, max_size=5
    ),
    st.integers(0, 20),
    st.integers(0, 6),
    st.floats(0, 500),
)
def test_desired_always_within_bounds_and_covers_busy_nodes(
    used: dict[str, int], queued: int, current: int, now: float
) -> None:
    decision = decide_scale(
        SPEC, seen(used, queued), current, ScaleMemory(idle_since=dict.fromkeys(used, 0.0)), now
    )
    assert SPEC.min_nodes <= decision.desired <= SPEC.max_nodes
    busy = sum(1 for n in used.values() if n > 0)
    assert decision.desired >= min(busy, SPEC.max_nodes)
    assert all(used[n] == 0 for n in decision.drain)


def test_scale_down_takes_only_removable_nodes_a_step_at_a_time() -> None:
    used = {"n1": 0, "n2": 0, "n3": 0, "other": 0}
    observation = PoolObservation(
        nodes=tuple(sorted(used)),
        used=used,
        queued=0,
        slots_per_node=2,
        removable=frozenset({"n1", "n2", "n3"}),  # "other": not made for the pool
    )
    spec = SPEC.model_copy(update={"min_nodes": 0})
    first = decide_scale(spec, observation, 4, ScaleMemory(), now=0)
    later = decide_scale(spec, observation, 4, first.memory, now=61)
    assert later.drain == ("n1",)  # one per pass (scaleDownStep 1)
    assert later.desired == 3
    gone = PoolObservation(
        nodes=("other",), used={"other": 0}, queued=0, slots_per_node=2, removable=frozenset()
    )
    assert decide_scale(spec, gone, 1, later.memory, now=200).drain == ()
