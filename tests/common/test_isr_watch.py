"""`under_min_isr` (the pure part of the min-ISR watch): what the metadata says, less the brokers that do not
answer. Against a real cluster whose quorum is lost: tests/common/test_topics.py (slow)."""

from __future__ import annotations

from typing import Any

from common.isr_watch import replica_brokers, under_min_isr


def topic(name: str, *partitions: tuple[int, list[int]], error_code: int = 0) -> dict[str, Any]:
    return {
        "topic": name,
        "error_code": error_code,
        "partitions": [{"partition": i, "leader": leader, "isr": isr} for i, (leader, isr) in enumerate(partitions)],
    }


# A survivor's stale image: every partition led and fully in sync, as before two of three nodes died.
STALE = [topic("a", (1, [1, 2, 3]), (2, [2, 3, 1]), (3, [3, 1, 2])), topic("gone", error_code=3)]


def test_the_metadata_alone_says_every_partition_is_in_sync() -> None:
    assert under_min_isr(STALE, {"a": 2}) == {}
    assert replica_brokers(STALE) == {1, 2, 3}


def test_replicas_on_silent_brokers_are_not_in_sync_and_a_silent_leader_is_none() -> None:
    # Brokers 2 and 3 do not answer: partition 0 keeps one live replica (< 2), 1 and 2 have no live leader.
    assert under_min_isr(STALE, {"a": 2}, frozenset({2, 3})) == {"a": [0, 1, 2]}
    # One silent broker of three, min ISR 2: its partition has no leader, the others keep two replicas.
    assert under_min_isr(STALE, {"a": 2}, frozenset({3})) == {"a": [2]}
    # min ISR 1: only the leaderless partition is under.
    assert under_min_isr(STALE, {"a": 1}, frozenset({3})) == {"a": [2]}


def test_no_leader_and_a_short_isr_are_under_whatever_answers() -> None:
    described = [topic("b", (-1, []), (1, [1]), (2, [2, 1]))]
    assert under_min_isr(described, {"b": 2}) == {"b": [0, 1]}
    assert replica_brokers(described) == {1, 2}
