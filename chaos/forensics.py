"""Where did a lost event go? Read every topic of a failed scenario's broker for the lost events' ids.

A post-mortem, run by `chaos.scenarios.execute` before the stack closes when `verify` finds updates lost: every
record of every non-internal topic is read twice, `read_uncommitted` and `read_committed`, and each record whose
value or headers contain a lost event's id (an Avro string is its UTF-8 bytes, so a byte search finds it without
decoding, sharing no code with the processors) is listed with its topic, partition, offset, timestamp and
whether a `read_committed` reader sees it (a record only `read_uncommitted` sees belongs to an aborted or still
open transaction). With it go the consumer groups' committed offsets and each partition's beginning, end and
last stable offsets. Written to `forensics.json` beside the scenario's logs; the broker's data directory is kept
too (`Stack.close(keep_data=True)`), to be read with Kafka's own tools.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from common.settings import KafkaSettings

#: Longest a scan waits for a partition to reach its end offset.
SCAN_TIMEOUT_S = 60.0


async def _scan(
    kafka: KafkaSettings, isolation: str, topics: dict[str, list[int]], needles: dict[bytes, str]
) -> tuple[dict[tuple[str, int, int], dict[str, Any]], dict[str, dict[int, int]], dict[str, dict[int, int]]]:
    """(hits by (topic, partition, offset), end offsets, beginning offsets) as a reader of `isolation` sees them."""
    consumer = AIOKafkaConsumer(
        **kafka.client_kwargs(), enable_auto_commit=False, isolation_level=isolation, max_partition_fetch_bytes=4 << 20
    )
    await consumer.start()
    hits: dict[tuple[str, int, int], dict[str, Any]] = {}
    ends: dict[str, dict[int, int]] = {}
    beginnings: dict[str, dict[int, int]] = {}
    try:
        tps = [TopicPartition(topic, p) for topic, partitions in topics.items() for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        start = await consumer.beginning_offsets(tps)
        for tp in tps:
            ends.setdefault(tp.topic, {})[tp.partition] = end[tp]
            beginnings.setdefault(tp.topic, {})[tp.partition] = start[tp]
        remaining = {tp for tp in tps if end[tp] > start[tp]}
        deadline = time.monotonic() + SCAN_TIMEOUT_S
        while remaining and time.monotonic() < deadline:
            batch = await consumer.getmany(*remaining, timeout_ms=500, max_records=50_000)
            for tp, records in batch.items():
                for record in records:
                    blobs = [record.value or b"", *(value or b"" for _, value in record.headers)]
                    for needle, event_id in needles.items():
                        if any(needle in blob for blob in blobs):
                            hits[(tp.topic, tp.partition, record.offset)] = {
                                "event_id": event_id,
                                "topic": tp.topic,
                                "partition": tp.partition,
                                "offset": record.offset,
                                "timestamp_ms": record.timestamp,
                                "key": (record.key or b"").decode(errors="replace"),
                                "headers": sorted({name for name, _ in record.headers}),
                            }
            for tp in list(remaining):
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return hits, ends, beginnings


async def _group_offsets(admin: AIOKafkaAdminClient) -> dict[str, dict[str, int]]:
    """Every consumer group's committed offsets, "topic[partition]" -> offset."""
    out: dict[str, dict[str, int]] = {}
    for group in [str(group[0]) for group in await admin.list_consumer_groups()]:
        offsets = await admin.list_consumer_group_offsets(group)
        out[group] = {f"{tp.topic}[{tp.partition}]": meta.offset for tp, meta in sorted(offsets.items())}
    return out


async def investigate(kafka: KafkaSettings, lost: Sequence[str], topics: Sequence[str] = ()) -> dict[str, Any]:
    """Scan `topics` (by default every one but Kafka's own) for the lost events' ids: the findings, JSON-ready."""
    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
    await admin.start()
    try:
        names = list(topics) or sorted(t for t in await admin.list_topics() if not t.startswith("__"))
        partitions = {
            d["topic"]: sorted(p["partition"] for p in d["partitions"]) for d in await admin.describe_topics(names)
        }
        groups = await _group_offsets(admin)
    finally:
        await admin.close()
    needles = {event_id.encode(): event_id for event_id in lost}
    uncommitted, ends, beginnings = await _scan(kafka, "read_uncommitted", partitions, needles)
    committed, stable, _ = await _scan(kafka, "read_committed", partitions, needles)
    found: dict[str, list[dict[str, Any]]] = {event_id: [] for event_id in lost}
    for key, hit in sorted(uncommitted.items()):
        found[hit["event_id"]].append(hit | {"read_committed_sees_it": key in committed})
    return {
        "lost": list(lost),
        "records": found,
        "partitions": {
            topic: {
                str(p): {"beginning": beginnings[topic][p], "end": ends[topic][p], "last_stable": stable[topic][p]}
                for p in sorted(ends[topic])
            }
            for topic in ends
        },
        "group_offsets": groups,
    }


def summary(report: dict[str, Any]) -> list[str]:
    """One line per lost event: where its records are."""
    lines = []
    for event_id, records in report["records"].items():
        places = ", ".join(
            f"{r['topic']}[{r['partition']}]@{r['offset']}{'' if r['read_committed_sees_it'] else ' (uncommitted)'}"
            for r in records
        )
        lines.append(f"{event_id}: {places or 'in no topic'}")
    return lines
