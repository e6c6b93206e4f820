"""A broker-free driver for the account pipeline (the idea of Kafka Streams' TopologyTestDriver).

Records go in as the gateway makes them (its own `plan_record`: parse, validate, Avro-encode, headers), or as raw
family-topic records, to an in-memory transactional broker (tests/processors/memory_kafka.py); the runtime's
real `Engine` and `Task` run the real `AccountPipeline` over a real `TaskState` (RocksDB in a temporary
directory) and commit through that broker. Each call waits until the engine committed past its input and
returns what that added to the output topics (read_committed). Failures take the runtime's own paths: a
`RecordFailed`, a `BatchFailed` or a refused output is isolated to its record, which goes to `reject`.
The timers' wall clock is the driver's: it starts at the epoch and moves only with `advance_to`.
Several drivers may run one after the other over one broker (`broker=`: a restart, a rebalance to another
machine), each with its own state directory or a previous one's (its local checkpoint).

Outputs are decoded by `IndependentReader`: fastavro straight from the .avsc files, with the writer chosen by
the single-object fingerprint — none of the connector's codec (whose encoder is cavro where installed: the reader
also checks that fastavro writes each record's bytes back identically).
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from common.settings import KafkaSettings
from gateway.records import Route, plan_record
from processors.logic.config import LogicConfig
from processors.logic.stores import DEDUPE, EXPIRING_STORE_NAMES, LOCAL_STORE_NAMES, OUTPUT_LOGGED_STORE_NAMES
from processors.pipeline import (
    LOG_APPEND_TIME,
    AccountPipeline,
    PipelineCounters,
    state_topic_translation,
    timers_derivation,
)
from processors.runtime.engine import Engine
from processors.runtime.ports import Record, TopicPartition
from processors.runtime.settings import RuntimeSettings
from processors.runtime.state import TaskState
from processors.runtime.task import TaskContext, TaskProcessor
from processors.topics import changelog_topics, own_changelog_topics
from schemas import catalog
from schemas.codec import Codec
from tests.processors.memory_kafka import MemoryKafka

AVRO_DIR = Path(__file__).resolve().parents[2] / "schemas" / "avro"
APP_ID = "driver"
OUTPUT_TOPICS = (
    catalog.ACCOUNT_UPDATES_TOPIC,
    catalog.ACCOUNT_STATE_TOPIC,
    catalog.ACCOUNT_READINESS_TOPIC,
    catalog.DEADLETTER_TOPIC,
)
TIMEOUT_S = 10.0


class IndependentReader:
    """Decodes our single-object Avro records with fastavro and the schema files only."""

    def __init__(self, avro_dir: Path = AVRO_DIR) -> None:
        self._writers: dict[bytes, Any] = {}
        for path in sorted(avro_dir.glob("*.avsc")):
            schema = fastavro.parse_schema(json.loads(path.read_text()), named_schemas={})
            key = bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))
            self._writers[key] = schema

    def decode(self, value: bytes) -> dict[str, Any]:
        """The record's datum; and fastavro, given it back, must write the very bytes the codec's encoder
        wrote: so every output the driver reads also checks that the two Avro writers agree."""
        assert value[:2] == b"\xc3\x01", "not an Avro single-object record"
        writer = self._writers[value[2:10]]
        datum = cast(dict[str, Any], fastavro.schemaless_reader(io.BytesIO(value[10:]), writer, None))
        again = io.BytesIO()
        fastavro.schemaless_writer(again, writer, datum)
        assert again.getvalue() == value[10:], "the codec's encoder and fastavro wrote different bytes"
        return datum


@dataclass(frozen=True)
class Output:
    """One record the pipeline emitted, decoded."""

    topic: str
    key: str | None
    value: dict[str, Any]
    headers: dict[str, str]


class DriverClock:
    """The driver's wall clock (set by `advance_to`, from the epoch); the real monotonic clock."""

    def __init__(self) -> None:
        self.now_s = 0.0

    def wall(self) -> float:
        return self.now_s

    def monotonic(self) -> float:
        return time.monotonic()


class _Watched:
    """The task's processor, seen by the driver: when it was last punctuated, and whether a commit (whose first
    step is `end_of_batch`) began since."""

    def __init__(self, inner: AccountPipeline) -> None:
        self.inner = inner
        self.punctuated_ms = -1
        self.flushed_after_punctuation = False

    def event_time(self, record: Record) -> int:
        return self.inner.event_time(record)

    def process(self, record: Record, watermark_us: int) -> None:
        self.inner.process(record, watermark_us)

    def punctuate(self, wall_clock_ms: int, watermark_us: int) -> None:
        self.inner.punctuate(wall_clock_ms, watermark_us)
        self.punctuated_ms = wall_clock_ms
        self.flushed_after_punctuation = False

    def end_of_batch(self) -> None:
        self.inner.end_of_batch()
        self.flushed_after_punctuation = True

    def reject(self, record: Record, reason: str, error: str) -> None:
        self.inner.reject(record, reason, error)


