"""The account pipeline: family-topic records in, enriched account updates and snapshots out.

This is the thin shell around the pure logic (processors/logic): it decodes Avro records into
`Event`s, gives the logic its stores (the task's changelog-backed state), and encodes what the logic
emits. A record that cannot be decoded or processed becomes a dead letter; it never blocks its
partition.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Generic, NamedTuple, TypeVar

from aiokafka.structs import ConsumerRecord

from processors.logic.codec import ACCOUNT_JOBS_SERDE, ACCOUNT_STATE_SERDE, Serde, StateCodecError
from processors.logic.config import LogicConfig
from processors.logic.events import Event, InvalidEvent, event_from_payload
from processors.logic.keys import TimerKind, timer_key_bytes
from processors.logic.outputs import (
    AccountStateSnapshot,
    AccountUpdate,
    Change,
    Output,
    ReadinessUpdate,
    RejectedEvent,
)
from processors.logic.processor import NO_WATERMARK, AccountProcessor
from processors.logic.stores import (
    ACCOUNTS,
    DEDUPE,
    EXPIRING_STORE_NAMES,
    JOBS,
    JOBS_HEADER,
    LOCAL_STORE_NAMES,
    OUTPUT_LOGGED_STORE_NAMES,
    STORES,
    TIMERS,
    Stores,
)
from processors.logic.timers import TIMER_OWNERS, TimerRules
from processors.runtime.restore import ChangelogRecord, ChangelogUnreadable, Translate
from processors.runtime.state import Derive, TaskState
from processors.runtime.task import BatchFailed, OutRecord, RecordFailed, StateView, TaskContext
from processors.topics import changelog_topics
from processors.wire import (
    DeliveryIds,
    Headers,
    WireEncoder,
    account_state_of,
    dead_letter_record,
    output_headers,
    readiness_datum,
)
from schemas import catalog
from schemas.codec import Codec, DecodeError, RegistryError
from schemas.envelope import PayloadError, parse_body

log = logging.getLogger(__name__)

V = TypeVar("V")

# The logic reads the exact body Pinwheel sent; the typed payload is for downstream consumers.
ENVELOPE_FIELDS = frozenset(
    {"event_id", "event_type", "webhook_id", "pinwheel_version", "sent_at", "received_at", "raw_body"}
)
TOPIC_FAMILY = {topic: family.value for family, topic in catalog.FAMILY_TOPICS.items()}
#: The outputs counter of each change (built once: an enum's ``value`` is a descriptor call).
_UPDATE_COUNTERS = {change: f"account_update:{change.value}" for change in Change}


class StoreView(Generic[V]):
    """One named store of a task, typed through its serde: what the logic sees as a KeyValueStore."""

    __slots__ = ("_name", "_serde", "_state")

    def __init__(self, state: StateView, name: str, serde: Serde[V]) -> None:
        self._state = state
        self._name = name
        self._serde = serde

    def get(self, key: str) -> V | None:
        raw = self._state.get(self._name, key.encode())
        return None if raw is None else self._serde.from_bytes(raw)

    def put(self, key: str, value: V) -> None:
        self._state.put(self._name, key.encode(), self._serde.to_bytes(value))

    def delete(self, key: str) -> None:
        self._state.delete(self._name, key.encode())

    def range(self, start: str, end: str) -> Iterator[tuple[str, V]]:
        decode = self._serde.from_bytes
        for key, value in self._state.range(self._name, start.encode(), end.encode()):
            yield key.decode(), decode(value)


#: What a cached view holds for a key it has not read yet (None is a known absence).
_UNCACHED: Final[Any] = object()


class CachedStoreView(StoreView[V]):
    """A StoreView that keeps decoded values and serializes each changed key once per flush.

    For the stores whose values are costly to decode and encode (accounts, jobs) and whose hot keys
    change on every event. Values are immutable, so sharing them is safe. `flush` must run before the
    task commits (`end_of_batch` calls it, the first step of every commit); a task that fails is rebuilt
    with new views, so the cache never outlives the state it mirrors.
    """

    __slots__ = ("_cache", "_changed", "_max_cached")

    def __init__(self, state: StateView, name: str, serde: Serde[V], max_cached: int = 20_000) -> None:
        super().__init__(state, name, serde)
        self._cache: dict[str, V | None] = {}
        self._changed: set[str] = set()
        self._max_cached = max_cached

    def get(self, key: str) -> V | None:
        # A sentinel, not KeyError: a miss (the first read of a key) is frequent, and raising costs more than it.
        value = self._cache.get(key, _UNCACHED)
        if value is _UNCACHED:
            value = self._cache[key] = super().get(key)
        return value

    def put(self, key: str, value: V) -> None:
        self._cache[key] = value
        self._changed.add(key)

    def delete(self, key: str) -> None:
        self._cache[key] = None
        self._changed.add(key)

    def range(self, start: str, end: str) -> Iterator[tuple[str, V]]:
        raise NotImplementedError("ordered stores are not cached")

    def flush(self) -> None:
        for key in self._changed:
            value = self._cache[key]
            if value is None:
                super().delete(key)
            else:
                super().put(key, value)
        self._changed.clear()
        if len(self._cache) > self._max_cached:
            self._cache.clear()


def task_stores(state: StateView) -> tuple[Stores, list[CachedStoreView[Any]]]:
    """The logic's stores over a task's state (one view per ``STORES`` entry), and the cached ones that need a
    flush before a commit."""
    views: dict[str, StoreView[Any]] = {
        spec.name: CachedStoreView(state, spec.name, spec.serde)
        if spec.cached
        else StoreView(state, spec.name, spec.serde)
        for spec in STORES
    }
    return Stores.of(views), [view for view in views.values() if isinstance(view, CachedStoreView)]


def pipeline_task_state(path: Path, application_id: str, partition: int) -> TaskState:
    """The local state of one task of the pipeline, its stores as ``STORES`` declares them (what the engine
    opens for the service: processors/service.py)."""
    return TaskState(
        path,
        application_id,
        partition,
        changelog_topics(application_id),
        LOCAL_STORE_NAMES,
        OUTPUT_LOGGED_STORE_NAMES,
        EXPIRING_STORE_NAMES,
    )


def timers_derivation(config: LogicConfig) -> Derive:
    """The restore's hook (processors/runtime/state.py): the timers (store ``TIMERS``, not logged) that the
    restored records of the stores owning them imply (``processors.logic.timers``), in bytes. The records of an
    output-logged store (jobs) come as the store keeps them (``state_topic_translation``).

    A tombstone, or an entry that implies no timer, deletes nothing: the timer it leaves behind, if any, is
    found obsolete when it fires. So a record needs no read of the value it replaces."""
    rules = TimerRules(config)
    serdes = {spec.name: spec.serde for spec in STORES if spec.name in TIMER_OWNERS}
    encode_due = next(spec.serde for spec in STORES if spec.name == TIMERS).to_bytes

    def derive(store: str, records: Sequence[tuple[bytes, bytes | None]]) -> list[tuple[str, bytes, bytes]]:
        serde = serdes.get(store)
        if serde is None:
            return []
        decode = serde.from_bytes
        derived = []
        if store == DEDUPE:  # most of a changelog: its key bytes are the timer's target, as they are
            dedupe_due, kind = rules.dedupe_due, TimerKind.DEDUPE
            for key, value in records:
                if value is not None:
                    due = dedupe_due(decode(value))
                    derived.append((TIMERS, timer_key_bytes(due, kind, key), encode_due(due)))
            return derived
        timers_of = rules.timers_of
        for key, value in records:
            if value is not None:
                for timer in timers_of(store, key.decode(), decode(value)):
                    derived.append((TIMERS, timer.encode().encode(), encode_due(timer.due_us)))
        return derived

    return derive


def state_topic_translation(codec: Codec) -> Translate:
    """The restore's hook (processors/runtime/restore.py) for the stores whose changelog is
    ``pinwheel.account_state.v1`` (``StoreSpec.changelog``).

    The accounts store: each record decoded by `codec` (``decode_plain``: uuids as text and times as ints, as
    the state keeps them; either wire format; the writer schemas of Confluent-framed ones fetched first, so a
    registry outage raises RegistryUnavailable and the restore waits for it) and read back by
    ``account_state_of``; a tombstone deletes the account. A record that does not decode for another reason, has
    no key, or whose key is not its account's id was not written by this pipeline.

    The jobs store: the ``JOBS_HEADER`` of each record, the account's jobs as the store keeps them (checked by
    decoding them); a record without it says nothing of the jobs, a tombstone deletes them.

    What the store would be wrong without raises ChangelogUnreadable."""
    to_bytes, decode = ACCOUNT_STATE_SERDE.to_bytes, codec.decode_plain
    read_jobs = ACCOUNT_JOBS_SERDE.from_bytes
    topic = catalog.ACCOUNT_STATE_TOPIC

    async def translate(store: str, records: Sequence[ChangelogRecord]) -> list[tuple[bytes, bytes | None]]:
        if store == JOBS:
            return _jobs_of(records)
        if store != ACCOUNTS:
            raise ChangelogUnreadable(f"no translation for the store {store!r}")
        await codec.resolve(value for _, value, _ in records)
        translated: list[tuple[bytes, bytes | None]] = []
        for key, value, _ in records:
            if not key:
                raise ChangelogUnreadable(f"a {topic} record without a key")
            if value is None:
                translated.append((key, None))
                continue
            try:
                state = account_state_of(decode(topic, value))
            except RegistryError:
                raise
            except (DecodeError, KeyError, TypeError, ValueError) as exc:
                raise ChangelogUnreadable(f"the {topic} record of key {key!r} is unreadable: {exc}") from exc
            if state.account_id.encode() != key:
                raise ChangelogUnreadable(
                    f"the {topic} record of key {key!r} holds the account {state.account_id!r}: not written by "
                    "this pipeline"
                )
            translated.append((key, to_bytes(state)))
        return translated

    def _jobs_of(records: Sequence[ChangelogRecord]) -> list[tuple[bytes, bytes | None]]:
        translated: list[tuple[bytes, bytes | None]] = []
        for key, value, headers in records:
            if not key:
                continue  # refused by the accounts store's translation, which reads the same records
            if value is None:
                translated.append((key, None))
                continue
            jobs = next((v for name, v in headers if name == JOBS_HEADER), None)
            if jobs is None:
                continue
            try:
                read_jobs(jobs)
            except (StateCodecError, ValueError, TypeError, IndexError) as exc:
                raise ChangelogUnreadable(
                    f"the {JOBS_HEADER} header of the {topic} record of key {key!r}: {exc}"
                ) from exc
            translated.append((key, jobs))
        return translated

    return translate


@dataclass
class PipelineCounters:
    """Shared by all tasks of the process; read by the metrics endpoint."""

    outputs: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)
    logic: Counter[str] = field(default_factory=Counter)


#: A record's `timestamp_type` when the broker set its timestamp (`message.timestamp.type=LogAppendTime`).
LOG_APPEND_TIME = 1


def _log_append_us(record: ConsumerRecord[bytes, bytes]) -> int | None:
    """When the broker appended the record (epoch µs), on topics whose timestamps the broker sets (family topics)."""
    if record.timestamp_type != LOG_APPEND_TIME:
        return None
    timestamp: int = record.timestamp
    return timestamp * 1000


def event_of(datum: dict[str, Any], record: ConsumerRecord[bytes, bytes]) -> Event:
    """The logic's ``Event`` of a family record: its envelope (``ENVELOPE_FIELDS``, read by
    ``Codec.decode_fields(..., plain=True)``: times as epoch µs) and the payload of its raw body, read by the
    gateway's own rules. Raises ``PayloadError``, ``InvalidEvent`` (with a dead-letter
    reason) or KeyError/TypeError/ValueError (a record no gateway of ours wrote)."""
    body = parse_body(datum["raw_body"])
    return event_from_payload(
        event_id=datum["event_id"],
        event_type=datum["event_type"],
        payload=body.payload,
        received_at_us=datum["received_at"],
        sent_at_us=datum["sent_at"],
        family=TOPIC_FAMILY.get(record.topic),
        logged_at_us=_log_append_us(record),
    )


class _Unreadable(NamedTuple):
    """A family record no `Event` can be made of: its dead letter's reason."""

    datum: dict[str, Any] | None
    reason: str
    error: str


