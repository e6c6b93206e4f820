"""The spool knows the received_at of its oldest waiting record: after appends, partial and full drains,
and after a restart (recovered from disk); the publisher turns it into the spool-age gauge."""

from __future__ import annotations

from pathlib import Path

from gateway.kafka_record import KafkaRecord, encode_record
from gateway.spool.frames import FRAME_OVERHEAD
from gateway.spool.segments import Spool


def record(ts: int) -> bytes:
    return encode_record(KafkaRecord("pinwheel.account.v1", b"k", b"v" * 100, (("event_id", b"e"),), ts))


def test_oldest_timestamp_follows_appends_drains_and_restarts(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path, segment_bytes=300, max_bytes=1 << 20)  # small segments: several files
    assert spool.oldest_timestamp_ms is None
    spool.append_many([record(1_000), record(2_000)])
    spool.append_many([record(3_000), record(4_000)])
    assert spool.oldest_timestamp_ms == 1_000

    payloads, position = spool.read(spool.cursor, 3, 1 << 20)
    spool.commit(position, 3, sum(len(p) + FRAME_OVERHEAD for p in payloads))
    assert spool.oldest_timestamp_ms == 4_000
    spool.close()

    reopened = Spool.open(tmp_path, segment_bytes=300, max_bytes=1 << 20)
    assert reopened.oldest_timestamp_ms == 4_000  # recovered from the cursor and the segments
    payloads, position = reopened.read(reopened.cursor, 10, 1 << 20)
    reopened.commit(position, len(payloads), sum(len(p) + FRAME_OVERHEAD for p in payloads))
    assert reopened.oldest_timestamp_ms is None
    reopened.append_many([record(9_000)])
    assert reopened.oldest_timestamp_ms == 9_000
    reopened.close()
