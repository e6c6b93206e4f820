"""Dead letters: read and filter them, show one, replay them.

Replay never goes through the HTTP endpoint and never re-verifies a signature (the gateway verified the
request before it dead-lettered it):

- a **gateway** dead letter holds the exact request body and the request headers; its body is run again
  through today's classification (`gateway.records.plan_record`, the gateway's own code) with its original
  envelope (received_at = failed_at, x-timestamp, webhook id, Pinwheel-Version). Still invalid: counted,
  nothing published. Valid now: its family record is published, marked with a `replayed` header;
- a **processor** dead letter holds the source record (topic, key, value, headers, timestamp): it is
  published again, unchanged but for the `replayed` header, for the processors to take it again.

The processors drop an event_id they have already processed, so replaying the same dead letters twice
changes nothing downstream.

The planning (`plan_replay`, `DeadLetterFilter`) is pure; reading and publishing are the thin shell.
"""

from __future__ import annotations

import asyncio
import fnmatch
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from common.kafka_access import TopicOp, check_topics_of
from common.settings import KafkaSettings
from gateway import records, signature
from gateway.kafka_record import KafkaRecord
from schemas.catalog import DEADLETTER_TOPIC, FAMILY_TOPIC_NAMES
from schemas.codec import Codec, DecodeError
from schemas.topics import MAX_MESSAGE_BYTES

REPLAYED_HEADER = "replayed"


class DeadLetterError(RuntimeError):
    """The dead-letter topic cannot be read as asked (missing topic, unknown reference...)."""