class AccountPipeline:
    """The TaskProcessor of one partition."""

    def __init__(self, ctx: TaskContext, codec: Codec, config: LogicConfig, counters: PipelineCounters) -> None:
        self.ctx = ctx
        self.codec = codec
        self.counters = counters
        stores, self._cached = task_stores(ctx.state)
        self.logic = AccountProcessor(config, stores)
        # Only the last snapshot of an account per commit matters on a compacted topic.
        self._snapshots: dict[str, tuple[AccountStateSnapshot, Headers]] = {}
        self._wire = WireEncoder(codec)
        # Records read by `event_time` (the runtime buffers them), until `process` or `reject` takes them.
        self._read_ahead: dict[tuple[str, int], tuple[dict[str, Any], Event] | _Unreadable] = {}
        self._last_time = 0

    def event_time(self, record: ConsumerRecord[bytes, bytes]) -> int:
        """The time this record moves stream time to (epoch µs): the runtime processes the task's records in
        this order. The record is read here once; `process` takes what was read. A record that cannot be read
        moves no time and is taken in the order it came (the time of its predecessor)."""
        read = self._read(record)
        self._read_ahead[(record.topic, record.offset)] = read
        if isinstance(read, _Unreadable):
            return self._last_time
        self._last_time = time = self.logic.event_time(read[1])
        return time

    def _read(self, record: ConsumerRecord[bytes, bytes]) -> tuple[dict[str, Any], Event] | _Unreadable:
        datum = None
        try:
            datum = self.codec.decode_fields(record.topic, record.value, ENVELOPE_FIELDS, plain=True)
            return datum, event_of(datum, record)
        # One name per handler: mypyc types a handler's name by its first use (DecodeError is a compiled class).
        except DecodeError as undecodable:
            return _Unreadable(None, "decode_error", str(undecodable))
        except (InvalidEvent, PayloadError) as invalid:
            return _Unreadable(datum, invalid.reason, str(invalid))
        except (KeyError, TypeError, ValueError) as exc:
            return _Unreadable(datum, "invalid_record", f"{type(exc).__name__} reading the record")

    def process(self, record: ConsumerRecord[bytes, bytes], watermark_us: int = NO_WATERMARK) -> None:
        read = self._read_ahead.pop((record.topic, record.offset), None) or self._read(record)
        if isinstance(read, _Unreadable):
            self._dead_letter(record, DeliveryIds.of(read.datum, record), read.reason, read.error)
            return
        datum, event = read
        delivery = DeliveryIds.of(datum, record)
        try:
            outputs = self.logic.process(event, watermark_us)
        except Exception as exc:  # a bug must not block the partition: the record is kept (rejected), not its effects
            log.exception("processing failed", extra={"event_id": event.event_id, "event_type": event.event_type})
            raise RecordFailed(record, "processing_error", type(exc).__name__) from exc
        try:
            self._emit(outputs, record, delivery)
        except RegistryError:
            raise  # the registry's failure, not the event's: the engine puts the batch back
        except Exception as exc:  # an output the schema cannot carry: a bug, but the input is kept (rejected)
            # The error's type only: an encoder's message may quote the payload's values.
            error = type(exc).__name__
            log.error(
                "encoding failed", extra={"event_id": event.event_id, "event_type": event.event_type, "error": error}
            )
            raise RecordFailed(record, "encode_error", error) from exc

    def punctuate(self, wall_clock_ms: int, watermark_us: int = NO_WATERMARK) -> None:
        # The watermark holds back every timer due after a record the task has not read yet: during a
        # backlog (a replay, a catch-up after an outage) the clock times out nothing whose final waits unread.
        wall = datetime.fromtimestamp(wall_clock_ms / 1000, UTC)
        self._emit(self.logic.on_time(wall, watermark_us), None, None)

    def reject(self, record: ConsumerRecord[bytes, bytes], reason: str, error: str) -> None:
        self._read_ahead.pop((record.topic, record.offset), None)
        self._dead_letter(record, DeliveryIds.of(None, record), reason, error)

    def end_of_batch(self) -> None:
        self.logic.flush()
        for store in self._cached:
            store.flush()
        state = self.ctx.state
        for key, (snapshot, headers) in self._snapshots.items():
            key_bytes = key.encode()
            # The jobs store's changelog (StoreSpec.changelog_header): the account's jobs, on every state record
            # of an account that has any, since compaction keeps only its latest record.
            if (jobs := state.get(JOBS, key_bytes)) is not None:
                headers = [*headers, (JOBS_HEADER, jobs)]
            try:
                value = self._wire.state(snapshot.account)
            except RegistryError:
                raise
            except Exception as exc:  # a state its schema cannot carry: the runtime finds the record that made it
                self._snapshots.clear()
                log.error("state snapshot encoding failed", extra={"error": type(exc).__name__})
                raise BatchFailed("encode_error", f"account state: {type(exc).__name__}") from exc
            # The accounts store's changelog (StoreSpec.changelog): in the task's partition, so that the restore of
            # partition p finds it in partition p.
            self.ctx.emit(OutRecord(catalog.ACCOUNT_STATE_TOPIC, key_bytes, value, headers, self.ctx.partition))
        self.counters.outputs["account_state"] += len(self._snapshots)
        self._snapshots.clear()
        self.counters.logic.update(self.logic.counters)
        self.logic.counters.clear()

    def _headers(self, event_id: str | None, event_type: str | None, delivery: DeliveryIds | None) -> Headers:
        return output_headers(self.codec.content_format, event_id, event_type, delivery)

    def _emit(
        self, outputs: list[Output], record: ConsumerRecord[bytes, bytes] | None, delivery: DeliveryIds | None
    ) -> None:
        update_headers: dict[str, Headers] = {}
        counts = self.counters.outputs
        for output in outputs:
            if isinstance(output, AccountUpdate):
                value = self._wire.update(output)
                trigger = output.trigger
                headers = self._headers(trigger.event_id, trigger.event_type, delivery)
                key = output.account_id  # the update's key
                self.ctx.emit(OutRecord(catalog.ACCOUNT_UPDATES_TOPIC, key.encode(), value, headers))
                counts[_UPDATE_COUNTERS[output.change]] += 1
                update_headers[key] = headers
            elif isinstance(output, AccountStateSnapshot):
                # A snapshot carries the headers of the update that produced it: the last event applied.
                key = output.account.account_id  # the snapshot's key
                headers = update_headers.get(key) or self._headers(None, None, None)
                self._snapshots[key] = (output, headers)
            elif isinstance(output, ReadinessUpdate):
                value = self.codec.encode_plain(catalog.ACCOUNT_READINESS_TOPIC, readiness_datum(output))
                headers = update_headers.get(output.key) or self._headers(
                    output.trigger.event_id, output.trigger.event_type, delivery
                )
                self.ctx.emit(OutRecord(catalog.ACCOUNT_READINESS_TOPIC, output.key.encode(), value, headers))
                self.counters.outputs[f"account_readiness:{output.verdict.status}"] += 1
            elif isinstance(output, RejectedEvent):
                if record is None or delivery is None:
                    log.error("dead letter without a source record", extra={"reason": output.reason})
                    continue
                self._dead_letter(record, delivery, output.reason, output.error)

    def _dead_letter(
        self, record: ConsumerRecord[bytes, bytes], delivery: DeliveryIds, reason: str, error: str
    ) -> None:
        key, datum, headers = dead_letter_record(record, delivery, reason, error, self.codec.content_format)
        value = self.codec.encode(catalog.DEADLETTER_TOPIC, datum)
        self.ctx.emit(OutRecord(catalog.DEADLETTER_TOPIC, key, value, headers))
        self.counters.dead_letters[reason] += 1
        log.warning(
            "dead letter",
            extra={"reason": reason, "topic": record.topic, "partition": record.partition, "offset": record.offset},
        )
