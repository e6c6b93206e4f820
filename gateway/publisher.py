"""Kafka publishing with a durable spool behind it: the thin imperative shell around the producer.

Normal path: the record goes to the idempotent producer and the request waits for the broker's
acknowledgement. When that does not come within the deadline (or the producer fails), the gateway
*spills*: every record still in flight is appended to the spool in arrival order, and from then on new
records go to the spool too, so a later event of an account can never overtake an earlier one. A
background drainer publishes the spool in order once Kafka answers, and only when it is empty do
requests go straight to the producer again.

At-least-once: a send that timed out may still land, and the drainer publishes its spooled copy too.
Consumers dedupe by event_id; a duplicate is acceptable, a loss is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka import errors as kafka_errors

from common.settings import KafkaSettings
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings
from gateway.spool import (
    FRAME_OVERHEAD,
    Spool,
    SpooledRecord,
    SpoolFullError,
    SpoolWriter,
    claim_worker_dir,
    decode_record,
    encode_record,
    try_lock,
    worker_dirs,
)

log = logging.getLogger("gateway.publisher")

# Errors that retrying or spooling cannot fix: the request is answered 503 (Pinwheel retries) rather
# than parking a record in the spool that would block the drain forever.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordTooLargeError,
    kafka_errors.RecordListTooLargeError,
    kafka_errors.InvalidTopicError,
    kafka_errors.TopicAuthorizationFailedError,
    kafka_errors.CorruptRecordException,
    kafka_errors.UnsupportedForMessageFormatError,
)

DRAIN_BATCH_RECORDS = 500
DRAIN_BATCH_BYTES = 4 * 1024 * 1024
ORPHAN_SCAN_INTERVAL_S = 10.0


class Outcome(StrEnum):
    ACKED = "acked"  # the broker acknowledged it
    SPOOLED = "spooled"  # durable in the spool
    SPOOL_FULL = "spool_full"  # neither: answer 503
    FAILED = "producer_error"  # a permanent producer error: answer 503


@dataclass(eq=False)
class _InFlight:
    seq: int
    record: SpooledRecord
    settled: asyncio.Future[Outcome]
    task: asyncio.Task[None] | None = None
    queued: bool = False  # handed to the producer's accumulator (cancelling no longer unsends it)
    spilled: bool = False


@dataclass(eq=False)
class _Orphan:
    spool: Spool


ProducerFactory = Callable[[], Any]


def producer_options(settings: GatewaySettings, kafka: KafkaSettings) -> dict[str, Any]:
    """The gateway producer's keyword arguments (the benchmark's reference producers use them too)."""
    return {
        **kafka.client_kwargs(),
        "client_id": f"{kafka.client_id_prefix}-gateway-{os.getpid()}",
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": settings.linger_ms,
        "max_batch_size": settings.max_batch_bytes,
        "max_request_size": settings.max_request_bytes,
    }


class Publisher:
    """One per worker process: its producer, its spool directory, its drainer."""

    def __init__(
        self,
        settings: GatewaySettings,
        kafka: KafkaSettings,
        metrics: GatewayMetrics,
        producer_factory: ProducerFactory | None = None,
    ) -> None:
        self.settings = settings
        self.kafka = kafka
        self.metrics = metrics
        self._producer_factory = producer_factory or self._default_producer
        self._producer: Any = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        self.spool: Spool | None = None
        self._writer: SpoolWriter | None = None
        self._orphans: list[_Orphan] = []
        self._inflight: dict[int, _InFlight] = {}
        self._seq = itertools.count()
        self._spooling = False
        self._stopping = False
        self._reported_down = False
        self._refused = False  # an append was refused for lack of room; cleared when the drain frees some
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ------------------------------------------------------------------------------

    def _default_producer(self) -> Any:
        return AIOKafkaProducer(**producer_options(self.settings, self.kafka))

    async def start(self) -> None:
        root = Path(self.settings.spool_dir)
        loop = asyncio.get_running_loop()
        directory, fd = await loop.run_in_executor(self._executor, claim_worker_dir, root)
        self.spool = await loop.run_in_executor(self._executor, self._open, directory, fd)
        self._writer = SpoolWriter(self.spool, self._executor)
        if self.spool.pending_records:
            # Events from before a restart (or from the dead worker whose directory this was) go first.
            self._spooling = True
        await self._adopt_orphans()
        await self._start_producer(timeout_s=5.0)
        self._update_gauges()
        log.info(
            "publisher started",
            extra={
                "spool_dir": str(directory),
                "spool_records": self.pending_records,
                "kafka_up": self.kafka_up,
            },
        )
        self._tasks = [
            asyncio.create_task(self._drain_loop(), name="spool-drainer"),
            asyncio.create_task(self._orphan_loop(), name="spool-orphans"),
        ]
        self._wake.set()

    def _open(self, directory: Path, fd: int) -> Spool:
        spool = Spool(
            directory,
            fd,
            segment_bytes=self.settings.spool_segment_bytes,
            max_bytes=self.settings.spool_max_bytes,
        )
        self.metrics.spool_quarantined.inc(spool.quarantined_frames)
        return spool

    async def _start_producer(self, timeout_s: float) -> bool:
        producer = self._producer_factory()
        try:
            await asyncio.wait_for(producer.start(), timeout_s)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):  # shutting down: release its connections and tasks
                await asyncio.wait_for(producer.stop(), 2.0)
            raise
        except Exception as exc:
            self.metrics.producer_errors.labels(kind=type(exc).__name__).inc()
            if not self._reported_down:  # once per outage, not once per retry
                log.warning("kafka unavailable; spooling", extra={"error": type(exc).__name__})
                self._reported_down = True
            with contextlib.suppress(Exception):  # bounded: a half-started client may never finish stopping
                await asyncio.wait_for(producer.stop(), 2.0)
            self._spooling = True
            return False
        if self._reported_down:
            log.info("kafka reachable again")
            self._reported_down = False
        self._producer = producer
        return True

    async def stop(self) -> None:
        """Flush: a last drain within the shutdown timeout, then the producer; the rest stays spooled."""
        self._stopping = True
        deadline = time.monotonic() + self.settings.shutdown_timeout_s
        if self._inflight:
            await asyncio.wait(
                [e.settled for e in self._inflight.values()], timeout=max(0.0, deadline - time.monotonic())
            )
        self._wake.set()
        drainer = self._tasks[0] if self._tasks else None
        if drainer is not None and self._producer is not None and self._spooling:
            # The drainer stops by itself once the spool is empty (see _drain_loop).
            await asyncio.wait([drainer], timeout=max(0.0, deadline - time.monotonic()))
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # Bounded: shutdown must end within its timeout even if a task swallows its cancellation.
            await asyncio.wait(self._tasks, timeout=5.0)
        if self._writer is not None:
            await self._writer.drain_queue()
        if self._producer is not None:
            try:
                await asyncio.wait_for(self._producer.stop(), max(1.0, deadline - time.monotonic()))
            except Exception as exc:
                log.warning("producer did not flush in time", extra={"error": type(exc).__name__})
        loop = asyncio.get_running_loop()
        for orphan in self._orphans:
            await loop.run_in_executor(self._executor, orphan.spool.close)
        if self.spool is not None:
            await loop.run_in_executor(self._executor, self.spool.close)
        self._executor.shutdown(wait=True)
        log.info("publisher stopped", extra={"spool_records": self.pending_records})

    # -- state ----------------------------------------------------------------------------------

    @property
    def kafka_up(self) -> bool:
        return self._producer is not None and not self._spooling

    @property
    def spooling(self) -> bool:
        return self._spooling

    @property
    def pending_records(self) -> int:
        own = self.spool.pending_records if self.spool else 0
        return own + sum(o.spool.pending_records for o in self._orphans)

    @property
    def pending_bytes(self) -> int:
        own = self.spool.pending_bytes if self.spool else 0
        return own + sum(o.spool.pending_bytes for o in self._orphans)

    @property
    def accepting(self) -> bool:
        """Ready for traffic: started, not stopping, and the spool has room for a typical event."""
        if self.spool is None or self._stopping or self._refused:
            return False
        return self.spool.pending_bytes + 64 * 1024 <= self.settings.spool_max_bytes

    def refresh_gauges(self) -> None:
        self._update_gauges()

    def _update_gauges(self) -> None:
        self.metrics.spool_records.set(self.pending_records)
        self.metrics.spool_bytes.set(self.pending_bytes)
        self.metrics.kafka_up.set(1 if self.kafka_up else 0)
        self.metrics.spool_oldest_age.set(self.oldest_age_s())
        self.metrics.ready.set(1 if self.accepting else 0)

    def oldest_age_s(self, now_s: float | None = None) -> float:
        """Age of the oldest spooled event of this worker (its own spool and adopted ones); 0 when empty."""
        spools = [o.spool for o in self._orphans] + ([self.spool] if self.spool else [])
        oldest = [s.oldest_timestamp_ms for s in spools if s.oldest_timestamp_ms is not None]
        return max(0.0, (time.time() if now_s is None else now_s) - min(oldest) / 1000) if oldest else 0.0

    # -- publishing -----------------------------------------------------------------------------

    async def publish(self, record: SpooledRecord, timeout_s: float) -> Outcome:
        """Acknowledged by Kafka within `timeout_s`, else spooled; SPOOL_FULL/FAILED mean 503."""
        started = time.perf_counter()
        if self._spooling or self._producer is None:
            outcome = await self._spooled(self._enqueue(record))
            self.metrics.observe_publish("spool", time.perf_counter() - started)
            return outcome
        loop = asyncio.get_running_loop()
        entry = _InFlight(next(self._seq), record, loop.create_future())
        self._inflight[entry.seq] = entry
        entry.task = asyncio.create_task(self._send(entry))
        # A timer that spills on expiry, rather than asyncio.wait or wait_for: no extra waiter future,
        # done-callbacks or task per request.
        timer = loop.call_later(max(0.001, timeout_s), self._ack_timeout, entry)
        try:
            outcome = await entry.settled
        finally:
            timer.cancel()
            self._inflight.pop(entry.seq, None)
        path = "kafka" if outcome is Outcome.ACKED else "spool"
        self.metrics.observe_publish(path, time.perf_counter() - started)
        return outcome

    def _ack_timeout(self, entry: _InFlight) -> None:
        if not entry.settled.done():
            self.metrics.producer_errors.labels(kind="ack_timeout").inc()
            self._spill()  # settles the entry once the spool holds it

    async def _send(self, entry: _InFlight) -> None:
        record = entry.record
        try:
            future = await self._producer.send(
                record.topic,
                record.value,
                key=record.key,
                headers=list(record.headers),
                timestamp_ms=record.timestamp_ms,
            )
            entry.queued = True
            await future
        except asyncio.CancelledError:
            raise
        except PERMANENT_ERRORS as exc:
            self.metrics.producer_errors.labels(kind=type(exc).__name__).inc()
            log.error("record refused by kafka", extra={"error": type(exc).__name__, "topic": record.topic})
            if not entry.settled.done():
                entry.settled.set_result(Outcome.FAILED)
            return
        except Exception as exc:
            # The broker is not taking records: spool this one and everything behind it.
            self.metrics.producer_errors.labels(kind=type(exc).__name__).inc()
            if not entry.settled.done():
                self._spill()
            return
        if not entry.settled.done():
            entry.settled.set_result(Outcome.ACKED)

    def _spill(self) -> None:
        """Switch to spooling and append every unsettled in-flight record, in arrival order.

        Synchronous up to the enqueue, so no request handled later can get into the spool first.
        """
        if not self._spooling:
            log.warning("kafka not acknowledging; spooling", extra={"in_flight": len(self._inflight)})
        self._spooling = True
        self._update_gauges()
        for seq in sorted(self._inflight):
            entry = self._inflight[seq]
            if entry.spilled or entry.settled.done():
                continue
            entry.spilled = True
            if entry.task is not None and not entry.queued:
                entry.task.cancel()  # not in the producer yet: it must not land after later records
            waiter = self._enqueue(entry.record)
            waiter.add_done_callback(functools.partial(self._settle_spilled, entry))
        self._wake.set()

    def _settle_spilled(self, entry: _InFlight, waiter: asyncio.Future[None]) -> None:
        if entry.settled.done():
            return
        if waiter.cancelled() or waiter.exception() is not None:
            self._refused = True
            entry.settled.set_result(Outcome.SPOOL_FULL)
        else:
            self.metrics.spooled.inc()
            entry.settled.set_result(Outcome.SPOOLED)

    def _enqueue(self, record: SpooledRecord) -> asyncio.Future[None]:
        assert self._writer is not None
        self._wake.set()
        return self._writer.enqueue(encode_record(record))

    async def _spooled(self, waiter: asyncio.Future[None]) -> Outcome:
        try:
            await waiter
        except SpoolFullError:
            self._refused = True
            return Outcome.SPOOL_FULL
        self.metrics.spooled.inc()
        self._update_gauges()
        return Outcome.SPOOLED

    # -- draining -------------------------------------------------------------------------------

    async def _drain_loop(self) -> None:
        backoff = 0.2
        while True:
            if not self._spooling:
                if self._stopping:
                    return
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)
                continue
            if self._producer is None and not await self._start_producer(timeout_s=5.0):
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            try:
                progressed = await self._drain_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.metrics.producer_errors.labels(kind=type(exc).__name__).inc()
                log.warning("spool drain failed; retrying", extra={"error": type(exc).__name__})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.2
            self._update_gauges()
            if progressed:
                continue
            if self._spool_empty():
                # No await between this check and the switch: a request handled after it goes
                # straight to the producer, behind everything drained.
                self._spooling = False
                self._update_gauges()
                log.info("spool drained; publishing directly")
                if self._stopping:
                    return
            else:
                await asyncio.sleep(0.01)  # appends are being written: read them next round

    def _spool_empty(self) -> bool:
        assert self.spool is not None
        assert self._writer is not None
        return (
            not self._orphans
            and self.spool.pending_records == 0
            and self._writer.idle
            and not any(not e.settled.done() for e in self._inflight.values())
        )

    async def _drain_once(self) -> bool:
        """Publish one batch from the oldest non-empty spool; True if something was published."""
        assert self.spool is not None
        assert self._writer is not None
        while self._orphans and self._orphans[0].spool.pending_records == 0:
            orphan = self._orphans.pop(0)
            await self._writer.run(orphan.spool.close)
            log.info("orphan spool drained", extra={"spool_dir": str(orphan.spool.directory)})
        spool = self._orphans[0].spool if self._orphans else self.spool
        payloads, position = await self._writer.run_read(spool, DRAIN_BATCH_RECORDS, DRAIN_BATCH_BYTES)
        if not payloads:
            return False
        futures = []
        for payload in payloads:
            record = decode_record(payload)
            futures.append(
                await asyncio.wait_for(
                    self._producer.send(
                        record.topic,
                        record.value,
                        key=record.key,
                        headers=list(record.headers),
                        timestamp_ms=record.timestamp_ms,
                    ),
                    self.kafka.request_timeout_ms / 1000,
                )
            )
        # Wait however long the producer needs: resending now would only add duplicates.
        results = await asyncio.gather(*futures, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise failures[0]
        nbytes = sum(len(p) + FRAME_OVERHEAD for p in payloads)
        await self._writer.run(spool.commit, position, len(payloads), nbytes)
        self._refused = False
        self.metrics.drained.inc(len(payloads))
        return True

    async def _orphan_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(ORPHAN_SCAN_INTERVAL_S)
            with contextlib.suppress(OSError):
                await self._adopt_orphans()

    async def _adopt_orphans(self) -> None:
        """Lock and queue for draining every other worker directory that no live process holds."""
        assert self.spool is not None
        assert self._writer is not None
        held = {self.spool.directory, *(o.spool.directory for o in self._orphans)}
        for directory in await self._writer.run(worker_dirs, Path(self.settings.spool_dir)):
            if directory in held:
                continue
            spool = await self._writer.run(self._try_open, directory)
            if spool is None:
                continue
            if spool.pending_records == 0:
                await self._writer.run(spool.close)
                continue
            log.info(
                "adopting spool of a stopped worker",
                extra={"spool_dir": str(directory), "spool_records": spool.pending_records},
            )
            self._orphans.append(_Orphan(spool))
            self._spooling = True
            self._wake.set()

    def _try_open(self, directory: Path) -> Spool | None:
        fd = try_lock(directory)
        return None if fd is None else self._open(directory, fd)
