"""The spool on a real full disk (a small tmpfs): a failed append leaves nothing behind, the drain
commits and frees space without any, recovery repairs in place and needs no room, damage met while
draining is skipped (no Kafka here; tests/gateway/test_full_disk.py is the gateway end to end)."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.kafka_record import KafkaRecord, encode_record
from gateway.spool.cursor import CURSOR_FILE, parse_cursor
from gateway.spool.frames import FRAME_OVERHEAD, frame
from gateway.spool.segments import Spool
from tests.small_fs import fill, free_bytes, small_filesystem


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_filesystem(tmp_path / "disk", 1024 * 1024) as mounted:
        yield mounted


def records(n: int, size: int = 9_001, first: int = 0) -> list[bytes]:
    """Encoded records of an odd size (frames never line up with pages: a full disk cuts them short)."""
    return [encode_record(KafkaRecord("t", b"k", b"%06d" % i + b"v" * size, (), i)) for i in range(first, first + n)]


def open_spool(directory: Path) -> Spool:
    return Spool.open(directory, segment_bytes=64 << 20, max_bytes=1 << 30)


def segment_sizes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("*.seg"))


def fill_spool(spool: Spool, batch: int = 3) -> tuple[list[bytes], int]:
    """Append batches of records until the disk refuses one; (the records taken, how many refusals)."""
    accepted: list[bytes] = []
    first = 0
    while True:
        payloads = records(batch, first=first)
        first += batch
        try:
            taken = spool.append_many(payloads)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            return accepted, first
        assert taken == batch
        accepted += payloads


def test_a_failed_append_leaves_no_partial_frame(disk: Path) -> None:
    (disk / "ballast").write_bytes(b"\0" * 200_000)  # someone else's file, deleted later
    spool = open_spool(disk / "w")
    accepted, _ = fill_spool(spool)
    assert len(accepted) > 30
    # Nothing of the refused batch is left: the segment ends with the last frame taken.
    assert segment_sizes(disk / "w") == sum(FRAME_OVERHEAD + len(p) for p in accepted)
    with pytest.raises(OSError, match="No space left"):  # still full
        spool.append_many(records(1, first=10_000))
    assert segment_sizes(disk / "w") == sum(FRAME_OVERHEAD + len(p) for p in accepted)
    (disk / "ballast").unlink()  # space returns: appends go on right behind the last good frame
    later = records(5, first=20_000)
    assert spool.append_many(later) == 5
    assert list(spool.iter_all()) == accepted + later
    assert spool.pending_records == len(accepted) + 5
    spool.close()
    again = open_spool(disk / "w")
    assert list(again.iter_all()) == accepted + later
    assert again.truncated_bytes == 0
    assert again.quarantined_frames == 0
    again.close()


def test_the_drain_commits_and_frees_space_on_a_full_disk(disk: Path) -> None:
    spool = open_spool(disk / "w")
    accepted, _ = fill_spool(spool)
    fill(disk / "ballast")  # not a byte left, not even for a new file
    assert free_bytes(disk) < 4096
    batch, position = spool.read(spool.cursor, 10, 1 << 30)
    spool.commit(position, 10, sum(FRAME_OVERHEAD + len(p) for p in batch))  # the cursor needs no new block
    assert parse_cursor((disk / "w" / CURSOR_FILE).read_bytes())[1] == position
    spool.close()
    again = open_spool(disk / "w")  # restart on the full disk
    assert list(again.iter_all()) == accepted[10:]
    rest, position = again.read(again.cursor, 10_000, 1 << 30)
    again.commit(position, len(rest), sum(FRAME_OVERHEAD + len(p) for p in rest))
    assert list((disk / "w").glob("*.seg")) == []  # drained: the space is free again
    assert free_bytes(disk) > 300_000
    again.close()


def test_recovery_on_a_full_disk_repairs_in_place(disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = open_spool(disk / "w")
    payloads = records(60, size=2_000)
    assert spool.append_many(payloads) == 60
    spool.close()
    segment = next((disk / "w").glob("*.seg"))
    data = bytearray(segment.read_bytes())
    damaged_at = sum(FRAME_OVERHEAD + len(p) for p in payloads[:30])
    data[damaged_at + FRAME_OVERHEAD + 5] ^= 0x40  # frame 31: disk damage, valid frames after it
    torn = frame(records(1, first=99)[0])[:-700]  # a crash mid-append
    segment.write_bytes(bytes(data) + torn)
    fill(disk / "ballast")
    assert free_bytes(disk) < 4096

    with caplog.at_level(logging.WARNING, logger="gateway.spool.segments"):
        spool = open_spool(disk / "w")  # no room for a copy of anything: repaired in place
    assert list(spool.iter_all()) == payloads[:30] + payloads[31:]
    assert spool.pending_records == 59
    assert spool.quarantined_frames == 1
    assert spool.truncated_bytes == len(torn)
    assert segment.stat().st_size == len(data)  # torn tail cut, damaged frame left where it is (skipped)
    assert not list((disk / "w").glob("*.tmp"))
    assert not list((disk / "w").glob("*.quarantine"))  # no room for the copy: skipped all the same
    [logged] = [r for r in caplog.records if r.getMessage() == "damaged spool frame quarantined"]
    assert logged.quarantine_file is None  # type: ignore[attr-defined]
    assert logged.offset == damaged_at  # type: ignore[attr-defined]
    # Draining works on the same full disk, and the damage is skipped, never raised.
    batch, position = spool.read(spool.cursor, 1000, 1 << 30)
    spool.commit(position, len(batch), sum(FRAME_OVERHEAD + len(p) for p in batch))
    assert spool.pending_records == 0
    spool.close()


def test_damage_found_while_draining_is_skipped_and_counted(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "w")
    payloads = records(100, size=300)
    assert spool.append_many(payloads) == 100
    first, position = spool.read(spool.cursor, 10, 1 << 30)
    assert first == payloads[:10]
    segment = next((tmp_path / "w").glob("*.seg"))
    at = sum(FRAME_OVERHEAD + len(p) for p in payloads[:50]) + FRAME_OVERHEAD + 40
    with segment.open("r+b") as fh:  # the disk changes under the running spool
        fh.seek(at)
        fh.write(b"\xff\xfe")
    rest, end = spool.read(position, 1000, 1 << 30)
    assert rest == payloads[10:50] + payloads[51:]  # frame 51 lost, nothing else, in order, no exception
    assert spool.take_quarantined() == 1
    assert spool.pending_records == 99  # counted again from the cursor
    spool.commit(end, 99, sum(FRAME_OVERHEAD + len(p) for p in first + rest))
    assert spool.pending_records == 0
    assert spool.pending_bytes == 0
    assert list((tmp_path / "w").glob("*.seg")) == []
    assert len(list((tmp_path / "w").glob("*.quarantine"))) == 1
    spool.close()


def test_a_text_cursor_of_an_older_version_is_read_and_replaced_in_place(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "w")
    payloads = records(20, size=100)
    spool.append_many(payloads)
    spool.close()
    offset = sum(FRAME_OVERHEAD + len(p) for p in payloads[:5])
    (tmp_path / "w" / CURSOR_FILE).write_text(f"1 {offset}\n")  # what the previous version wrote
    spool = open_spool(tmp_path / "w")
    assert list(spool.iter_all()) == payloads[5:]
    assert os.path.getsize(tmp_path / "w" / CURSOR_FILE) == 64  # both slots, ready for in-place commits
    spool.close()
    assert list(open_spool(tmp_path / "w").iter_all()) == payloads[5:]


def test_leftovers_of_an_older_version_are_removed_at_start(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "w")
    spool.append_many(records(3, size=100))
    spool.close()
    (tmp_path / "w" / "00000000000000000001.tmp").write_bytes(b"\0" * 978_944)  # a half-written repair copy
    (tmp_path / "w" / "cursor.tmp").write_bytes(b"1 ")
    spool = open_spool(tmp_path / "w")
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["00000000000000000001.seg", "LOCK", "cursor"]
    assert list(spool.iter_all()) == records(3, size=100)
    spool.close()
