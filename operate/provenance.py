"""Re-prove a family record's origin offline: `pinwheel-connector verify-record`.

Since schema v2 a family record keeps the `x-pinwheel-signature` and `x-timestamp` headers the gateway verified,
beside `raw_body`, the exact bytes Pinwheel signed. Anyone holding the API secret can then recompute the signature
long after the delivery, with the gateway's own algorithm (`gateway.signature.verify`), without trusting us:

- the signature must match the stored raw body and x-timestamp for one of the secrets given; and
- the record's fields must be what the raw body says: the body is read again by today's gateway rules
  (`build_family_record`) and compared with the decoded record, so a record whose typed fields were changed
  after the fact is not verified either, although its raw body still is Pinwheel's.

The timestamp window is not applied (a record is verified long after it was sent). `webhook_id`,
`pinwheel_version` and `received_at` are not covered by Pinwheel's signature: they are ours.

The check (`verify_datum`) is pure; reading the record (from Kafka by topic, partition and offset, or from a file
holding the record value) is the thin shell.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from common.settings import KafkaSettings
from gateway import signature
from schemas.catalog import FAMILY_TOPIC_NAMES
from schemas.codec import Codec, DecodeError
from schemas.envelope import PayloadError, build_family_record
from schemas.store import TOPIC_RECORDS, load_store
from schemas.topics import MAX_MESSAGE_BYTES

#: Fields a reading of the raw body determines (compared); the others are the gateway's own.
_SIGNED_FIELDS = ("event_id", "event_type", "sent_at", "payload", "extra_json", "envelope_extra_json")


class RecordUnavailable(RuntimeError):
    """The record asked for cannot be read (no such topic, partition or offset, not a family record...)."""


@dataclass(frozen=True)
class StoredRecord:
    """A family record's value bytes and where they come from."""

    topic: str
    value: bytes
    partition: int | None = None
    offset: int | None = None
    source: str | None = None  # a file name when read from a file

    @property
    def where(self) -> str:
        if self.source is not None:
            return f"{self.topic} record from {self.source}"
        return f"{self.topic} {self.partition}:{self.offset}"


@dataclass(frozen=True)
class Verification:
    verified: bool
    reason: str
    event_id: str | None = None
    event_type: str | None = None

    def line(self, record: StoredRecord) -> str:
        verdict = "verified" if self.verified else "not verified"
        about = f" ({self.event_type} {self.event_id})" if self.event_id else ""
        return f"{verdict}: {record.where}{about}: {self.reason}"


_REFUSALS = {
    signature.Reason.MISSING_SIGNATURE: "the record carries no x-pinwheel-signature (written before schema v2)",
    signature.Reason.MALFORMED_SIGNATURE: "the stored x-pinwheel-signature has no well-formed v2 entry",
    signature.Reason.MISSING_TIMESTAMP: "the record carries no x-timestamp (written before schema v2)",
    signature.Reason.MALFORMED_TIMESTAMP: "the stored x-timestamp is not epoch seconds",
    signature.Reason.BAD_SIGNATURE: "the signature does not match the stored raw_body and x-timestamp for any "
    "secret given (a wrong secret, or raw_body or x-timestamp changed after delivery)",
}


def verify_datum(datum: Mapping[str, Any], secrets: Sequence[bytes], codec: Codec, topic: str) -> Verification:
    """The verdict on one decoded family record (pure; `codec` only re-encodes, no I/O)."""
    event_id, event_type = datum.get("event_id"), datum.get("event_type")
    stored_signature, stored_timestamp = datum.get("x_pinwheel_signature"), datum.get("x_timestamp")
    headers = {}
    if stored_signature is not None:
        headers[signature.SIGNATURE_HEADER] = stored_signature
    if stored_timestamp is not None:
        headers[signature.TIMESTAMP_HEADER] = stored_timestamp
    raw_body = bytes(datum["raw_body"])
    text = (stored_timestamp or "").strip()
    now = float(text) if text.isascii() and text.isdigit() else 0.0  # no window: only the HMAC counts offline
    verdict = signature.verify(headers, raw_body, secrets, now=now, tolerance_s=math.inf)
    if isinstance(verdict, signature.Refused):
        return Verification(False, _REFUSALS.get(verdict.reason, verdict.reason.value), event_id, event_type)
    differing = _fields_not_from_body(datum, codec, topic)
    if differing:
        return Verification(
            False,
            f"the signature matches raw_body, but the record's {', '.join(differing)} differ from what raw_body "
            "says (the record was changed after the gateway wrote it)",
            event_id,
            event_type,
        )
    which = f"secret {verdict.secret_index + 1} of {len(secrets)}"
    return Verification(
        True,
        f"x-pinwheel-signature matches raw_body and x-timestamp {text} with {which}; the record's fields are "
        "what raw_body says",
        event_id,
        event_type,
    )


