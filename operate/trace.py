"""Follow an event (or every event of an account) through the pipeline: `pinwheel-connector trace`.

What Kafka holds, within a `--since` window: the deliveries that reached a family topic (topic, partition, offset,
`x-timestamp`, receive time), the processors' verdict on each copy (the first one processed, later copies dropped
by the dedupe on `event_id`), the account updates it produced (update id, change, the job it joined, the
account's state version after it) and any dead letter, each with its time.

What Kafka does not hold: the gateway's refusals (401, 413, 415) and 503 answers are in its log and metrics only,
so attempts that never reached Kafka are not seen. Copies of one event with different `x-timestamp` values are
separate Pinwheel attempts that all got through (a redelivery after a 5XX or a timeout); the same `x-timestamp`
twice is one attempt published twice.

`build_trace` is pure; `collect` reads the topics (read_committed, from the first offset at or after `since`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from common.settings import KafkaSettings
from operate.tail import jsonable
from schemas.catalog import ACCOUNT_UPDATES_TOPIC, DEADLETTER_TOPIC, FAMILY_TOPICS, normalise_id
from schemas.codec import Codec, DecodeError
from schemas.topics import MAX_MESSAGE_BYTES

NOT_IN_KAFKA = (
    "gateway logs are not in Kafka: attempts refused (401/413/415) or answered 503 are not seen here; "
    "copies with different x-timestamps are separate Pinwheel attempts that all reached Kafka"
)


class TraceError(RuntimeError):
    """The topics cannot be read as asked (a topic missing...)."""


@dataclass(frozen=True)
class Seen:
    """One record read from a topic, decoded."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: str | None
    headers: Mapping[str, str]
    datum: Mapping[str, Any]

    @property
    def ref(self) -> str:
        return f"{self.topic} {self.partition}:{self.offset}"

    @property
    def logged_at(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)


@dataclass(frozen=True)
class Step:
    at: datetime
    kind: str  # delivery | update | dead_letter
    ref: str
    event_id: str | None
    text: str
    detail: Mapping[str, Any]

    def as_json(self) -> dict[str, Any]:
        base = {"at": self.at.isoformat(), "kind": self.kind, "ref": self.ref, "event_id": self.event_id}
        return {**base, **jsonable(dict(self.detail))}


@dataclass
class Trace:
    query: str
    matched: str  # event_id | account_id | nothing
    since: datetime
    steps: list[Step] = field(default_factory=list)

    def count(self, kind: str) -> int:
        return sum(1 for step in self.steps if step.kind == kind)

    def summary(self) -> str:
        deliveries = [s for s in self.steps if s.kind == "delivery"]
        duplicates = sum(1 for s in deliveries if s.detail.get("verdict") == "duplicate")
        return (
            f"{len(deliveries)} delivery record(s) in Kafka ({duplicates} duplicate), {self.count('update')} "
            f"update(s), {self.count('dead_letter')} dead letter(s)"
        )

    def lines(self) -> list[str]:
        head = f"trace of {self.matched} {self.query} since {self.since.isoformat(timespec='seconds')}"
        if self.matched == "nothing":
            head = f"nothing found for {self.query} since {self.since.isoformat(timespec='seconds')}"
        out = [head, f"  ({NOT_IN_KAFKA})"]
        for step in self.steps:
            when = step.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
            out.append(f"{when}  {step.kind:<11} {step.ref:<34} {step.text}")
        out.append(self.summary())
        return out


def _base_event_id(update_id: str) -> str:
    return update_id.removesuffix(":timed_out")


def _when(value: Any) -> str | None:
    return value.astimezone(UTC).isoformat() if isinstance(value, datetime) else None


def _delivery_steps(family: list[Seen], processed: Mapping[str, int], dead_ids: set[str]) -> list[Step]:
    steps = []
    copies: dict[str, list[Seen]] = {}
    for record in sorted(family, key=lambda r: (r.datum["received_at"], r.partition, r.offset)):
        copies.setdefault(str(record.datum["event_id"]), []).append(record)
    for event_id, records in copies.items():
        attempts: list[str | None] = []
        for index, record in enumerate(records):
            d = record.datum
            x_timestamp = d.get("x_timestamp") or str(int(d["sent_at"].timestamp()))
            new_attempt = x_timestamp not in attempts
            if new_attempt:
                attempts.append(x_timestamp)
            if index == 0:
                if event_id in processed:
                    verdict, why = "processed", "first copy: processed"
                elif event_id in dead_ids:
                    verdict, why = "dead_lettered", "first copy: dead-lettered by the processors"
                else:
                    verdict, why = "not_processed_yet", "first copy: no update yet (processors behind, or stopped)"
            elif processed.get(event_id, 0) > 1:
                verdict, why = "processed_again", "copy processed again (after the dedupe retention)"
            else:
                verdict, why = (
                    "duplicate",
                    f"duplicate of {records[0].partition}:{records[0].offset}: dropped by the dedupe",
                )
            attempt = f"attempt {attempts.index(x_timestamp) + 1}" + ("" if new_attempt else " (republished)")
            steps.append(
                Step(
                    at=d["received_at"],
                    kind="delivery",
                    ref=record.ref,
                    event_id=event_id,
                    text=f"{d['event_type']} {event_id} account={record.key} x-timestamp={x_timestamp} "
                    f"{attempt}; {why}",
                    detail={
                        "event_type": d["event_type"],
                        "account_key": record.key,
                        "sent_at": _when(d["sent_at"]),
                        "received_at": _when(d["received_at"]),
                        "x_timestamp": x_timestamp,
                        "webhook_id": d.get("webhook_id"),
                        "attempt": attempts.index(x_timestamp) + 1,
                        "copy": index + 1,
                        "verdict": verdict,
                    },
                )
            )
    return steps


