"""PartitionGroup: the event-time order of a task's records and its low watermark (pure bookkeeping; the engine
against the real broker is tested in tests/processors/test_pipeline_kafka.py)."""

from __future__ import annotations

from aiokafka import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.runtime.ordering import BEGINNING_OF_TIME, END_OF_TIME, PartitionGroup

A = TopicPartition("account", 0)
J = TopicPartition("jobs", 0)
RANK = {"account": 0, "jobs": 1}


def group(max_idle_ms: int = 1_000) -> PartitionGroup[str]:
    return PartitionGroup([A, J], RANK, max_idle_ms)


def drain(g: PartitionGroup[str], at_end: dict[TopicPartition, bool], now: float = 0.0) -> list[str]:
    out = []
    while (item := g.pop(at_end, now)) is not None:
        out.append(item[1])
    return out


def test_smallest_time_first_ties_by_topic_order_each_partition_in_offset_order() -> None:
    g = group()
    g.add(A, [(10, "a10"), (40, "a40")])
    g.add(J, [(10, "j10"), (30, "j30"), (20, "j20")])  # time going back within a partition: not reordered
    assert drain(g, {A: True, J: True}) == ["a10", "j10", "j30", "j20", "a40"]


def test_an_empty_partition_with_more_on_the_broker_holds_the_others_until_the_idle_bound() -> None:
    g = group(max_idle_ms=1_000)
    g.add(A, [(10, "a10")])
    assert g.pop({A: True, J: False}, now_s=100.0) is None  # jobs may hold an earlier record
    assert g.pop({A: True, J: False}, now_s=100.9) is None
    assert g.pop({A: True, J: False}, now_s=101.0) == (10, "a10")  # waited long enough: process out of order
    g.add(A, [(20, "a20")])
    assert g.pop({A: True, J: True}, now_s=101.0) == (20, "a20")  # read to its end: nothing to wait for


def test_the_watermark_is_the_lowest_time_some_partition_has_not_been_read_past() -> None:
    g = group(max_idle_ms=0)
    assert g.watermark({}) == BEGINNING_OF_TIME  # nothing read yet, nothing known
    assert g.watermark({A: True, J: True}) == END_OF_TIME  # everything read: the clock may fire anything
    g.add(A, [(10, "a10"), (500, "a500")])
    g.add(J, [(20, "j20")])
    assert g.watermark({A: False, J: False}) == 10  # the next records of each partition
    assert drain(g, {A: False, J: False}) == ["a10", "j20", "a500"]  # no idling (0 ms)
    # jobs was taken to 20 and has more on the broker: nothing due at 20 or later may fire, whatever was
    # processed from the account topic since.
    assert g.watermark({A: False, J: False}) == 20
    assert g.watermark({A: False, J: True}) == 500


P = TopicPartition("payments", 0)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([A, J, P]),  # a fetch of this partition, then takes until the group waits
            st.lists(st.integers(0, 50), max_size=4),
            st.fixed_dictionaries({A: st.booleans(), J: st.booleans(), P: st.booleans()}),
            st.floats(0, 3),
            st.integers(1, 5),  # records per take
        ),
        max_size=40,
    )
)
def test_take_is_pop_then_the_watermark_record_by_record(
    steps: list[tuple[TopicPartition, list[int], dict[TopicPartition, bool], float, int]],
) -> None:
    one, two = PartitionGroup([A, J, P], RANK, 1_000), PartitionGroup([A, J, P], RANK, 1_000)
    now = 0.0
    for tp, times, at_end, dt, limit in steps:
        now += dt
        fetched = [(t, f"{tp.topic}{t}") for t in times]
        one.add(tp, fetched)
        two.add(tp, fetched)
        while taken := list(one.take(at_end, now, limit)):
            assert len(taken) <= limit
            for item in taken:
                popped = two.pop(at_end, now)
                assert popped is not None
                assert item == (*popped, two.watermark(at_end))
            assert one.take_passed_over() == two.take_passed_over()
        assert two.pop(at_end, now) is None
        assert one.take_passed_over() == two.take_passed_over()
