"""Bring a task's local store up to the end of its changelogs before the task processes anything."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import cast

from processors.runtime.ports import KafkaClients, TopicPartition
from processors.runtime.state import Derive, TaskState


@dataclass(frozen=True)
class RestoreStats:
    partition: int
    records: int
    seconds: float
    from_scratch: bool


async def restore(
    state: TaskState, clients: KafkaClients, max_checkpoint_age_s: float, derive: Derive | None = None
) -> RestoreStats:
    """Replay committed changelog records after the local checkpoint (or all of them, if unusable); `derive`
    makes the writes to the local stores (no changelog) that each replayed record implies, as it is replayed.
    The local stores are as of the checkpoint (committed with it), or empty after a wipe: with the derived
    writes, they cover every record the logged stores hold.

    Must run after the task's transactional producer has been initialised: that completes any
    transaction a previous owner left open, so the changelogs' last stable offset is final.
    """
    started = time.monotonic()
    partitions = {store: TopicPartition(topic, state.partition) for store, topic in state.changelogs.items()}
    if not partitions:  # a stateless application
        return RestoreStats(state.partition, 0, 0.0, False)
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
                count += state.apply_restored(store, [(cast(bytes, r.key), r.value) for r in records], derive)
            for tp in list(remaining):
                if await consumer.position(tp) >= end[store_of[tp]]:
                    remaining.discard(tp)
        state.set_positions(end)
        return RestoreStats(state.partition, count, time.monotonic() - started, from_scratch)