class PipelineDriver:
    def __init__(
        self,
        state_dir: Path,
        config: LogicConfig | None = None,
        codec: Codec | None = None,
        *,
        broker: MemoryKafka | None = None,
    ) -> None:
        """`broker`: a previous driver's (closed first), whose topics, group offsets and transactional ids this
        one takes over; its outputs so far are not this driver's."""
        self.codec = codec or Codec()
        self.config = config or LogicConfig()
        self.counters = PipelineCounters()
        self.reader = IndependentReader()
        self.broker = broker or MemoryKafka()
        self.clock = DriverClock()
        if broker is not None:
            broker.on_new_event_loop()
            if isinstance(broker.clock, DriverClock):  # the wall clock goes on where the previous driver left it
                self.clock.now_s = broker.clock.now_s
        self.broker.clock = self.clock  # type: ignore[assignment]
        for topic in (*catalog.FAMILY_TOPICS.values(), *OUTPUT_TOPICS):
            self.broker.create_topic(topic, 1)
        changelogs = changelog_topics(APP_ID)
        for topic in own_changelog_topics(APP_ID).values():
            self.broker.create_topic(topic, 1)
        self._read = {topic: len(self.broker.committed_records(topic)) for topic in OUTPUT_TOPICS}
        self._processor: _Watched | None = None

        def factory(ctx: TaskContext) -> TaskProcessor:
            self._processor = _Watched(AccountPipeline(ctx, self.codec, self.config, self.counters))
            return self._processor

        self.engine = Engine(
            RuntimeSettings(
                application_id=APP_ID, state_dir=state_dir, commit_interval_ms=10, punctuate_interval_ms=10
            ),
            KafkaSettings(bootstrap_servers="in-memory:9092"),
            list(catalog.FAMILY_TOPICS.values()),
            changelogs,
            factory,
            output_topics=OUTPUT_TOPICS,
            max_fetch_bytes=1 << 20,
            max_request_bytes=1 << 20,
            clients=self.broker,
            local_stores=LOCAL_STORE_NAMES,
            derive=timers_derivation(self.config),
            output_logged=OUTPUT_LOGGED_STORE_NAMES,
            translate=state_topic_translation(self.codec),
            expiring=EXPIRING_STORE_NAMES,
        )
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._run = self._loop.create_task(self.engine.run(self._stop))
        self._until(lambda: self._processor is not None)

    def task_state(self) -> TaskState:
        """The local store of the task's partition, as the running task holds it."""
        assert self._processor is not None
        state = self._processor.inner.ctx.state
        assert isinstance(state, TaskState)
        return state

    def close(self) -> None:
        self._stop.set()
        try:
            self._loop.run_until_complete(self._run)
        finally:
            self._loop.close()

    def _wait(self, coroutine: Coroutine[Any, Any, None]) -> None:
        self._loop.run_until_complete(asyncio.wait_for(coroutine, TIMEOUT_S))

    def until(self, condition: Callable[[], bool]) -> None:
        """Run the engine until `condition` holds (and no commit is under way)."""
        self._until(condition)

    def _until(self, condition: Any) -> None:
        async def poll() -> None:
            while not condition():
                if self._run.done():
                    self._run.result()
                    raise AssertionError("the engine stopped")
                await asyncio.sleep(0.001)
            async with self.engine._lock:  # a commit under way has ended
                pass

        self._wait(poll())

    # -- input ---------------------------------------------------------------------------------------

    def gateway_record(
        self,
        body: bytes | Mapping[str, Any],
        received_at: datetime,
        *,
        sent_at: datetime | None = None,
        webhook_id: str | None = "00000000-0000-4000-8000-0000000000ff",
        pinwheel_version: str | None = "2023-11-22",
    ) -> tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]:
        """(topic, key, value, headers) of the family record the gateway publishes for this body."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        planned = plan_record(
            raw,
            request_headers={},
            webhook_id=webhook_id,
            pinwheel_version=pinwheel_version,
            sent_at=sent_at or received_at,
            received_at=received_at,
            codec=self.codec,
        )
        assert planned.route is not Route.DEAD_LETTER, f"the gateway dead-letters this body: {planned.reason}"
        r = planned.record
        return r.topic, r.key, r.value, list(r.headers)

    def pipe(self, body: bytes | Mapping[str, Any], received_at: datetime, **gateway: Any) -> list[Output]:
        """Deliver one webhook body through the gateway's encoding; the outputs of its commit."""
        topic, key, value, headers = self.gateway_record(body, received_at, **gateway)
        return self.pipe_record(topic, key, value, headers, logged_at=received_at)

    def pipe_record(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]],
        *,
        logged_at: datetime,
    ) -> list[Output]:
        """One family-topic record, its timestamp set by the broker (log-append time = `logged_at`); the outputs
        the engine committed with it."""
        tp = TopicPartition(topic, 0)
        offset = self.broker.produce(
            topic, 0, key, value, int(logged_at.timestamp() * 1000), headers=headers, timestamp_type=LOG_APPEND_TIME
        )
        self._until(lambda: (self.broker.group_offset(APP_ID, tp) or 0) > offset)
        return self._committed_outputs()

    def refuse(self, body: bytes | Mapping[str, Any], received_at: datetime, error: str) -> list[Output]:
        """This record's outputs (not its dead letter, nor the changelogs) refused by the broker with `error`: the
        runtime isolates the record and hands it to `reject`."""
        self.broker.refuse = lambda out: out.topic in OUTPUT_TOPICS and out.topic != catalog.DEADLETTER_TOPIC
        self.broker.refusal = error
        try:
            return self.pipe(body, received_at)
        finally:
            self.broker.refuse = lambda out: False

    def advance_to(self, when: datetime) -> list[Output]:
        """The wall clock moves to `when`: the engine punctuates (due timers fire) and commits."""
        when_ms = int(when.timestamp() * 1000)
        self.clock.now_s = max(self.clock.now_s, when.timestamp())
        self._until(
            lambda: (
                self._processor is not None
                and self._processor.punctuated_ms >= when_ms
                and self._processor.flushed_after_punctuation
            )
        )
        return self._committed_outputs()

    # -- output ------------------------------------------------------------------------------------------

    def _committed_outputs(self) -> list[Output]:
        outputs: list[Output] = []
        for topic, seen in self._read.items():
            records = self.broker.committed_records(topic)
            self._read[topic] = len(records)
            outputs += [
                Output(
                    topic,
                    None if r.key is None else r.key.decode(),
                    self.reader.decode(r.value or b""),
                    {name: raw.decode() for name, raw in r.headers},
                )
                for r in records[seen:]
            ]
        return outputs


