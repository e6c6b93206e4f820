"""`pinwheel-connector tail`: follow any of our topics, decode the Avro values, print JSON lines or a table."""

from __future__ import annotations

import asyncio
import base64
import sys
import uuid
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import IO, Any

import orjson
from aiokafka import AIOKafkaConsumer

from common.kafka_access import TopicOp, check_topics_of
from common.settings import KafkaSettings
from schemas import catalog
from schemas.codec import DecodeError, RegistryError, build_codec

ALIASES: Mapping[str, str] = {
    "updates": catalog.ACCOUNT_UPDATES_TOPIC,
    "state": catalog.ACCOUNT_STATE_TOPIC,
    "readiness": catalog.ACCOUNT_READINESS_TOPIC,
    "deadletter": catalog.DEADLETTER_TOPIC,
    **{family.value: topic for family, topic in catalog.FAMILY_TOPICS.items()},
}


def resolve_topic(name: str) -> str:
    topic = ALIASES.get(name, name)
    if topic not in catalog.DATA_TOPICS:
        choices = ", ".join(sorted(ALIASES))
        raise ValueError(f"unknown topic {name!r}: use a topic name or one of {choices}")
    return topic


def jsonable(value: Any) -> Any:
    """Decoded Avro → JSON: uuid/datetime/date as strings, bytes as base64, (name, record) unions as records."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], Mapping):
        return {"_record": value[0], **jsonable(value[1])}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value


def _short(value: Any, width: int) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def update_line(datum: Mapping[str, Any]) -> str:
    """One compact line per account update: account, change, job, outcome."""
    outcome = datum.get("outcome") or {}
    job = outcome.get("job") or ""
    result = outcome.get("outcome") or ""
    extra = ""
    if outcome.get("time_to_resolve_ms") is not None:
        extra = f" after {outcome['time_to_resolve_ms'] / 1000:.1f}s"
    account = str(datum.get("account_id", ""))[:8]
    return f"{account}  {_short(datum.get('change'), 34):<34} {_short(job, 26):<26} {result}{extra}".rstrip()


def table_line(topic: str, key: bytes | None, datum: Mapping[str, Any]) -> str:
    if topic == catalog.ACCOUNT_UPDATES_TOPIC:
        return update_line(datum)
    if topic == catalog.ACCOUNT_STATE_TOPIC:
        return f"{str(datum.get('account_id', ''))[:8]}  state  last_change={datum.get('last_change', '')}"
    if topic == catalog.ACCOUNT_READINESS_TOPIC:
        why = f"{datum.get('reason') or ''} {datum.get('blocked_by') or ''}"
        return f"{str(datum.get('account_id', ''))[:8]}  {datum.get('status', '')}  {why}".rstrip()
    if topic == catalog.DEADLETTER_TOPIC:
        return f"{_short(datum.get('event_id'), 36):<36} {datum.get('stage', '')}  {datum.get('reason', '')}"
    k = key.decode(errors="replace") if key else ""
    return f"{_short(k, 36):<36} {_short(datum.get('event_type'), 40):<40} {datum.get('event_id', '')}"


async def tail(
    topics: Sequence[str],
    kafka: KafkaSettings,
    *,
    fmt: str = "json",
    from_beginning: bool = False,
    max_records: int | None = None,
    idle_timeout_s: float | None = None,
    out: IO[str] | None = None,
) -> int:
    """Print records until interrupted, `max_records` printed, or `idle_timeout_s` without a record."""

    out = out or sys.stdout
    # Read on each topic, asked first: a consumer refused would say so only from deep inside its fetch loop.
    await check_topics_of(kafka, dict.fromkeys(topics, (TopicOp.READ,)), "tail-check")
    codec = build_codec()
    consumer = AIOKafkaConsumer(
        *topics,
        **kafka.client_kwargs(),
        client_id=f"{kafka.client_id_prefix}-tail",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        isolation_level="read_committed",
    )
    printed = 0
    loop = asyncio.get_running_loop()
    last = loop.time()
    try:
        await consumer.start()  # inside: a failed start leaves the client to stop as well
        while max_records is None or printed < max_records:
            batch = await consumer.getmany(timeout_ms=500)
            if not batch:
                if idle_timeout_s is not None and loop.time() - last > idle_timeout_s:
                    break
                continue
            last = loop.time()
            for tp in sorted(batch, key=lambda t: (t.topic, t.partition)):
                for record in batch[tp]:
                    try:
                        datum = await codec.decode_resolved(record.topic, record.value)
                    except (DecodeError, RegistryError) as exc:
                        print(f"# {record.topic}/{record.partition}@{record.offset}: {exc}", file=sys.stderr)
                        continue
                    if fmt == "json":
                        line = orjson.dumps(
                            {
                                "topic": record.topic,
                                "partition": record.partition,
                                "offset": record.offset,
                                "key": record.key.decode(errors="replace") if record.key else None,
                                "value": jsonable(datum),
                            }
                        ).decode()
                    else:
                        line = table_line(record.topic, record.key, datum)
                    print(line, file=out, flush=True)
                    printed += 1
                    if max_records is not None and printed >= max_records:
                        break
                if max_records is not None and printed >= max_records:
                    break
    finally:
        await consumer.stop()
    return printed