def _update_step(record: Seen, related_to: str | None) -> Step:
    d = record.datum
    trigger = d.get("trigger") or {}
    outcome = d.get("outcome")
    account = d.get("account") or {}
    version = account.get("events_applied")
    parts = [f"update_id={d['update_id']} change={d['change']}"]
    if outcome:
        parts.append(f"job={outcome.get('job')} job_id={outcome.get('job_id')} outcome={outcome.get('outcome')}")
        if outcome.get("pending_since") is not None:
            parts.append(
                f"joined: pending since {_when(outcome.get('pending_since'))}, "
                f"resolved in {outcome.get('time_to_resolve_ms')} ms, "
                f"{outcome.get('deliveries_seen')} event(s) of the job"
            )
    parts.append(f"state version {version}")
    if related_to:
        parts.append(f"(same job as {related_to})")
    return Step(
        at=record.logged_at,
        kind="update",
        ref=record.ref,
        event_id=_base_event_id(str(d["update_id"])),
        text="; ".join(parts),
        detail={
            "update_id": d["update_id"],
            "change": d["change"],
            "account_id": d.get("account_id"),
            "trigger_event_id": trigger.get("event_id"),
            "trigger_received_at": _when(trigger.get("received_at")),
            "job": None if not outcome else outcome.get("job"),
            "job_id": None if not outcome else outcome.get("job_id"),
            "outcome": None if not outcome else outcome.get("outcome"),
            "pending_since": None if not outcome else _when(outcome.get("pending_since")),
            "time_to_resolve_ms": None if not outcome else outcome.get("time_to_resolve_ms"),
            "state_version": version,
            "related_to": related_to,
        },
    )


def _dead_letter_step(record: Seen) -> Step:
    d = record.datum
    source = ""
    if d.get("source_topic") is not None:
        source = f" (source {d['source_topic']} {d.get('source_partition')}:{d.get('source_offset')})"
    return Step(
        at=d["failed_at"],
        kind="dead_letter",
        ref=record.ref,
        event_id=d.get("event_id"),
        text=f"stage={d['stage']} reason={d['reason']} error={d['error']}{source}; "
        f"`deadletter show {record.partition}:{record.offset}`",
        detail={
            "stage": d["stage"],
            "reason": d["reason"],
            "error": d["error"],
            "event_type": d.get("event_type"),
            "source_topic": d.get("source_topic"),
            "source_partition": d.get("source_partition"),
            "source_offset": d.get("source_offset"),
        },
    )


def _job_of(update: Seen) -> tuple[str, str] | None:
    """(account, job id) of an update about a job, None for other updates."""
    job_id = (update.datum.get("outcome") or {}).get("job_id")
    return None if job_id is None else (str(update.datum["account_id"]), str(job_id))


def build_trace(query: str, since: datetime, family: list[Seen], updates: list[Seen], dead: list[Seen]) -> Trace:
    """The trace of `query` (an event_id or an account_id) from the records `collect` kept (pure)."""
    key = normalise_id(query)
    by_event = any(str(r.datum["event_id"]) == query for r in family) or any(
        _base_event_id(str(u.datum["update_id"])) == query for u in updates
    )
    by_event = by_event or any(d.datum.get("event_id") == query for d in dead)
    if by_event:
        family = [r for r in family if str(r.datum["event_id"]) == query]
        own = [u for u in updates if _base_event_id(str(u.datum["update_id"])) == query]
        jobs = {_job_of(u) for u in own} - {None}
        related = [u for u in updates if u not in own and _job_of(u) in jobs]
        dead = [d for d in dead if d.datum.get("event_id") == query or d.headers.get("event_id") == query]
        matched = "event_id"
    else:
        own = [u for u in updates if str(u.datum["account_id"]) == key]
        related = []
        family = [r for r in family if r.key == key]
        matched = "account_id" if family or own or dead else "nothing"
    processed: dict[str, int] = {}
    for update in own:
        base = _base_event_id(str(update.datum["update_id"]))
        if base == str(update.datum["update_id"]):
            processed[base] = processed.get(base, 0) + 1
    dead_ids = {
        str(d.datum["event_id"]) for d in dead if d.datum.get("stage") == "processor" and d.datum.get("event_id")
    }
    steps = _delivery_steps(family, processed, dead_ids)
    steps += [_update_step(u, None) for u in own]
    steps += [_update_step(u, query) for u in related]
    steps += [_dead_letter_step(d) for d in dead]
    steps.sort(key=lambda s: (s.at, {"delivery": 0, "update": 1, "dead_letter": 2}[s.kind]))
    return Trace(query, matched, since, steps)