class Machines:
    """Drivers one after the other over one broker: each machine has its state directory (a restart on the same
    machine restores from its checkpoint and the changelogs' tail, on another one from scratch)."""

    def __init__(self, root: Path, config: LogicConfig | None = None) -> None:
        self.root = root
        self.config = config or LogicConfig()
        self.broker = MemoryKafka()
        self.current: PipelineDriver | None = None

    def start(self, machine: str, config: LogicConfig | None = None) -> PipelineDriver:
        self.stop()
        self.current = PipelineDriver(self.root / machine, config or self.config, broker=self.broker)
        return self.current

    def stop(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None

    def changelog(self, store: str) -> list[tuple[str, bytes | None]]:
        """The committed records of `store`'s changelog (the accounts': the state topic; the dedupe store's, a
        log of records each holding the entries of one transaction: its entries, read here on their own)."""
        topic = changelog_topics(APP_ID)[store]
        records = self.broker.committed_records(topic)
        if store == DEDUPE:
            return [entry for r in records for entry in log_entries(r.value)]
        return [(r.key.decode(), r.value) for r in records if r.key is not None]

    def changelog_records(self, store: str) -> int:
        """How many records `store`'s changelog holds (committed)."""
        return len(self.broker.committed_records(changelog_topics(APP_ID)[store]))


def log_entries(value: bytes | None) -> list[tuple[str, bytes | None]]:
    """The entries of one record of an entry log (docs/processing.md, "The dedupe store's log"): a format byte 1,
    then each entry as a 4-byte big-endian length and the key, a length and the value. Written here from the
    documented format, not with the processors' own reader."""
    assert value is not None
    assert value[0] == 1, value
    entries: list[tuple[str, bytes | None]] = []
    at = 1
    while at < len(value):
        key_length = int.from_bytes(value[at : at + 4], "big")
        key = value[at + 4 : at + 4 + key_length].decode()
        at += 4 + key_length
        value_length = int.from_bytes(value[at : at + 4], "big")
        entries.append((key, value[at + 4 : at + 4 + value_length]))
        at += 4 + value_length
    assert at == len(value)
    return entries


def on(outputs: list[Output], topic: str) -> list[Output]:
    return [out for out in outputs if out.topic == topic]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]
