"""A downstream team's reader of the account updates, sharing no code with what it checks.

librdkafka (confluent-kafka) with `isolation.level=read_committed`, the records decoded with plain fastavro from
the .avsc files (avro-single-object framing: `C3 01`, the CRC-64-AVRO fingerprint, the body), never through the
project's codec or clients. The caller's librdkafka configuration carries the connection (SASL_SSL, mTLS, ...) and
a `group.id` (librdkafka looks its coordinator up even when partitions are assigned).
"""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import fastavro
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from fastavro.schema import fingerprint, to_parsing_canonical_form

ROOT = Path(__file__).resolve().parents[1]
UPDATES_TOPIC = "pinwheel.account_updates.v1"  # as a downstream team writes it: not imported from the catalog


def account_update_decoder() -> Callable[[bytes], dict[str, Any]]:
    """avro-single-object from the AccountUpdate .avsc files, with plain fastavro."""
    by_fingerprint: dict[bytes, Any] = {}
    for path in sorted((ROOT / "schemas" / "avro").glob("AccountUpdate.v*.avsc")):
        schema = fastavro.parse_schema(json.loads(path.read_text()), named_schemas={})
        by_fingerprint[bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))] = schema

    def decode(value: bytes) -> dict[str, Any]:
        assert value[:2] == b"\xc3\x01", "not avro-single-object"
        datum = fastavro.schemaless_reader(io.BytesIO(value[10:]), by_fingerprint[value[2:10]], None)
        assert isinstance(datum, dict)
        return datum

    return decode


def read_updates(
    config: Mapping[str, Any], run: set[str], expected: frozenset[str], timeout_s: float, since_ms: int = 0
) -> Counter[str]:
    """Update ids of the `run`'s events on the updates topic (read_committed, from the start, records written
    from `since_ms` on: the captured sandbox deliveries keep their ids in every run), until every one of
    `expected` is there and a few quiet seconds pass (a late duplicate would show), or `timeout_s`."""
    consumer = Consumer({**config, "enable.auto.commit": False, "isolation.level": "read_committed"})
    decode = account_update_decoder()
    seen: Counter[str] = Counter()
    try:
        partitions = consumer.list_topics(UPDATES_TOPIC, timeout=30).topics[UPDATES_TOPIC].partitions
        consumer.assign([TopicPartition(UPDATES_TOPIC, p, OFFSET_BEGINNING) for p in partitions])
        deadline, quiet_until = time.monotonic() + timeout_s, None
        while time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None:
                if expected <= seen.keys():
                    quiet_until = quiet_until or time.monotonic() + 5
                    if time.monotonic() > quiet_until:
                        break
                continue
            if message.error():
                raise KafkaException(message.error())
            if message.timestamp()[1] < since_ms:
                continue
            value = message.value()
            assert value is not None
            update_id = str(decode(value)["update_id"])
            if update_id.removesuffix(":timed_out") in run:
                seen[update_id] += 1
    finally:
        consumer.close()
    return seen
