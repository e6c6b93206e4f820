"""The spools one worker drains: its own directory and those it adopted from dead workers.

A worker claims the first `worker-<n>` directory no live process holds (`gateway.spool.directories`: a
restarted worker takes over a dead one's), and adopts every other directory whose lock is free and which
still holds records: those are drained first, oldest adoption first, then its own spool. All disk work runs
on one thread, serialised with the appends (`gateway.spool.writer`'s group commit).
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from gateway.kafka_record import KafkaRecord, encode_record
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings
from gateway.spool.cursor import Position
from gateway.spool.directories import claim_worker_dir, try_lock, worker_dirs
from gateway.spool.frames import FRAME_OVERHEAD
from gateway.spool.segments import Spool
from gateway.spool.writer import SpoolWriteError, SpoolWriter

log = logging.getLogger(__name__)

DRAIN_BATCH_RECORDS = 500
DRAIN_BATCH_BYTES = 4 * 1024 * 1024
TYPICAL_EVENT_BYTES = 64 * 1024  # room for one more delivery, in the size limit and on the disk


def disk_has_room(directory: Path, need_bytes: int = TYPICAL_EVENT_BYTES) -> bool:
    """The filesystem of `directory` has `need_bytes` and an inode free (a full disk answers 503 truthfully)."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return False
    inodes_ok = st.f_files == 0 or st.f_favail > 0  # some filesystems have no inode limit (f_files 0)
    return st.f_bavail * st.f_frsize >= need_bytes and inodes_ok


@dataclass(frozen=True)
class Batch:
    """Records read from one spool, in order; `commit` marks them published."""

    spool: Spool
    payloads: list[bytes]
    end: Position

    @property
    def nbytes(self) -> int:
        return sum(len(p) + FRAME_OVERHEAD for p in self.payloads)


class WorkerSpools:
    def __init__(self, settings: GatewaySettings, metrics: GatewayMetrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        self.own: Spool | None = None
        self._writer: SpoolWriter | None = None
        self._orphans: list[Spool] = []
        self.full = False  # an append passed the size limit; cleared when a drained batch frees some
        self.write_error: str | None = None  # errno name of the last append the disk refused; cleared by a success

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        root = Path(self._settings.spool_dir)
        directory, fd = await loop.run_in_executor(self._executor, claim_worker_dir, root)
        self.own = await loop.run_in_executor(self._executor, self._open, directory, fd)
        self._writer = SpoolWriter(self.own, self._executor)

    def _open(self, directory: Path, fd: int) -> Spool:
        spool = Spool(
            directory,
            fd,
            segment_bytes=self._settings.spool_segment_bytes,
            max_bytes=self._settings.spool_max_bytes,
        )
        self._metrics.spool_quarantined.inc(spool.take_quarantined())
        return spool

    def _try_open(self, directory: Path) -> Spool | None:
        fd = try_lock(directory)
        return None if fd is None else self._open(directory, fd)

    @property
    def writer(self) -> SpoolWriter:
        assert self._writer is not None, "open() first"
        return self._writer

    # -- appending ------------------------------------------------------------------------------

    def append(self, record: KafkaRecord) -> asyncio.Future[None]:
        """Queue `record` for this worker's spool now (call order is spool order); the future resolves once it
        is fsync'd, or fails with SpoolFullError."""
        waiter = self.writer.enqueue(encode_record(record))
        waiter.add_done_callback(self._note_refusal)
        return waiter

    def _note_refusal(self, waiter: asyncio.Future[None]) -> None:
        if waiter.cancelled():
            return
        error = waiter.exception()
        if error is None:
            self.write_error = None
        elif isinstance(error, SpoolWriteError):
            self.write_error = error.reason  # readiness asks the disk itself (`room`), not this flag
        else:
            self.full = True

    def room(self) -> str | None:
        """Why this worker's spool cannot take a typical delivery now, else None: `full` (size limit) or
        `disk_full` (the filesystem). Asked of the disk each time, so every worker says the truth even if
        another one filled the disk, and readiness comes back as soon as space does."""
        assert self.own is not None
        if self.full or self.own.pending_bytes + TYPICAL_EVENT_BYTES > self._settings.spool_max_bytes:
            return "full"
        if not disk_has_room(self.own.directory):
            return "disk_full"
        return None

    # -- totals ---------------------------------------------------------------------------------

    @property
    def _all(self) -> list[Spool]:
        return [*self._orphans, *([self.own] if self.own else [])]

    @property
    def pending_records(self) -> int:
        return sum(s.pending_records for s in self._all)

    @property
    def pending_bytes(self) -> int:
        return sum(s.pending_bytes for s in self._all)

    @property
    def oldest_timestamp_ms(self) -> int | None:
        oldest = [s.oldest_timestamp_ms for s in self._all if s.oldest_timestamp_ms is not None]
        return min(oldest) if oldest else None

    @property
    def empty(self) -> bool:
        """Nothing spooled, adopted or being appended."""
        assert self.own is not None
        return not self._orphans and self.own.pending_records == 0 and self.writer.idle

    # -- draining -------------------------------------------------------------------------------

    async def next_batch(self) -> Batch | None:
        """The next records to publish, from the oldest spool that has any; None when none has."""
        while self._orphans and self._orphans[0].pending_records == 0:
            orphan = self._orphans.pop(0)
            await self.writer.run(orphan.close)
            log.info("orphan spool drained", extra={"spool_dir": str(orphan.directory)})
        spool = self._orphans[0] if self._orphans else self.own
        assert spool is not None
        try:
            payloads, end = await self.writer.run_read(spool, DRAIN_BATCH_RECORDS, DRAIN_BATCH_BYTES)
        finally:
            # Damaged frames are skipped (and quarantined) by the read, never raised: count them.
            self._metrics.spool_quarantined.inc(spool.take_quarantined())
        return Batch(spool, payloads, end) if payloads else None

    async def commit(self, batch: Batch) -> None:
        try:
            await self.writer.run(batch.spool.commit, batch.end, len(batch.payloads), batch.nbytes)
        finally:
            self._metrics.spool_quarantined.inc(batch.spool.take_quarantined())
        self.full = False

    # -- adoption -------------------------------------------------------------------------------

    async def adopt_orphans(self) -> int:
        """Lock and queue for draining every other worker directory that no live process holds and that
        still holds records; returns how many were adopted."""
        assert self.own is not None
        held = {s.directory for s in self._all}
        adopted = 0
        for directory in await self.writer.run(worker_dirs, Path(self._settings.spool_dir)):
            if directory in held:
                continue
            spool = await self.writer.run(self._try_open, directory)
            if spool is None:
                continue
            if spool.pending_records == 0:
                await self.writer.run(spool.close)
                continue
            log.info(
                "adopting spool of a stopped worker",
                extra={"spool_dir": str(directory), "spool_records": spool.pending_records},
            )
            self._orphans.append(spool)
            adopted += 1
        return adopted

    # -- closing --------------------------------------------------------------------------------

    async def close(self) -> None:
        """Finish queued appends, close every spool (releasing its lock), stop the disk thread."""
        if self._writer is not None:
            await self._writer.drain_queue()
        loop = asyncio.get_running_loop()
        for spool in self._all:
            await loop.run_in_executor(self._executor, spool.close)
        self._executor.shutdown(wait=True)
