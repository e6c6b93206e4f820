"""`pinwheel-connector spool status`: what waits in the gateway's spool, per worker directory.

Read-only and lock-free, so it is safe while the gateway runs: it reads the cursor and the segment files
(gateway.spool's `read_cursor` and `scan_resyncing`, gateway.kafka_record's `decode_record`) and never takes
a worker's LOCK (a held flock would make a starting worker pass over that directory). A live gateway appends
and drains meanwhile, so the figures are a snapshot: a segment drained while it is read is counted as
drained, a frame being appended (incomplete) is not counted yet, a damaged frame (the drain skips it) is
never counted. Who holds a directory is read from /proc/locks (Linux).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from gateway.kafka_record import decode_record
from gateway.spool.cursor import read_cursor
from gateway.spool.directories import LOCK_FILE, worker_dirs
from gateway.spool.frames import FRAME_OVERHEAD, scan_resyncing
from gateway.spool.segments import SEGMENT_SUFFIX


@dataclass(frozen=True)
class WorkerSpool:
    directory: str
    records: int
    bytes: int
    oldest_received_ms: int | None  # received_at of the oldest waiting record
    oldest_age_s: float | None
    holder_pid: int | None  # the live process that holds the directory's lock, if known
    segments: int


@dataclass(frozen=True)
class SpoolStatus:
    root: str
    workers: list[WorkerSpool]

    @property
    def records(self) -> int:
        return sum(w.records for w in self.workers)

    @property
    def bytes(self) -> int:
        return sum(w.bytes for w in self.workers)

    @property
    def oldest_age_s(self) -> float | None:
        ages = [w.oldest_age_s for w in self.workers if w.oldest_age_s is not None]
        return max(ages) if ages else None

    def to_dict(self) -> dict[str, object]:
        return {
            "root": self.root,
            "records": self.records,
            "bytes": self.bytes,
            "oldest_age_s": self.oldest_age_s,
            "workers": [asdict(w) for w in self.workers],
        }

    def table(self) -> str:
        if not self.workers:
            return f"spool {self.root}: no worker directories (nothing spooled)"
        lines = [f"{'worker':<12} {'records':>9} {'bytes':>12} {'oldest age':>12}  held by"]
        for w in self.workers:
            age = "-" if w.oldest_age_s is None else _duration(w.oldest_age_s)
            holder = "(none: a running gateway adopts it)" if w.holder_pid is None else f"pid {w.holder_pid}"
            if w.records == 0 and w.holder_pid is None:
                holder = "-"
            lines.append(f"{Path(w.directory).name:<12} {w.records:>9} {w.bytes:>12} {age:>12}  {holder}")
        total_age = "-" if self.oldest_age_s is None else _duration(self.oldest_age_s)
        lines.append(f"{'total':<12} {self.records:>9} {self.bytes:>12} {total_age:>12}")
        return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _lock_holders() -> dict[tuple[int, int], int]:
    """(device, inode) -> pid of every flock in /proc/locks; empty where there is none (not Linux)."""
    holders: dict[tuple[int, int], int] = {}
    try:
        text = Path("/proc/locks").read_text()
    except OSError:
        return holders
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 6 or parts[1] != "FLOCK" or "->" in parts:
            continue  # "->" marks a waiter, not a holder
        major, minor, inode = parts[5].split(":")
        holders[(os.makedev(int(major, 16), int(minor, 16)), int(inode))] = int(parts[4])
    return holders


def worker_status(directory: Path, now_s: float, holders: dict[tuple[int, int], int]) -> WorkerSpool:
    cursor = read_cursor(directory)
    records = nbytes = segments = 0
    oldest: int | None = None
    for path in sorted(directory.glob("*" + SEGMENT_SUFFIX)):
        try:
            seg_id = int(path.stem)
        except ValueError:
            continue
        if seg_id < cursor[0]:
            continue  # published, not yet deleted
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue  # drained and deleted while we looked
        start = min(cursor[1], len(data)) if seg_id == cursor[0] else 0
        frames, _, _ = scan_resyncing(data, start)  # past damage too, as the drain reads
        if not frames:
            continue
        segments += 1
        records += len(frames)
        nbytes += sum(FRAME_OVERHEAD + length for _, length in frames)
        if oldest is None:
            begin, length = frames[0]
            oldest = decode_record(data[begin : begin + length]).timestamp_ms
    holder = None
    try:
        stat = (directory / LOCK_FILE).stat()
        holder = holders.get((stat.st_dev, stat.st_ino))
    except FileNotFoundError:
        pass
    return WorkerSpool(
        directory=str(directory),
        records=records,
        bytes=nbytes,
        oldest_received_ms=oldest,
        oldest_age_s=None if oldest is None else max(0.0, now_s - oldest / 1000),
        holder_pid=holder,
        segments=segments,
    )


def spool_status(root: Path, now_s: float | None = None) -> SpoolStatus:
    now = time.time() if now_s is None else now_s
    holders = _lock_holders()
    return SpoolStatus(str(root), [worker_status(d, now, holders) for d in worker_dirs(root)])
