"""Bring a task's local store up to the end of its changelogs before the task processes anything."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import cast

from processors.runtime.ports import KafkaClients, TopicPartition
from processors.runtime.state import Derive, TaskState

#: How the records of a changelog that the processor writes itself (an output topic: `TaskState.output_logged`)
#: become the store's values: called by the restore with the store's name and a batch of its records in offset
#: order, (key, value or None for a tombstone); returns them as the store keeps them (None deletes), in the same
#: order. It raises ChangelogUnreadable for a record it cannot take, and may raise one of the engine's
#: `retriable` errors (a dependency it needs is down: the restore is tried again, never completed without it).
Translate = Callable[[str, Sequence[tuple[bytes, bytes | None]]], Awaitable[Sequence[tuple[bytes, bytes | None]]]]


class ChangelogUnreadable(RuntimeError):
    """A changelog record the restore cannot turn into a store value: the store would be wrong without it, so
    the task does not start (the engine stops, naming the record)."""


@dataclass(frozen=True)
class RestoreStats:
    partition: int
    records: int
    seconds: float
    from_scratch: bool


async def restore(
    state: TaskState,
    clients: KafkaClients,
    max_checkpoint_age_s: float,
    derive: Derive | None = None,
    translate: Translate | None = None,
) -> RestoreStats:
    """Replay committed changelog records after the local checkpoint (or all of them, if unusable); `derive`
    makes the writes to the local stores (no changelog) that each replayed record implies, as it is replayed;
    `translate` turns the records of the changelogs the processor writes itself into their stores' values.
    The local stores are as of the checkpoint (committed with it), or empty after a wipe: with the derived
    writes, they cover every record the logged stores hold.

    Must run after the task's transactional producer has been initialised: that completes any
    transaction a previous owner left open, so the changelogs' last stable offset is final.

    A failure part way (a `translate` that raises) leaves the checkpoint where it was: the records applied
    since are applied again by the next restore (the latest value of a key wins either way).
    """
    started = time.monotonic()
    partitions = {store: TopicPartition(topic, state.partition) for store, topic in state.changelogs.items()}
    if not partitions:  # a stateless application
        return RestoreStats(state.partition, 0, 0.0, False)
    translated = set(state.output_logged)
    if translated and translate is None:
        raise ValueError(f"the stores {sorted(translated)} are restored from outputs: a translate hook is needed")
    async with clients.restore_consumer(state.partition, list(partitions.values())) as consumer:
        beginning_tp = await consumer.beginning_offsets(list(partitions.values()))
        end_tp = await consumer.end_offsets(list(partitions.values()))
        beginning = {store: beginning_tp[tp] for store, tp in partitions.items()}
        end = {store: end_tp[tp] for store, tp in partitions.items()}
        start = state.usable_checkpoint(beginning, end, max_checkpoint_age_s)
        from_scratch = start is None
        if start is None:
            state.wipe()
            start = beginning
        store_of = {tp: store for store, tp in partitions.items()}
        remaining = set()
        for store, tp in partitions.items():
            consumer.seek(tp, start[store])
            if start[store] < end[store]:
                remaining.add(tp)
        count = 0
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=200, max_records=20_000)
            for tp, records in batch.items():
                store = store_of[tp]
                pairs: Sequence[tuple[bytes, bytes | None]] = [(cast(bytes, r.key), r.value) for r in records]
                if store in translated:
                    assert translate is not None
                    try:
                        pairs = await translate(store, pairs)
                    except ChangelogUnreadable as exc:
                        raise ChangelogUnreadable(
                            f"store {store!r}: a record of {tp.topic} partition {tp.partition} between offsets "
                            f"{records[0].offset} and {records[-1].offset}: {exc}"
                        ) from exc
                count += state.apply_restored(store, pairs, derive)
            for tp in list(remaining):
                if await consumer.position(tp) >= end[store_of[tp]]:
                    remaining.discard(tp)
        state.set_positions(end)
        return RestoreStats(state.partition, count, time.monotonic() - started, from_scratch)
