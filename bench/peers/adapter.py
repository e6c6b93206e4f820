"""The account pipeline inside a foreign runtime: its state behind TaskState's interface, outputs collected.

A peer calls `PeerJob.process(record, state)` per record with a `PeerStore` over its own state, and
produces the returned records in its own transaction. Peers have no hook in their commit, so the
pipeline's write-back (cached values, snapshots) is flushed after every record.
"""

from __future__ import annotations

import argparse
import logging
from bisect import bisect_left, insort
from collections.abc import Callable, Iterator
from typing import Any

from aiokafka.structs import ConsumerRecord

from processors.logic.config import LogicSettings
from processors.logic.stores import STORES
from processors.pipeline import AccountPipeline, PipelineCounters
from processors.readiness import ReadinessSettings
from processors.runtime.task import OutRecord
from schemas.codec import Codec, build_codec
from schemas.settings import SchemaSettings

Get = Callable[[bytes], bytes | None]
Put = Callable[[bytes, bytes | None], None]  # None: delete
_ORDERED = frozenset(spec.name for spec in STORES if spec.ordered)


class PeerStore:
    """A `StateView` (TaskState's get/put/delete/range) over a peer's key-value state (keys `<store>\\0<key>`).

    Reads and writes go to the peer's store. The ordered range (of the ordered stores: timers) answers from a
    sorted in-memory index of the keys this process wrote: the peers' stores are scoped per message key or
    iterate whole tables, and no timer falls due during the bench, so it only has to be right within a run.
    """

    def __init__(self) -> None:
        self.get_raw: Get = lambda key: None
        self.put_raw: Put = lambda key, value: None
        self._ordered: dict[str, list[bytes]] = {}
        self._values: dict[tuple[str, bytes], bytes] = {}

    def bind(self, get: Get, put: Put) -> None:
        self.get_raw, self.put_raw = get, put

    def get(self, store: str, key: bytes) -> bytes | None:
        return self.get_raw(store.encode() + b"\0" + key)

    def put(self, store: str, key: bytes, value: bytes) -> None:
        self.put_raw(store.encode() + b"\0" + key, value)
        if store in _ORDERED:
            keys = self._ordered.setdefault(store, [])
            if (store, key) not in self._values:
                insort(keys, key)
            self._values[(store, key)] = value

    def delete(self, store: str, key: bytes) -> None:
        self.put_raw(store.encode() + b"\0" + key, None)
        if self._values.pop((store, key), None) is not None:
            keys = self._ordered[store]
            del keys[bisect_left(keys, key)]

    def range(self, store: str, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        keys = self._ordered.get(store, [])
        for key in keys[bisect_left(keys, start) : bisect_left(keys, end)]:
            yield key, self._values[(store, key)]


class _Context:
    def __init__(self, partition: int, state: PeerStore) -> None:
        self.partition = partition
        self.state = state
        self.outputs: list[OutRecord] = []

    def emit(self, record: OutRecord) -> None:
        self.outputs.append(record)


class PeerJob:
    """One AccountPipeline per input partition, as our runtime has one per task."""

    def __init__(self) -> None:
        self.codec: Codec = build_codec(SchemaSettings())
        # What the processor service judges (processors/service.py): the same logic, readiness included.
        self.config = LogicSettings().logic_config(ReadinessSettings().parsed())
        self.counters = PipelineCounters()
        self._tasks: dict[int, tuple[_Context, AccountPipeline, PeerStore]] = {}

    def process(self, record: ConsumerRecord[bytes, bytes], get: Get, put: Put) -> list[OutRecord]:
        task = self._tasks.get(record.partition)
        if task is None:
            store = PeerStore()
            ctx = _Context(record.partition, store)
            task = self._tasks[record.partition] = (
                ctx,
                AccountPipeline(ctx, self.codec, self.config, self.counters),
                store,
            )
        ctx, pipeline, store = task
        store.bind(get, put)
        pipeline.process(record)
        pipeline.end_of_batch()
        out, ctx.outputs = ctx.outputs, []
        return out


def consumer_record(
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int,
    timestamp_type: int,
    key: bytes,
    value: bytes,
    headers: Any,
) -> ConsumerRecord[bytes, bytes]:
    headers = [(name, bytes(v) if v is not None else b"") for name, v in (headers or ())]
    return ConsumerRecord(
        topic, partition, offset, timestamp_ms, timestamp_type, key, value, None, len(key or b""), len(value), headers
    )


def job_arguments() -> argparse.Namespace:
    """The command line of a peer's job (set by `python -m bench.peers`); logging at WARNING."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--commit-interval-s", type=float, default=0.1)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--passthrough", default=None, help="copy the records to this topic instead")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    return args
