"""The async front of a `Spool`: concurrent appends batched into one write + fsync (group commit), all disk work
on one thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from gateway.spool.cursor import Position
from gateway.spool.segments import Spool, error_name

log = logging.getLogger(__name__)
T = TypeVar("T")


class SpoolFullError(Exception):
    """The spool cannot take the record; the caller answers 503 so Pinwheel retries later.

    Raised as such when the spool reached its size limit (`GATEWAY_SPOOL_MAX_BYTES`)."""


class SpoolWriteError(SpoolFullError):
    """The disk refused the append (full, or an I/O error): nothing of it was kept; `reason` is the errno name."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SpoolWriter:
    """Async front of a Spool: group commit of concurrent appends, all disk work on one thread."""

    def __init__(self, spool: Spool, executor: ThreadPoolExecutor) -> None:
        self.spool = spool
        self._executor = executor
        self._queue: list[tuple[bytes, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    def enqueue(self, payload: bytes) -> asyncio.Future[None]:
        """Queue `payload` now (synchronously: call order is spool order); the future resolves once it
        is fsync'd, or fails with SpoolFullError (SpoolWriteError when the disk refused it)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((payload, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return future

    @property
    def idle(self) -> bool:
        return not self._queue and (self._flusher is None or self._flusher.done())

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run disk work on the spool thread (serialised with appends)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def run_read(self, spool: Spool, max_records: int, max_bytes: int) -> tuple[list[bytes], Position]:
        return await self.run(spool.read, spool.cursor, max_records, max_bytes)

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            # Everything queued while the previous fsync ran goes into this one write + fsync.
            batch, self._queue = self._queue, []
            try:
                taken = await loop.run_in_executor(self._executor, self.spool.append_many, [p for p, _ in batch])
            except Exception as exc:  # disk full, I/O error: every waiter must hear of it (nothing was kept)
                log.error("spool append failed", extra={"error": error_name(exc), "records": len(batch)})
                for _, future in batch:
                    if not future.done():
                        future.set_exception(SpoolWriteError(error_name(exc)))
                continue
            for index, (_, future) in enumerate(batch):
                if future.done():
                    continue
                if index < taken:
                    future.set_result(None)
                else:
                    future.set_exception(SpoolFullError())
            if taken < len(batch):
                # Order: nothing queued behind a refused record may be accepted before it.
                rest, self._queue = self._queue, []
                for _, future in rest:
                    if not future.done():
                        future.set_exception(SpoolFullError())

    async def drain_queue(self) -> None:
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher
