"""The state of one task: a local RocksDB used as a cache of compacted changelog topics.

Kafka is the source of truth; the local store only saves restore time. Writes made while a transaction is
open live in an in-memory overlay of bytes (the write-back part of Kafka Streams' caching layer): only the
last write of a key reaches the changelog (flushed into the transaction by the task's commit) and, once the
transaction has committed, RocksDB, together with the changelog positions they correspond to (one atomic
RocksDB write batch). So the local store is never ahead of what Kafka committed; at worst it is behind, and
a restore from its checkpoint catches it up. That holds while Kafka keeps every commit it acknowledged: the
checkpoint also records the input offsets its commits committed (`Checkpoint.inputs`), and a store whose inputs'
committed offsets are behind them is ahead of Kafka, and rebuilt (`ahead_of_inputs`, processors/runtime/restore.py).
(A read cache of committed values was measured, 2026-12-01, and did not pay: docs/benchmarks.md.)

A store may also be local only (``local_stores``: no changelog): its writes go through the overlay and reach
RocksDB with the rest of a committed transaction, but never a changelog. Such a store must be derivable from the
logged ones: the restore rebuilds it through a ``Derive`` hook, and a lost or rolled-back local copy is no loss.

A logged store's changelog may also be an output topic that the processor writes itself (``output_logged``: as
Kafka Streams reuses a source topic): every write of the store is a record the processor emits there, with the
same key, in the task's partition. The task then writes nothing else for it (the processor's record is the
changelog record), and the restore reads that topic back through a ``Translate`` hook (processors/runtime/restore.py).

A logged store may also be ``expiring``: its entries leave it by time only, so its changelog is a log kept by
time retention (processors/runtime/entrylog.py): a transaction writes there one record holding every entry it
put, and its deletes (expiries) reach RocksDB only. The store's restore then brings back entries already expired,
which the derived timers expire again.
"""

from __future__ import annotations

import shutil
import time
from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import cast

import orjson
from rocksdict import BlockBasedOptions, Options, Rdict, WriteBatch, WriteOptions

from processors.runtime.entrylog import encode_entries

#: The local store's key of its `Checkpoint` (outside every store's namespace).
CHECKPOINT_KEY = b"\xff\xffcheckpoint"
_TOMBSTONE = None

#: Bits per key of the SST files' Bloom filters (whole keys: no prefix extractor), 0 for none. Most point reads
#: miss: a dedupe lookup of a new event id, the first read of an account or a job. A filter answers most misses
#: without an index or data block search (about 1 % false positives at 10 bits).
BLOOM_BITS_PER_KEY = 10
#: The memtable's whole-key Bloom filter, as a share of its size (0 for none): the same misses among the writes
#: not flushed yet (a running task's recent ones) skip the memtable's skip-list search.
MEMTABLE_BLOOM_RATIO = 0.02


#: The writes to local stores that changelog records of one logged store imply: called by the restore with the
#: store's name and a batch of its records in offset order, (key, value or None for a tombstone); returns
#: (local store, key, value) to put, applied with the batch.
Derive = Callable[[str, Sequence[tuple[bytes, bytes | None]]], Iterable[tuple[str, bytes, bytes]]]


def _options() -> Options:
    options = Options(raw_mode=True)
    if BLOOM_BITS_PER_KEY:
        table = BlockBasedOptions()
        table.set_bloom_filter(
            BLOOM_BITS_PER_KEY, False
        )  # a full filter per SST file (True: the retired per-block one)
        options.set_block_based_table_factory(table)
    if MEMTABLE_BLOOM_RATIO:
        options.set_memtable_whole_key_filtering(True)
        options.set_memtable_prefix_bloom_ratio(MEMTABLE_BLOOM_RATIO)
    return options


def _ns(store: str) -> bytes:
    return store.encode() + b"\x00"


@dataclass(frozen=True)
class Checkpoint:
    """Which changelog records the local store reflects: next offset to read, per store."""

    application_id: str
    partition: int
    changelogs: dict[str, str]  # store -> changelog topic
    positions: dict[str, int]  # store -> next changelog offset not yet in the local store
    written_at: float
    #: input partition ("topic:partition") -> the next offset to read, as the commits since the last restore
    #: committed them with the writes the local store holds (empty after a restore: it read committed records)
    inputs: dict[str, int] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_bytes(cls, data: bytes) -> Checkpoint:
        raw = orjson.loads(data)
        return cls(
            application_id=str(raw["application_id"]),
            partition=int(raw["partition"]),
            changelogs={str(k): str(v) for k, v in raw["changelogs"].items()},
            positions={str(k): int(v) for k, v in raw["positions"].items()},
            written_at=float(raw["written_at"]),
            inputs={str(k): int(v) for k, v in raw.get("inputs", {}).items()},
        )


