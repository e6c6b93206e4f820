"""Event-time order within a task: the buffered records of its input partitions, merged, and its low watermark.

A task reads partition p of six topics, and a fetch returns whatever each partition had within its byte
limit: during a backlog one partition is read minutes or hours ahead of another. Processing each fetch as it
comes moved stream time to the ahead partition's time and fired timers for pendings whose finals still waited,
unread, in the behind partition. So, as Kafka Streams' PartitionGroup does (KIP-353, KIP-695), records are
buffered per partition and the task always processes the buffered record with the smallest event time (ties:
the input topics' order), each partition in offset order; and it does not move past a partition that has
nothing buffered while more of it is known to wait on the broker, for up to `max_idle_ms`.

Waiting is bounded (a partition whose leader is down must not stop the task), so order alone cannot promise
anything to timers. The low watermark does: the time below which every input partition has been read. A
partition counts with the event time of its next buffered record; with nothing buffered, as +infinity when it
is read to its last stable offset (as of a recent fetch), else with the time of the last record taken from it
(-infinity before any). Timers due before the watermark, and only those, may fire, whether stream time or
the wall clock asks.

Pure bookkeeping: the engine tells it what was fetched, which partitions are read to their end, and the time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Generic, TypeVar

from processors.runtime.ports import TopicPartition

R = TypeVar("R")

#: The watermark of a task whose every partition is read to its end: nothing known is left to wait for.
END_OF_TIME = 2**63 - 1
#: The watermark of a partition nothing was read from yet.
BEGINNING_OF_TIME = -(2**63)


class PartitionGroup(Generic[R]):
    """The input partitions of one task: buffers in offset order, each record with its event time (epoch µs)."""

    __slots__ = ("_buffers", "_last", "_max_idle_s", "_newly_passed_over", "_passed_over", "_rank", "_waiting_since")

    def __init__(self, partitions: Sequence[TopicPartition], topic_rank: Mapping[str, int], max_idle_ms: int) -> None:
        self._buffers: dict[TopicPartition, deque[tuple[int, R]]] = {tp: deque() for tp in partitions}
        self._rank = {tp: (topic_rank.get(tp.topic, len(topic_rank)), tp.topic) for tp in partitions}
        self._last: dict[TopicPartition, int] = {}  # event time of the last record taken from a partition
        self._waiting_since: dict[TopicPartition, float] = {}  # empty partitions with more on the broker
        self._max_idle_s = max_idle_ms / 1000
        # Empty partitions the others went ahead without (their idle bound elapsed), once per idle episode; the
        # ones not yet taken by `take_passed_over`.
        self._passed_over: set[TopicPartition] = set()
        self._newly_passed_over: list[TopicPartition] = []

    @property
    def partitions(self) -> list[TopicPartition]:
        return list(self._buffers)

    def add(self, tp: TopicPartition, records: Iterable[tuple[int, R]]) -> None:
        """Records fetched from `tp`, in offset order, each with its event time."""
        buffer = self._buffers[tp]
        buffer.extend(records)
        if buffer:
            self._waiting_since.pop(tp, None)
            self._passed_over.discard(tp)

    def buffered(self, tp: TopicPartition) -> int:
        return len(self._buffers[tp])

    def total_buffered(self) -> int:
        return sum(len(buffer) for buffer in self._buffers.values())

    def pop(self, at_end: Mapping[TopicPartition, bool], now_s: float) -> tuple[int, R] | None:
        """The next record in event-time order, or None when there is none or the task must wait.

        `at_end[tp]`: `tp` is read to its last stable offset, as of a recent fetch (missing: not known to be).
        `now_s`: a monotonic clock, for the idle bound. An empty partition with more on the broker (or not
        known to have none) holds the others back for up to `max_idle_ms`, then is passed over (the
        watermark still holds timers back for it)."""
        for time, record, _watermark in self.take(at_end, now_s, 1):
            return time, record
        return None

    def take(self, at_end: Mapping[TopicPartition, bool], now_s: float, limit: int) -> Iterator[tuple[int, R, int]]:
        """Up to `limit` records, each as `pop` takes it, with the watermark once it is taken (`watermark(at_end)`
        right after): (event time, record, watermark). `at_end` and `now_s` hold for the whole take.

        One pass over the partitions picks the next record; the records after it in the same partition follow
        without another pass for as long as they come before every other partition's next record: nothing else
        changed meanwhile (the other buffers, what is at its end, the time)."""
        taken = 0
        while taken < limit:
            scan = self._scan(at_end, now_s)
            if scan is None:
                return
            best, others, bound_time, bound_rank = scan
            buffer = self._buffers[best]
            rank = self._rank[best]
            best_at_end = at_end.get(best, False)
            while True:
                time, record = buffer.popleft()
                self._last[best] = time
                taken += 1
                # Its mark is now its next record's time, or none when read to its end, or the time just taken.
                own = buffer[0][0] if buffer else END_OF_TIME if best_at_end else time
                yield time, record, own if own < others else others
                if taken >= limit or not buffer:
                    break  # an emptied partition may now wait for the broker: a new pass decides
                head = buffer[0][0]
                if head > bound_time or (head == bound_time and rank > bound_rank):
                    break

    def _scan(
        self, at_end: Mapping[TopicPartition, bool], now_s: float
    ) -> tuple[TopicPartition, int, int, tuple[int, str]] | None:
        """The partition of the next record (None: none, or the task must wait); the watermark of the other
        partitions; and the key (time, rank) of the next record among the other buffered ones (after all: none)."""
        best: TopicPartition | None = None
        best_key: tuple[int, tuple[int, str]] | None = None
        bound_key: tuple[int, tuple[int, str]] = (END_OF_TIME, (2**31, ""))
        waiting = False
        expired: list[TopicPartition] | None = None
        # The lowest partition mark (as `watermark` counts it), its partition, and the next lowest.
        low, low_tp, second = END_OF_TIME, None, END_OF_TIME
        for tp, buffer in self._buffers.items():
            if buffer:
                mark = buffer[0][0]
                key = (mark, self._rank[tp])
                if best_key is None or key < best_key:
                    if best_key is not None:
                        bound_key = best_key
                    best, best_key = tp, key
                elif key < bound_key:
                    bound_key = key
            elif at_end.get(tp, False):
                self._waiting_since.pop(tp, None)
                self._passed_over.discard(tp)
                continue
            else:
                since = self._waiting_since.setdefault(tp, now_s)
                if now_s - since < self._max_idle_s:
                    waiting = True
                elif tp not in self._passed_over:
                    expired = [tp] if expired is None else [*expired, tp]
                mark = self._last.get(tp, BEGINNING_OF_TIME)
            if mark < low:
                low, low_tp, second = mark, tp, low
            elif mark < second:
                second = mark
        if best is None:
            # Nothing to process: idling starts when some partition has records to hold back.
            self._waiting_since.clear()
            self._passed_over.clear()
            return None
        if waiting:
            return None
        if expired is not None:  # the others go ahead without these: out of event-time order, said once
            self._passed_over.update(expired)
            self._newly_passed_over.extend(expired)
        return best, second if low_tp is best else low, bound_key[0], bound_key[1]

    def take_passed_over(self) -> list[TopicPartition]:
        """The partitions passed over since the last call (each once per idle episode), for the shell to say so."""
        if not self._newly_passed_over:
            return []
        taken, self._newly_passed_over = self._newly_passed_over, []
        return taken

    def watermark(self, at_end: Mapping[TopicPartition, bool]) -> int:
        """Every record with an earlier event time has been taken from every partition (or is not fetched yet
        from a partition whose own records run later): timers due before it may fire."""
        low = END_OF_TIME
        for tp, buffer in self._buffers.items():
            if buffer:
                mark = buffer[0][0]
            elif at_end.get(tp, False):
                continue
            else:
                mark = self._last.get(tp, BEGINNING_OF_TIME)
            if mark < low:
                low = mark
        return low
