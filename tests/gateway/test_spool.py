"""The spool: framing, torn tails, recovery, cursor, locking, group commit (no Kafka)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.kafka_record import KafkaRecord, decode_record, encode_record
from gateway.spool.directories import SpoolLockedError, claim_worker_dir, try_lock
from gateway.spool.frames import FRAME_OVERHEAD, frame, scan, scan_resyncing
from gateway.spool.segments import Spool
from gateway.spool.writer import SpoolFullError, SpoolWriter

records = st.builds(
    KafkaRecord,
    topic=st.text(min_size=1, max_size=40),
    key=st.none() | st.binary(max_size=64),
    value=st.binary(max_size=512),
    headers=st.lists(st.tuples(st.text(max_size=20), st.binary(max_size=40)), max_size=6).map(tuple),
    timestamp_ms=st.integers(0, 2**63 - 1),
    schema_id_pending=st.booleans(),
)


@given(records)
def test_record_encoding_roundtrip(record: KafkaRecord) -> None:
    assert decode_record(encode_record(record)) == record


@given(st.lists(st.binary(max_size=300), max_size=20), st.data())
def test_scan_never_misreads_a_torn_or_corrupted_tail(payloads: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(frame(p) for p in payloads)
    frames, end = scan(stream)
    assert [stream[o : o + n] for o, n in frames] == payloads
    assert end == len(stream)
    # Cut anywhere: only whole frames before the cut come back, and `end` marks where to truncate.
    cut = data.draw(st.integers(0, len(stream)))
    frames, end = scan(stream[:cut])
    got = [stream[o : o + n] for o, n in frames]
    assert got == payloads[: len(got)]
    assert end <= cut
    assert end == sum(FRAME_OVERHEAD + len(p) for p in got)
    # Flip a byte: the frame holding it (and everything after) is dropped, never returned changed.
    if stream:
        at = data.draw(st.integers(0, len(stream) - 1))
        bad = bytearray(stream)
        bad[at] ^= 0xFF
        frames, end = scan(bytes(bad))
        got = [bytes(bad[o : o + n]) for o, n in frames]
        assert got == payloads[: len(got)]
        assert end <= at + 1 or end <= len(stream)


@given(st.lists(records, min_size=3, max_size=12), st.data())
def test_resync_loses_exactly_the_damaged_frame(items: list[KafkaRecord], data: st.DataObject) -> None:
    payloads = [encode_record(r) for r in items]
    stream = bytearray(b"".join(frame(p) for p in payloads))
    victim = data.draw(st.integers(0, len(payloads) - 2))  # not the last: that one is a torn tail
    start = sum(FRAME_OVERHEAD + len(p) for p in payloads[:victim])
    at = data.draw(st.integers(start, start + FRAME_OVERHEAD + len(payloads[victim]) - 1))
    stream[at] ^= data.draw(st.integers(1, 255))
    frames, damaged, end = scan_resyncing(bytes(stream))
    got = [bytes(stream[o : o + n]) for o, n in frames]
    if got == payloads:  # the flip landed on a byte the frame does not check (impossible: all are)
        raise AssertionError("a damaged frame was read as valid")
    assert got == payloads[:victim] + payloads[victim + 1 :]
    assert [(d.start, d.end) for d in damaged] == [(start, start + FRAME_OVERHEAD + len(payloads[victim]))]
    assert end == len(stream)


def open_spool(directory: Path, max_bytes: int = 1 << 30, segment_bytes: int = 1 << 20) -> Spool:
    return Spool.open(directory, segment_bytes=segment_bytes, max_bytes=max_bytes)


def test_append_read_commit_and_restart(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "w", segment_bytes=64 * 1024)
    payloads = [os.urandom(1000) + bytes([i % 256]) for i in range(300)]  # ~5 segments
    for start in range(0, 300, 7):
        assert spool.append_many(payloads[start : start + 7]) == len(payloads[start : start + 7])
    assert spool.pending_records == 300
    assert len(list((tmp_path / "w").glob("*.seg"))) > 3
    batch, position = spool.read(spool.cursor, 100, 1 << 30)
    assert batch == payloads[:100]
    spool.commit(position, 100, sum(len(p) + FRAME_OVERHEAD for p in batch))
    spool.close()
    # Restart: the cursor survives, published segments are gone, the rest reads back in order.
    again = open_spool(tmp_path / "w", segment_bytes=64 * 1024)
    assert again.pending_records == 200
    assert list(again.iter_all()) == payloads[100:]
    batch, position = again.read(again.cursor, 1000, 1 << 30)
    again.commit(position, len(batch), sum(len(p) + FRAME_OVERHEAD for p in batch))
    assert again.pending_records == 0
    assert again.pending_bytes == 0
    assert list((tmp_path / "w").glob("*.seg")) == []
    assert again.append_many([b"after"]) == 1
    again.close()
    assert list(open_spool(tmp_path / "w").iter_all()) == [b"after"]


def test_torn_tail_is_truncated_not_misread(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "w")
    spool.append_many([b"one", b"two", b"three"])
    spool.close()
    segment = next((tmp_path / "w").glob("*.seg"))
    good = segment.stat().st_size
    # A crash mid-append: a header promising 100 bytes, and only 10 of them.
    with segment.open("ab") as fh:
        fh.write(len(b"x" * 100).to_bytes(4, "big") + zlib.crc32(b"x" * 100).to_bytes(4, "big") + b"x" * 10)
    spool = open_spool(tmp_path / "w")
    assert list(spool.iter_all()) == [b"one", b"two", b"three"]
    assert spool.truncated_bytes == 18
    assert segment.stat().st_size == good
    spool.append_many([b"four"])  # appends continue right after the last good frame
    spool.close()
    assert list(open_spool(tmp_path / "w").iter_all()) == [b"one", b"two", b"three", b"four"]


def test_corrupted_last_frame_is_dropped(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "w")
    spool.append_many([b"keep", b"garbled"])
    spool.close()
    segment = next((tmp_path / "w").glob("*.seg"))
    data = bytearray(segment.read_bytes())
    data[-1] ^= 0x01
    segment.write_bytes(bytes(data))
    assert list(open_spool(tmp_path / "w").iter_all()) == [b"keep"]


def hundred_records() -> list[bytes]:
    return [encode_record(KafkaRecord("pinwheel.income.v1", b"acct", b"v%03d" % i, (), i)) for i in range(100)]


def frame_offsets(data: bytes) -> list[int]:
    """Frame starts, walked with the documented layout (u32 length | u32 crc | payload), not with `scan`."""
    offsets, pos = [], 0
    while pos < len(data):
        offsets.append(pos)
        pos += FRAME_OVERHEAD + int.from_bytes(data[pos : pos + 4], "big")
    return offsets


@pytest.mark.parametrize("where", ["payload", "length", "checksum"])
def test_a_damaged_middle_frame_is_quarantined_and_only_it_is_lost(tmp_path: Path, where: str) -> None:
    payloads = hundred_records()
    spool = open_spool(tmp_path / "w")
    assert spool.append_many(payloads) == 100
    spool.close()
    segment = next((tmp_path / "w").glob("*.seg"))
    data = bytearray(segment.read_bytes())
    start = frame_offsets(bytes(data))[49]  # frame 50 of 100
    original = bytes(data[start : start + FRAME_OVERHEAD + len(payloads[49])])
    at = {"length": start + 3, "checksum": start + 5, "payload": start + FRAME_OVERHEAD + 12}[where]
    data[at] ^= 0x5A
    segment.write_bytes(bytes(data))

    spool = open_spool(tmp_path / "w")
    assert list(spool.iter_all()) == payloads[:49] + payloads[50:]  # 99 in order
    assert spool.pending_records == 99
    assert spool.quarantined_frames == 1
    assert spool.truncated_bytes == 0
    quarantined = list((tmp_path / "w").glob("*.quarantine"))
    assert len(quarantined) == 1
    damaged = bytearray(original)
    damaged[at - start] ^= 0x5A
    assert quarantined[0].read_bytes() == bytes(damaged)  # the damaged bytes, exactly, kept for a post-mortem
    spool.append_many([b"after"])  # appends continue behind the recovered frames
    spool.close()
    again = open_spool(tmp_path / "w")  # the repair is durable: nothing is quarantined twice
    assert list(again.iter_all()) == payloads[:49] + payloads[50:] + [b"after"]
    assert again.quarantined_frames == 0
    again.close()


def test_damage_then_a_torn_tail_quarantines_one_and_truncates_the_tail(tmp_path: Path) -> None:
    payloads = hundred_records()
    spool = open_spool(tmp_path / "w")
    spool.append_many(payloads)
    spool.close()
    segment = next((tmp_path / "w").glob("*.seg"))
    data = bytearray(segment.read_bytes())
    data[frame_offsets(bytes(data))[9] + FRAME_OVERHEAD + 1] ^= 0x01
    torn = frame(encode_record(KafkaRecord("t", None, b"x" * 100, (), 0)))[:-30]  # a crash mid-append
    segment.write_bytes(bytes(data) + torn)
    spool = open_spool(tmp_path / "w")
    assert list(spool.iter_all()) == payloads[:9] + payloads[10:]
    assert spool.quarantined_frames == 1
    assert spool.truncated_bytes == len(torn)
    spool.close()


def test_size_limit_refuses_in_order(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "w", max_bytes=1 << 20)
    big = b"x" * (400 * 1024)
    assert spool.append_many([big, big, big, b"small"]) == 2  # "small" would fit but must not overtake
    assert spool.append_many([big]) == 0


def test_lock_is_exclusive_and_dies_with_the_process(tmp_path: Path) -> None:
    first = open_spool(tmp_path / "w")
    with pytest.raises(SpoolLockedError):
        open_spool(tmp_path / "w")
    # A second claim takes the next free directory; after close the first one is free again.
    directory, fd = claim_worker_dir(tmp_path)
    assert directory.name == "worker-0" or directory != tmp_path / "w"
    os.close(fd)
    first.close()
    assert try_lock(tmp_path / "w") is not None
    # A process killed with -9 leaves its directory claimable (flock is released by the kernel).
    code = (
        "import os, signal, sys; from gateway.spool.directories import claim_worker_dir; from pathlib import Path;"
        "d, fd = claim_worker_dir(Path(sys.argv[1])); print(d.name, flush=True); os.kill(os.getpid(), 9)"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "root")], capture_output=True, text=True)
    assert result.stdout.strip() == "worker-0"
    directory, fd = claim_worker_dir(tmp_path / "root")
    assert directory.name == "worker-0"
    os.close(fd)


async def test_group_commit_orders_and_batches(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "w")
    calls: list[int] = []
    original = spool.append_many

    def counting(payloads: list[bytes]) -> int:
        calls.append(len(payloads))
        return original(payloads)

    spool.append_many = counting  # type: ignore[method-assign]
    with ThreadPoolExecutor(max_workers=1) as executor:
        writer = SpoolWriter(spool, executor)
        payloads = [f"event-{i}".encode() for i in range(500)]
        await asyncio.gather(*(writer.enqueue(p) for p in payloads))
        assert list(spool.iter_all()) == payloads
        assert len(calls) < 50  # concurrent appends share fsyncs
        assert sum(calls) == 500


async def test_writer_reports_full(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "w", max_bytes=1 << 20)
    with ThreadPoolExecutor(max_workers=1) as executor:
        writer = SpoolWriter(spool, executor)
        results = await asyncio.gather(*(writer.enqueue(b"y" * (300 * 1024)) for _ in range(5)), return_exceptions=True)
        assert [isinstance(r, SpoolFullError) for r in results] == [False, False, False, True, True]