# -- reading ---------------------------------------------------------------------------------------


def _raw_account_id(raw: bytes) -> str | None:
    """payload.account_id of a gateway dead letter's body, when it is JSON that has one."""
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    payload = body.get("payload") if isinstance(body, dict) else None
    value = payload.get("account_id") if isinstance(payload, dict) else None
    return normalise_id(value) if isinstance(value, str) and value else None


async def _partitions(consumer: AIOKafkaConsumer, topics: Iterable[str]) -> dict[str, list[TopicPartition]]:
    """Every partition of `topics`, read before any assignment (the client's metadata then covers the assigned
    topics only)."""
    existing = await consumer.topics()
    await consumer._client.force_metadata_update()
    out = {}
    for topic in topics:
        if topic not in existing:
            raise TraceError(f"topic {topic} does not exist (create it with `pinwheel-connector topics`)")
        out[topic] = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    return out


async def _read(
    consumer: AIOKafkaConsumer,
    partitions: Mapping[str, list[TopicPartition]],
    codec: Codec,
    topics: Iterable[str],
    since: datetime,
    until: datetime | None,
    wanted: Callable[[ConsumerRecord[bytes, bytes]], bool],
) -> list[Seen]:
    """The records of `topics` logged from `since` (to the end offsets seen now) that `wanted` keeps, decoded."""
    tps = [tp for topic in topics for tp in partitions[topic]]
    consumer.assign(tps)
    for tp in tps:
        await consumer.position(tp)  # resolved before the seeks, so they are not overridden
    starts = await consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in tps})
    ends = await consumer.end_offsets(tps)
    until_ms = None if until is None else int(until.timestamp() * 1000)
    kept: list[Seen] = []
    for tp in tps:
        start = starts.get(tp)
        if start is None or start.offset >= ends[tp]:
            continue
        consumer.seek(tp, start.offset)
        while await consumer.position(tp) < ends[tp]:
            batch = await consumer.getmany(tp, timeout_ms=500, max_records=2000)
            for message in batch.get(tp, []):
                if message.offset >= ends[tp] or (until_ms is not None and message.timestamp >= until_ms):
                    continue
                if not wanted(message):
                    continue
                try:
                    datum = await codec.decode_resolved(tp.topic, message.value or b"")
                except DecodeError as exc:
                    raise TraceError(f"{tp.topic} {tp.partition}:{message.offset} cannot be decoded: {exc}") from None
                headers = {name: value.decode("utf-8", "replace") for name, value in message.headers or ()}
                key = None if message.key is None else message.key.decode("utf-8", "replace")
                kept.append(Seen(tp.topic, tp.partition, message.offset, message.timestamp, key, headers, datum))
    return kept


def _header(message: ConsumerRecord[bytes, bytes], name: str) -> str | None:
    for key, value in message.headers or ():
        if key == name:
            return bytes(value).decode("utf-8", "replace")
    return None


async def collect(
    kafka: KafkaSettings, codec: Codec, query: str, since: datetime, until: datetime | None = None
) -> tuple[list[Seen], list[Seen], list[Seen]]:
    """(family records, updates, dead letters) that may concern `query` (an event_id or an account_id)."""
    key = normalise_id(query)
    key_bytes = key.encode()
    consumer = AIOKafkaConsumer(
        **kafka.client_kwargs(),
        client_id=f"{kafka.client_id_prefix}-trace",
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",  # the processors' outputs count once committed
        max_partition_fetch_bytes=MAX_MESSAGE_BYTES,
    )
    try:
        await consumer.start()
        partitions = await _partitions(consumer, [*FAMILY_TOPICS.values(), ACCOUNT_UPDATES_TOPIC, DEADLETTER_TOPIC])

        def family_wanted(m: ConsumerRecord[bytes, bytes]) -> bool:
            return m.key == key_bytes or _header(m, "event_id") == query

        family = await _read(consumer, partitions, codec, FAMILY_TOPICS.values(), since, until, family_wanted)
        accounts = {r.key.encode() for r in family if r.key} | {key_bytes}

        def update_wanted(m: ConsumerRecord[bytes, bytes]) -> bool:
            return m.key in accounts or (_header(m, "event_id") or "").removesuffix(":timed_out") == query

        updates = await _read(consumer, partitions, codec, [ACCOUNT_UPDATES_TOPIC], since, until, update_wanted)
        dead = await _read(consumer, partitions, codec, [DEADLETTER_TOPIC], since, until, lambda m: True)
    finally:
        await consumer.stop()
    account_keys = {a.decode() for a in accounts}
    dead = [
        d
        for d in dead
        if d.datum.get("event_id") == query
        or d.headers.get("event_id") == query
        or (d.datum.get("source_key") or b"").decode("utf-8", "replace") in account_keys
        or (d.datum.get("stage") == "gateway" and _raw_account_id(bytes(d.datum["raw"])) in account_keys)
    ]
    return family, updates, dead