@dataclass(frozen=True)
class DeadLetterRecord:
    """One record of the dead-letter topic, decoded (`datum` is a `pinwheel.DeadLetter`)."""

    partition: int
    offset: int
    datum: dict[str, Any]

    @property
    def ref(self) -> str:
        """`partition:offset`, what `deadletter show` takes."""
        return f"{self.partition}:{self.offset}"

    @property
    def stage(self) -> str:
        return str(self.datum["stage"])

    @property
    def reason(self) -> str:
        return str(self.datum["reason"])

    @property
    def event_id(self) -> str | None:
        value = self.datum.get("event_id")
        return None if value is None else str(value)

    @property
    def event_type(self) -> str | None:
        value = self.datum.get("event_type")
        return None if value is None else str(value)

    @property
    def failed_at(self) -> datetime:
        value: datetime = self.datum["failed_at"]
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value

    @property
    def raw(self) -> bytes:
        return bytes(self.datum["raw"])

    @property
    def headers(self) -> list[tuple[str, bytes | None]]:
        return [(h["name"], None if h["value"] is None else bytes(h["value"])) for h in self.datum["headers"]]


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which dead letters a command acts on; an empty criterion matches everything."""

    stages: frozenset[str] = frozenset()
    reasons: frozenset[str] = frozenset()
    event_types: tuple[str, ...] = ()  # exact names or shell patterns (`paystubs.*`)
    event_ids: frozenset[str] = frozenset()
    since: datetime | None = None  # failed_at >= since
    until: datetime | None = None  # failed_at < until

    def matches(self, letter: DeadLetterRecord) -> bool:
        if self.stages and letter.stage not in self.stages:
            return False
        if self.reasons and letter.reason not in self.reasons:
            return False
        if self.event_ids and letter.event_id not in self.event_ids:
            return False
        if self.event_types and not any(
            fnmatch.fnmatchcase(letter.event_type or "", pattern) for pattern in self.event_types
        ):
            return False
        if self.since is not None and letter.failed_at < self.since:
            return False
        return self.until is None or letter.failed_at < self.until


class Verdict(StrEnum):
    REPLAYED = "replayed"
    STILL_INVALID = "still_invalid"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class ReplayPlan:
    letter: DeadLetterRecord
    verdict: Verdict
    detail: str  # the target topic, the reason it is still invalid, or why it is skipped
    record: KafkaRecord | None = None


def _header_text(headers: Iterable[tuple[str, bytes | None]]) -> dict[str, str]:
    """HTTP request headers kept on a gateway dead letter, as the gateway read them (first one wins)."""
    out: dict[str, str] = {}
    for name, value in headers:
        if value is not None:
            out.setdefault(name.lower(), value.decode("utf-8", "replace"))
    return out


def _sent_at(request_headers: Mapping[str, str], fallback: datetime) -> datetime:
    # The gateway only dead-letters verified requests, so x-timestamp is there and well-formed.
    raw = request_headers.get(signature.TIMESTAMP_HEADER, "")
    return datetime.fromtimestamp(int(raw), UTC) if raw.isascii() and raw.isdigit() else fallback


def _mark(headers: Iterable[tuple[str, bytes]], letter: DeadLetterRecord) -> tuple[tuple[str, bytes], ...]:
    kept = tuple((name, value) for name, value in headers if name != REPLAYED_HEADER)
    return (*kept, (REPLAYED_HEADER, f"{DEADLETTER_TOPIC}:{letter.ref}".encode()))


def plan_replay(letter: DeadLetterRecord, codec: Codec) -> ReplayPlan:
    """What replaying `letter` would do today (pure: no I/O)."""
    if letter.stage == "gateway":
        request_headers = _header_text(letter.headers)
        planned = records.plan_record(
            letter.raw,
            request_headers=request_headers,
            webhook_id=request_headers.get(signature.WEBHOOK_ID_HEADER),
            pinwheel_version=request_headers.get(signature.VERSION_HEADER),
            sent_at=_sent_at(request_headers, letter.failed_at),
            received_at=letter.failed_at,
            codec=codec,
        )
        if planned.route is records.Route.DEAD_LETTER:
            return ReplayPlan(letter, Verdict.STILL_INVALID, planned.reason or "invalid")
        record = planned.record
        replay = KafkaRecord(record.topic, record.key, record.value, _mark(record.headers, letter), record.timestamp_ms)
        return ReplayPlan(letter, Verdict.REPLAYED, record.topic, replay)
    if letter.stage == "processor":
        topic = letter.datum.get("source_topic")
        if topic not in FAMILY_TOPIC_NAMES:
            return ReplayPlan(letter, Verdict.SKIPPED, f"source topic {topic!r} is not a family topic")
        try:
            codec.decode(topic, letter.raw)
        except DecodeError:
            return ReplayPlan(letter, Verdict.STILL_INVALID, "decode_error")
        headers = [(name, value) for name, value in letter.headers if value is not None]
        key = letter.datum.get("source_key")
        timestamp_ms = int(letter.failed_at.timestamp() * 1000)
        replay = KafkaRecord(topic, key, letter.raw, _mark(headers, letter), timestamp_ms)
        return ReplayPlan(letter, Verdict.REPLAYED, topic, replay)
    return ReplayPlan(letter, Verdict.SKIPPED, f"unknown stage {letter.stage!r}")


# -- reading ---------------------------------------------------------------------------------------


def _consumer(kafka: KafkaSettings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        **kafka.client_kwargs(),
        client_id=f"{kafka.client_id_prefix}-deadletter",
        group_id=None,
        enable_auto_commit=False,
        # The processors write dead letters in their transactions: only committed ones are real.
        isolation_level="read_committed",
        max_partition_fetch_bytes=MAX_MESSAGE_BYTES,
    )


async def _partitions(kafka: KafkaSettings, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
    # Per topic, not a listing, which hides a topic the principal may not describe: "not authorized", not "missing".
    if await check_topics_of(kafka, {DEADLETTER_TOPIC: (TopicOp.READ,)}, "deadletter-check"):
        raise DeadLetterError(f"topic {DEADLETTER_TOPIC} does not exist (create it with `pinwheel-connector topics`)")
    partitions = consumer.partitions_for_topic(DEADLETTER_TOPIC)
    if partitions is None:  # topics() does not refresh the client's own metadata
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(DEADLETTER_TOPIC) or set()
    return [TopicPartition(DEADLETTER_TOPIC, p) for p in sorted(partitions)]


async def _assign(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> None:
    """Assign and wait for the initial positions: a seek made while the consumer still resolves them can be
    overridden by that resolution (aiokafka), and the reader would start at the end."""
    consumer.assign(tps)
    for tp in tps:
        await consumer.position(tp)


async def read_dead_letters(
    kafka: KafkaSettings,
    codec: Codec,
    selection: DeadLetterFilter,
    on_total: Callable[[int], None] | None = None,
    on_read: Callable[[int], None] | None = None,
) -> AsyncIterator[DeadLetterRecord]:
    """The matching dead letters that exist now (up to the end offsets seen at the start), in partition order.

    `on_total(n)` is told how many records will be read, `on_read(k)` of every batch (a progress bar).
    A record the current schema cannot decode is reported as a `DeadLetterError`: it is not skipped silently.
    """
    consumer = _consumer(kafka)
    try:
        await consumer.start()
        tps = await _partitions(kafka, consumer)
        await _assign(consumer, tps)
        beginning = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        if on_total is not None:
            on_total(sum(end[tp] - beginning[tp] for tp in tps))
        for tp in tps:
            if beginning[tp] >= end[tp]:
                continue
            consumer.seek(tp, beginning[tp])
            while await consumer.position(tp) < end[tp]:
                batch = await consumer.getmany(tp, timeout_ms=500, max_records=1000)
                for message in batch.get(tp, []):
                    if message.offset >= end[tp]:
                        break
                    letter = await _decode(codec, message.partition, message.offset, message.value)
                    if selection.matches(letter):
                        yield letter
                if on_read is not None:
                    on_read(len(batch.get(tp, [])))
    finally:
        await consumer.stop()


async def _decode(codec: Codec, partition: int, offset: int, value: bytes | None) -> DeadLetterRecord:
    try:
        return DeadLetterRecord(partition, offset, await codec.decode_resolved(DEADLETTER_TOPIC, value or b""))
    except DecodeError as exc:
        raise DeadLetterError(f"dead letter {partition}:{offset} cannot be decoded: {exc}") from exc


async def find_dead_letter(kafka: KafkaSettings, codec: Codec, partition: int, offset: int) -> DeadLetterRecord:
    consumer = _consumer(kafka)
    try:
        await consumer.start()
        tps = {tp.partition: tp for tp in await _partitions(kafka, consumer)}
        if partition not in tps:
            raise DeadLetterError(f"{DEADLETTER_TOPIC} has no partition {partition}")
        tp = tps[partition]
        await _assign(consumer, [tp])
        beginning = (await consumer.beginning_offsets([tp]))[tp]
        end = (await consumer.end_offsets([tp]))[tp]
        if not beginning <= offset < end:
            raise DeadLetterError(
                f"no dead letter at {partition}:{offset} (partition {partition} holds {beginning}-{end - 1})"
            )
        consumer.seek(tp, offset)
        while await consumer.position(tp) < end:
            for message in (await consumer.getmany(tp, timeout_ms=500, max_records=1)).get(tp, []):
                if message.offset == offset:
                    return await _decode(codec, partition, offset, message.value)
                raise DeadLetterError(
                    f"no dead letter at {partition}:{offset} (a transaction marker or aborted record)"
                )
        raise DeadLetterError(f"no dead letter at {partition}:{offset}")
    finally:
        await consumer.stop()


# -- replaying -------------------------------------------------------------------------------------


@dataclass
class ReplaySummary:
    counts: Counter[Verdict] = field(default_factory=Counter)
    details: Counter[tuple[Verdict, str]] = field(default_factory=Counter)

    def add(self, plan: ReplayPlan) -> None:
        self.counts[plan.verdict] += 1
        self.details[(plan.verdict, plan.detail)] += 1

    def line(self, dry_run: bool) -> str:
        verb = "would replay" if dry_run else "replayed"
        return (
            f"{verb} {self.counts[Verdict.REPLAYED]}, still invalid {self.counts[Verdict.STILL_INVALID]}, "
            f"skipped {self.counts[Verdict.SKIPPED]}"
        )


async def replay(
    kafka: KafkaSettings,
    plans: Iterable[ReplayPlan],
    *,
    dry_run: bool,
    on_done: Callable[[ReplayPlan], None] | None = None,
) -> ReplaySummary:
    """Publish the records of the REPLAYED plans (acks=all, idempotent), unless `dry_run`."""
    summary = ReplaySummary()
    producer = None
    if not dry_run:  # Write on every target, asked first: a refusal halfway would leave a partial replay
        targets = {plan.record.topic for plan in plans if plan.record is not None}
        await check_topics_of(kafka, dict.fromkeys(sorted(targets), (TopicOp.WRITE,)), "deadletter-replay-check")
        producer = AIOKafkaProducer(
            **kafka.client_kwargs(),
            client_id=f"{kafka.client_id_prefix}-deadletter-replay",
            acks="all",
            enable_idempotence=True,
            max_request_size=MAX_MESSAGE_BYTES,
        )
    try:
        if producer is not None:
            await producer.start()  # inside: a failed start leaves the client to stop as well
        pending: list[tuple[ReplayPlan, asyncio.Future[Any]]] = []
        for plan in plans:
            if producer is not None and plan.record is not None:
                record = plan.record
                future = await producer.send(
                    record.topic,
                    record.value,
                    key=record.key,
                    headers=list(record.headers),
                    timestamp_ms=record.timestamp_ms,
                )
                pending.append((plan, future))
            else:
                summary.add(plan)
                if on_done is not None:
                    on_done(plan)
            if len(pending) >= 500:
                await _settle(pending, summary, on_done)
        await _settle(pending, summary, on_done)
    finally:
        if producer is not None:
            await producer.stop()
    return summary


async def _settle(
    pending: list[tuple[ReplayPlan, asyncio.Future[Any]]],
    summary: ReplaySummary,
    on_done: Callable[[ReplayPlan], None] | None,
) -> None:
    # Every record must be acknowledged: a failure stops the replay (re-running it is safe).
    await asyncio.gather(*(future for _, future in pending))
    for plan, _ in pending:
        summary.add(plan)
        if on_done is not None:
            on_done(plan)
    pending.clear()
