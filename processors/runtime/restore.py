"""Bring a task's local store up to the end of its changelogs before the task processes anything."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

from processors.runtime.entrylog import EntryLogError, decode_entries
from processors.runtime.ports import KafkaClients, Record, TopicPartition
from processors.runtime.state import Derive, TaskState

#: A changelog record as a `Translate` reads it: (key or None, value or None for a tombstone, headers).
ChangelogRecord = tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes]]]

#: How the records of a changelog that the processor writes itself (an output topic: `TaskState.output_logged`)
#: become the store's values: called by the restore with the store's name and a batch of its records in offset
#: order; returns (key, value or None to delete) for the store, in the same order (a record that says nothing of
#: the store is left out: several stores may share a topic, each reading its part). It raises ChangelogUnreadable
#: for a record it cannot take, and may raise one of the engine's `retriable` errors (a dependency it needs is
#: down: the restore is tried again, never completed without it).
Translate = Callable[[str, Sequence[ChangelogRecord]], Awaitable[Sequence[tuple[bytes, bytes | None]]]]

#: The entries of an expiring store's log applied to the local store in one write batch, at most (about).
_ENTRIES_PER_WRITE = 20_000


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
    *,
    from_scratch: bool = False,
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

    `from_scratch`: the caller found the local store ahead of Kafka (`ahead_of_inputs`): it is wiped and rebuilt
    whatever its checkpoint says.
    """
    started = time.monotonic()
    partitions = {store: TopicPartition(topic, state.partition) for store, topic in state.changelogs.items()}
    if not partitions:  # a stateless application
        return RestoreStats(state.partition, 0, 0.0, False)
    translated = set(state.output_logged)
    if translated and translate is None:
        raise ValueError(f"the stores {sorted(translated)} are restored from outputs: a translate hook is needed")
    # Stores may share a changelog (an output topic carrying several stores' values): each is read once.
    stores_of: dict[TopicPartition, list[str]] = {}
    for store, tp in partitions.items():
        stores_of.setdefault(tp, []).append(store)
    tps = list(stores_of)
    async with clients.restore_consumer(state.partition, tps) as consumer:
        beginning_tp = await consumer.beginning_offsets(tps)
        end_tp = await consumer.end_offsets(tps)
        beginning = {store: beginning_tp[tp] for store, tp in partitions.items()}
        end = {store: end_tp[tp] for store, tp in partitions.items()}
        start = None if from_scratch else state.usable_checkpoint(beginning, end, max_checkpoint_age_s)
        from_scratch = start is None
        if start is None:
            state.wipe()
            start = beginning
        remaining = set()
        for tp, stores in stores_of.items():
            first = min(start[store] for store in stores)
            consumer.seek(tp, first)
            if first < end_tp[tp]:
                remaining.add(tp)
        count = 0
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=200, max_records=20_000)
            for tp, records in batch.items():
                count += len(records)
                for store in stores_of[tp]:
                    mine = records
                    if records[0].offset < start[store]:  # a store sharing the topic whose checkpoint is further
                        mine = [r for r in records if r.offset >= start[store]]
                    if mine:
                        await _apply(state, store, tp, mine, derive, translate if store in translated else None)
            for tp in list(remaining):
                if await consumer.position(tp) >= end_tp[tp]:
                    remaining.discard(tp)
        state.set_positions(end)
        return RestoreStats(state.partition, count, time.monotonic() - started, from_scratch)


def ahead_of_inputs(checkpoint_inputs: Mapping[str, int], committed: Mapping[str, int | None]) -> list[str]:
    """The input partitions whose committed offset (None: none) is behind the one the checkpoint's commits
    committed: the local store holds writes of a commit Kafka no longer has.

    The local store takes a transaction's writes once its commit returned. Were Kafka to lose that commit, its
    changelog records and its input offsets would be gone together, and the store ahead of both: the inputs
    replayed from the older offsets would meet their own dedupe entries and be dropped. Kafka promises this
    never happens; a chaos run lost the events of one acknowledged transaction around a broker SIGKILL
    (docs/reliability.md, "Failures seen"). A group whose offsets were reset or expired reads the same way: a
    full restore is always correct, only slower.
    """
    return sorted(
        key
        for key, offset in checkpoint_inputs.items()
        if key in committed and (committed[key] is None or cast(int, committed[key]) < offset)
    )


async def _apply(
    state: TaskState,
    store: str,
    tp: TopicPartition,
    records: Sequence[Record],
    derive: Derive | None,
    translate: Translate | None,
) -> None:
    """Apply one batch of `store`'s changelog records."""
    if store in state.expiring:  # each record holds many entries: applied some 20,000 at a time
        entries: list[tuple[bytes, bytes | None]] = []
        for record in records:
            try:
                if record.value is None:
                    raise EntryLogError("a record without a value")
                entries += decode_entries(record.value)
            except EntryLogError as exc:
                raise ChangelogUnreadable(
                    f"store {store!r}: the record of {tp.topic} partition {tp.partition} at offset {record.offset}: "
                    f"{exc}"
                ) from exc
            if len(entries) >= _ENTRIES_PER_WRITE:
                state.apply_restored(store, entries, derive)
                entries = []
        state.apply_restored(store, entries, derive)
        return
    if translate is None:
        state.apply_restored(store, [(cast(bytes, r.key), r.value) for r in records], derive)
        return
    try:
        pairs = await translate(store, [(r.key, r.value, r.headers) for r in records])
    except ChangelogUnreadable as exc:
        raise ChangelogUnreadable(
            f"store {store!r}: a record of {tp.topic} partition {tp.partition} between offsets "
            f"{records[0].offset} and {records[-1].offset}: {exc}"
        ) from exc
    state.apply_restored(store, pairs, derive)