def _fields_not_from_body(datum: Mapping[str, Any], codec: Codec, topic: str) -> list[str]:
    """The signed-content fields of `datum` that a fresh reading of its raw body gives differently."""
    try:
        again = build_family_record(
            bytes(datum["raw_body"]),
            webhook_id=datum.get("webhook_id"),
            pinwheel_version=datum.get("pinwheel_version"),
            sent_at=datum["sent_at"],
            received_at=datum["received_at"],
            signature=datum.get("x_pinwheel_signature"),
            timestamp=datum.get("x_timestamp"),
        )
    except PayloadError:
        return ["payload"]  # today's rules reject the body: it cannot be what produced this record
    if again.topic != topic:
        return ["topic"]
    expected = codec.decode(topic, codec.encode(topic, again.value))  # both sides through the same Avro reading
    differing = [name for name in _SIGNED_FIELDS if name != "sent_at" and expected.get(name) != datum.get(name)]
    timestamp = (datum.get("x_timestamp") or "").strip()
    if timestamp.isdigit() and int(datum["sent_at"].timestamp()) != int(timestamp):
        differing.append("sent_at")
    return differing


def verify_stored(record: StoredRecord, secrets: Sequence[bytes], codec: Codec) -> Verification:
    """Decode `record` and verify it; raises RecordUnavailable when it is not a decodable family record."""
    if record.topic not in FAMILY_TOPIC_NAMES:
        raise RecordUnavailable(f"{record.topic} is not a family topic: only family records carry a signature")
    try:
        datum = codec.decode(record.topic, record.value)
    except DecodeError as exc:
        raise RecordUnavailable(f"{record.where} cannot be decoded: {exc}") from None
    return verify_datum(datum, secrets, codec, record.topic)


def topic_of_value(value: bytes) -> str | None:
    """The family topic of a single-object record value, from its writer schema's fingerprint (None: unknown)."""
    if value[:2] != b"\xc3\x01":
        return None
    version = load_store().by_fingerprint(value[2:10])
    if version is None:
        return None
    return next((t for t, name in TOPIC_RECORDS.items() if name == version.fullname and t in FAMILY_TOPIC_NAMES), None)


def read_file(path: Path, topic: str | None) -> StoredRecord:
    """A record value saved to a file (e.g. `kcat -C -t T -p P -o O -c 1 -f '%s'`)."""
    try:
        value = path.read_bytes()
    except OSError as exc:
        raise RecordUnavailable(f"cannot read {path}: {exc.strerror}") from None
    topic = topic or topic_of_value(value)
    if topic is None:
        raise RecordUnavailable(f"{path}: not a single-object family record; name its topic with --topic")
    return StoredRecord(topic, value, source=str(path))


async def read_from_kafka(kafka: KafkaSettings, topic: str, partition: int, offset: int) -> StoredRecord:
    """The committed record at `topic` `partition`:`offset`."""
    consumer = AIOKafkaConsumer(
        **kafka.client_kwargs(),
        client_id=f"{kafka.client_id_prefix}-verify-record",
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_partition_fetch_bytes=MAX_MESSAGE_BYTES,
    )
    try:
        await consumer.start()
        if topic not in await consumer.topics():
            raise RecordUnavailable(f"topic {topic} does not exist")
        await consumer._client.force_metadata_update()
        if partition not in (consumer.partitions_for_topic(topic) or set()):
            raise RecordUnavailable(f"{topic} has no partition {partition}")
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        await consumer.position(tp)  # the initial position resolved first, so the seek below is not overridden
        beginning = (await consumer.beginning_offsets([tp]))[tp]
        end = (await consumer.end_offsets([tp]))[tp]
        if not beginning <= offset < end:
            raise RecordUnavailable(
                f"no record at {topic} {partition}:{offset} (the partition holds {beginning}-{end - 1})"
            )
        consumer.seek(tp, offset)
        while await consumer.position(tp) < end:
            for message in (await consumer.getmany(tp, timeout_ms=500, max_records=1)).get(tp, []):
                if message.offset != offset:
                    raise RecordUnavailable(
                        f"no record at {topic} {partition}:{offset} (a transaction marker or aborted)"
                    )
                return StoredRecord(topic, message.value or b"", partition, offset)
        raise RecordUnavailable(f"no record at {topic} {partition}:{offset}")
    finally:
        await consumer.stop()