class TaskState:
    """Stores of one task, namespaced in one RocksDB, with a transaction overlay: the logged ones (`changelogs`:
    store -> its changelog topic) and the local ones (`local_stores`)."""

    def __init__(
        self,
        path: Path,
        application_id: str,
        partition: int,
        changelogs: Mapping[str, str],
        local_stores: Sequence[str] = (),
        output_logged: Sequence[str] = (),
        expiring: Sequence[str] = (),
    ) -> None:
        self.path = path
        self.application_id = application_id
        self.partition = partition
        self.changelogs = dict(changelogs)
        self.local_stores = tuple(local_stores)
        self.output_logged = tuple(output_logged)
        self.expiring = tuple(expiring)
        if overlap := set(self.local_stores) & set(self.changelogs):
            raise ValueError(f"stores both logged and local: {sorted(overlap)}")
        if unlogged := set(self.output_logged) - set(self.changelogs):
            raise ValueError(f"stores whose changelog the processor writes need a changelog: {sorted(unlogged)}")
        if wrong := set(self.expiring) - (set(self.changelogs) - set(self.output_logged)):
            raise ValueError(f"an expiring store needs a changelog of its own: {sorted(wrong)}")
        # The stores whose changelog records the task writes (the others' the processor writes itself).
        self._task_logged = tuple(store for store in self.changelogs if store not in self.output_logged)
        stores = [*self.changelogs, *self.local_stores]
        self._prefixes = {store: _ns(store) for store in stores}
        self._local_prefixes = {store: self._prefixes[store] for store in self.local_stores}
        self._dirty: dict[str, dict[bytes, bytes | None]] = {store: {} for store in stores}
        # The overlay's keys in order, of the stores read by `range` (from their first range on), kept as they
        # are written: sorting them on every range() made a range per event quadratic in the transaction's size.
        self._dirty_keys: dict[str, list[bytes]] = {}
        self._db = self._open()

    def _open(self) -> Rdict:
        self.path.mkdir(parents=True, exist_ok=True)
        options = _options()
        options.create_if_missing(True)
        # The column family's options named too: rocksdict opens an existing database's column families with
        # default options otherwise, i.e. without the filter (its reads then ignore the files' filters).
        db = Rdict(str(self.path), options, column_families={"default": _options()})
        # No write-ahead log (as Kafka Streams' RocksDB stores): the changelog is the durable copy. A crash loses
        # the memtable, i.e. whole write batches after the last flush, each with its checkpoint, so the local
        # store falls back to an older checkpoint it still matches, and the restore catches it up from there.
        writes = WriteOptions()
        writes.disable_wal = True  # type: ignore[assignment,method-assign]  # a property; the stub says method
        db.set_write_options(writes)
        return db

    # -- reads and writes (the processors' view) ------------------------------------------------

    def get(self, store: str, key: bytes) -> bytes | None:
        dirty = self._dirty[store]
        if key in dirty:
            return dirty[key]
        value: bytes | None = self._db.get(self._prefixes[store] + key)
        return value

    def put(self, store: str, key: bytes, value: bytes) -> None:
        self._write(store, key, value)

    def delete(self, store: str, key: bytes) -> None:
        self._write(store, key, _TOMBSTONE)

    def _write(self, store: str, key: bytes, value: bytes | None) -> None:
        dirty = self._dirty[store]
        if key not in dirty and (keys := self._dirty_keys.get(store)) is not None:
            insort(keys, key)
        dirty[key] = value

    def range(self, store: str, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Entries with start <= key < end in key order, the open transaction's writes included.

        Lazy: a caller that wants only the first entry (the next timer) reads only that far.
        """
        prefix = self._prefixes[store]
        cut = len(prefix)
        dirty = self._dirty[store]
        keys = self._dirty_keys.get(store)
        if keys is None:
            keys = self._dirty_keys[store] = sorted(dirty)
        overlay = keys[bisect_left(keys, start) : bisect_left(keys, end)]  # a copy: callers may write meanwhile
        i = 0
        for raw_key, stored in self._db.items(from_key=prefix + start):
            key = cast(bytes, raw_key)
            if not key.startswith(prefix) or key[cut:] >= end:
                break
            key = key[cut:]
            while i < len(overlay) and overlay[i] < key:
                if (value := dirty[overlay[i]]) is not None:
                    yield overlay[i], value
                i += 1
            if i < len(overlay) and overlay[i] == key:
                i += 1
                if (value := dirty[key]) is not None:
                    yield key, value
            else:
                yield key, cast(bytes, stored)
        for key in overlay[i:]:
            if (value := dirty[key]) is not None:
                yield key, value

    # -- the transaction overlay -------------------------------------------------------------------

    def pending_writes(self) -> Iterator[tuple[str, bytes | None, bytes | None]]:
        """(store, key, value or None for a delete): the changelog records the open transaction must write (the
        logged stores' writes: a local store's reach RocksDB with them, in `committed`; an `output_logged`
        store's changelog records are the processor's own outputs: `written_keys`). An `expiring` store's are
        records without a key holding the entries put (processors/runtime/entrylog.py); its deletes are local."""
        expiring = self.expiring
        for store in self._task_logged:
            dirty = self._dirty[store]
            if store in expiring:
                puts = ((key, value) for key, value in dirty.items() if value is not None)
                for record in encode_entries(puts):
                    yield store, None, record
            else:
                for key, value in dirty.items():
                    yield store, key, value

    def written_keys(self, store: str) -> Iterable[bytes]:
        """The keys the open transaction wrote (or deleted) in `store`."""
        return self._dirty[store].keys()

    def has_pending_writes(self) -> bool:
        """Whether the open transaction has changelog writes. Writes to local stores alone (stream time moved by
        a punctuation) need no transaction: they wait in the overlay for the next one, or are lost with it; so do
        an expiring store's deletes."""
        expiring = self.expiring
        for store in self.changelogs:
            dirty = self._dirty[store]
            if dirty and (store not in expiring or any(value is not None for value in dirty.values())):
                return True
        return False

    def discard(self) -> None:
        """The transaction aborted: forget its writes."""
        for dirty in self._dirty.values():
            dirty.clear()
        for keys in self._dirty_keys.values():
            keys.clear()

    def committed(self, next_positions: Mapping[str, int], inputs: Mapping[str, int] | None = None) -> None:
        """The transaction committed: apply its writes locally, with the changelog positions they reach and the
        input offsets ("topic:partition" -> next offset) it committed."""
        batch = WriteBatch(raw_mode=True)
        for store, dirty in self._dirty.items():
            prefix = self._prefixes[store]
            for key, value in dirty.items():
                if value is None:
                    batch.delete(prefix + key)
                else:
                    batch.put(prefix + key, value)
        previous = self.checkpoint()
        positions = dict(previous.positions) if previous else {}
        positions.update(next_positions)
        committed_inputs = dict(previous.inputs) if previous else {}
        if inputs:
            committed_inputs.update(inputs)
        batch.put(CHECKPOINT_KEY, self._checkpoint(positions, committed_inputs).to_bytes())
        self._db.write(batch)
        self.discard()

    # -- checkpoint and restore --------------------------------------------------------------------

    def _checkpoint(self, positions: Mapping[str, int], inputs: Mapping[str, int]) -> Checkpoint:
        return Checkpoint(
            self.application_id, self.partition, self.changelogs, dict(positions), time.time(), dict(inputs)
        )

    def checkpoint(self) -> Checkpoint | None:
        raw = self._db.get(CHECKPOINT_KEY)
        if raw is None:
            return None
        try:
            return Checkpoint.from_bytes(raw)
        except (ValueError, KeyError, TypeError):
            return None

    def usable_checkpoint(
        self, beginning: Mapping[str, int], end: Mapping[str, int], max_age_s: float
    ) -> dict[str, int] | None:
        """Restore start positions if the local store provably matches the changelogs, else None.

        Not provable when: no checkpoint; it belongs to another application, partition or set of
        changelogs; a position lies outside the changelog (topic recreated, or compaction may have
        dropped tombstones it never saw); or it is older than `max_age_s` (delete.retention.ms).
        """
        checkpoint = self.checkpoint()
        if checkpoint is None:
            return None
        if (checkpoint.application_id, checkpoint.partition) != (self.application_id, self.partition):
            return None
        if checkpoint.changelogs != self.changelogs or set(checkpoint.positions) != set(self.changelogs):
            return None
        if time.time() - checkpoint.written_at > max_age_s:
            return None
        for store, position in checkpoint.positions.items():
            if not beginning[store] <= position <= end[store]:
                return None
        return dict(checkpoint.positions)

    def apply_restored(
        self, store: str, records: Sequence[tuple[bytes, bytes | None]], derive: Derive | None = None
    ) -> int:
        """Write changelog records straight into the local store (restore path), with what `derive` makes of
        them in the local stores (one write batch); returns the count of records."""
        prefix = _ns(store)
        batch = WriteBatch(raw_mode=True)
        for key, value in records:
            if value is None:
                batch.delete(prefix + key)
            else:
                batch.put(prefix + key, value)
        if derive is not None and records:
            prefixes = self._local_prefixes
            for derived_store, key, value in derive(store, records):
                local = prefixes.get(derived_store)
                if local is None:
                    raise ValueError(f"derived writes go to local stores only, not {derived_store!r}")
                batch.put(local + key, value)
        if records:
            self._db.write(batch)
        return len(records)

    def set_positions(self, positions: Mapping[str, int]) -> None:
        """Restored up to `positions`: committed records only, so no input offsets to check them against."""
        batch = WriteBatch(raw_mode=True)
        batch.put(CHECKPOINT_KEY, self._checkpoint(positions, {}).to_bytes())
        self._db.write(batch)

    def wipe(self) -> None:
        """Delete the local store entirely (it will be rebuilt from the changelogs)."""
        self.discard()
        self._db.close()
        Rdict.destroy(str(self.path))
        shutil.rmtree(self.path, ignore_errors=True)
        self._db = self._open()

    def close(self) -> None:
        self.discard()
        self._db.close()
