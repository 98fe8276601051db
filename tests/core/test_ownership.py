from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from dagwright.core.ownership import preferred_owner

instances = st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=8, unique=True)


@given(instances, st.text(max_size=40))
def test_every_instance_agrees_whatever_the_order(names: list[str], key: str) -> None:
    assert preferred_owner(key, names) == preferred_owner(key, reversed(names))
    assert preferred_owner(key, names) in names


@given(instances, st.lists(st.uuids().map(str), min_size=1, max_size=50, unique=True))
def test_removing_an_instance_moves_only_its_own_keys(names: list[str], keys: list[str]) -> None:
    before = {k: preferred_owner(k, names) for k in keys}
    gone = names[0]
    after = {k: preferred_owner(k, names[1:]) for k in keys}
    for k in keys:
        if before[k] != gone:
            assert after[k] == before[k]


def test_keys_spread_evenly() -> None:
    names = ["op-a", "op-b", "op-c"]
    counts = Counter(preferred_owner(f"uid-{i}", names) for i in range(3000))
    assert set(counts) == set(names)
    assert all(900 <= n <= 1100 for n in counts.values()), counts


def test_no_instances_no_owner() -> None:
    assert preferred_owner("uid", []) is None
