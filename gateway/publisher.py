"""Kafka publishing with a durable spool behind it: the thin imperative shell around the producer.

Normal path: the record goes to the idempotent producer and the request waits for the broker's
acknowledgement (`gateway.sender`). When that does not come within the deadline (or the producer fails),
the publisher *spills*: every record still in flight is appended to the spool in arrival order, and from
then on new records go to the spool too, so a later event of an account can never overtake an earlier
one. The drainer (`gateway.spool.drain`) publishes the spools (this worker's and those adopted from dead workers,
`gateway.spool.worker_spools`) in order once Kafka answers, and only when they are empty do requests go straight to the
producer again.

A record kept while the schema registry was unreachable (`KafkaRecord.schema_id_pending`) goes to the
spool too, and so does everything after it: the drainer sends it once the registry gave its schema id.

At-least-once: a send that timed out may still land, and the drainer publishes its spooled copy too.
Consumers dedupe by event_id; a duplicate is acceptable, a loss is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time

from common.settings import KafkaSettings
from gateway.kafka_record import KafkaRecord
from gateway.metrics import GatewayMetrics
from gateway.outcome import PublishOutcome
from gateway.producer import KafkaLink, ProducerFactory, producer_options
from gateway.sender import DirectSender, InFlight
from gateway.settings import GatewaySettings
from gateway.spool.drain import CONNECT_TIMEOUT_S, Drainer, Reframe
from gateway.spool.segments import Spool
from gateway.spool.worker_spools import WorkerSpools
from gateway.spool.writer import SpoolFullError

__all__ = ["ProducerFactory", "Publisher", "producer_options"]

log = logging.getLogger(__name__)

ORPHAN_SCAN_INTERVAL_S = 10.0


def _no_registry(topic: str, value: bytes) -> bytes:
    raise TypeError("a record waits for a schema id but this publisher has no codec to give it one")


class Publisher:
    """One per worker process: routes each record to the producer or the spool; owns their lifecycle."""

    def __init__(
        self,
        settings: GatewaySettings,
        kafka: KafkaSettings,
        metrics: GatewayMetrics,
        producer_factory: ProducerFactory | None = None,
        reframe: Reframe | None = None,
    ) -> None:
        """`reframe`: how records kept while the registry was unreachable get their schema id
        (`RecordEncoder.reframe`)."""
        self.settings = settings
        self.metrics = metrics
        self._link = (
            KafkaLink(producer_factory, metrics) if producer_factory else KafkaLink.default(settings, kafka, metrics)
        )
        self._kafka_route = kafka.describe()  # how the producer connects, for the start-up line (no secret)
        self._spools = WorkerSpools(settings, metrics)
        self._sender = DirectSender(metrics, on_stall=self._stalled)
        self._drainer = Drainer(
            self._spools,
            self._link,
            metrics,
            send_timeout_s=kafka.request_timeout_ms / 1000,
            reframe=reframe or _no_registry,
            quiet=lambda: not self._sender.unsettled,
            on_progress=self._update_gauges,
        )
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        await self._spools.open()
        if self._spools.pending_records:
            # Events from before a restart (or from the dead worker whose directory this was) go first.
            self._drainer.spooling = True
        await self._adopt_orphans()
        if not await self._link.connect(CONNECT_TIMEOUT_S):
            self._drainer.spooling = True
        self._update_gauges()
        log.info(
            "publisher started",
            extra={
                "spool_dir": str(self.spool.directory if self.spool else None),
                "spool_records": self.pending_records,
                "kafka_up": self.kafka_up,
                "kafka": self._kafka_route,
            },
        )
        self._tasks = [
            asyncio.create_task(self._drainer.run(), name="spool-drainer"),
            asyncio.create_task(self._orphan_loop(), name="spool-orphans"),
        ]
        self._drainer.wake.set()

    async def stop(self) -> None:
        """Flush: a last drain within the shutdown timeout, then the producer; the rest stays spooled."""
        self._drainer.stopping = True
        deadline = time.monotonic() + self.settings.shutdown_timeout_s
        if unsettled := self._sender.unsettled:
            await asyncio.wait(unsettled, timeout=max(0.0, deadline - time.monotonic()))
        self._drainer.wake.set()
        drainer = self._tasks[0] if self._tasks else None
        if drainer is not None and self._link.producer is not None and self._drainer.spooling:
            # The drainer stops by itself once the spool is empty.
            await asyncio.wait([drainer], timeout=max(0.0, deadline - time.monotonic()))
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # Bounded: shutdown must end within its timeout even if a task swallows its cancellation.
            await asyncio.wait(self._tasks, timeout=5.0)
        await self._link.close(max(1.0, deadline - time.monotonic()))
        await self._spools.close()
        log.info("publisher stopped", extra={"spool_records": self.pending_records})

    # -- state ----------------------------------------------------------------------------------

    @property
    def spool(self) -> Spool | None:
        """This worker's own spool (None before start)."""
        return self._spools.own

    @property
    def kafka_up(self) -> bool:
        """Connected and acknowledging, whether directly or draining the spool (`spooling` says which)."""
        return self._link.producer is not None and self._link.answering

    @property
    def refusals(self) -> dict[str, str]:
        """Topic -> why the cluster refused our last record there (not authorized), until one gets through."""
        return dict(self._sender.refusals)

    @property
    def spooling(self) -> bool:
        return self._drainer.spooling

    @property
    def pending_records(self) -> int:
        return self._spools.pending_records

    @property
    def pending_bytes(self) -> int:
        return self._spools.pending_bytes

    @property
    def accepting(self) -> bool:
        """Ready for traffic: started, not stopping, and the spool has room for a typical event (within its
        size limit and on the disk)."""
        return self.spool_state == "ok"

    @property
    def spool_state(self) -> str:
        """`ok`, `full` (GATEWAY_SPOOL_MAX_BYTES), `disk_full` (its filesystem), `stopping` or `not_started`."""
        if self.spool is None:
            return "not_started"
        if self._drainer.stopping:
            return "stopping"
        return self._spools.room() or "ok"

    @property
    def spool_write_error(self) -> str | None:
        """errno name of the last append the disk refused (`ENOSPC`...), None once one succeeds."""
        return self._spools.write_error

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
        oldest = self._spools.oldest_timestamp_ms
        return 0.0 if oldest is None else max(0.0, (time.time() if now_s is None else now_s) - oldest / 1000)

    # -- publishing -----------------------------------------------------------------------------

    async def publish(self, record: KafkaRecord, timeout_s: float) -> PublishOutcome:
        """Acknowledged by Kafka within `timeout_s`, else spooled; SPOOL_FULL/FAILED mean 503."""
        started = time.perf_counter()
        producer = self._link.producer
        if record.schema_id_pending and not self._drainer.spooling:
            self._spill("schema registry unreachable")
        if self._drainer.spooling or producer is None:
            outcome = await self._spooled(self._append(record))
            self.metrics.observe_publish("spool", time.perf_counter() - started)
            return outcome
        outcome = await self._sender.publish(producer, record, timeout_s)
        path = "kafka" if outcome is PublishOutcome.ACKED else "spool"
        self.metrics.observe_publish(path, time.perf_counter() - started)
        return outcome

    def _stalled(self) -> None:
        self._link.answering = False  # no acknowledgement within the deadline, or a broker error
        self._spill("kafka not acknowledging")

    def _spill(self, why: str) -> None:
        """Switch to spooling and append every unsettled in-flight record, in arrival order.

        Synchronous up to the appends, so no request handled later can get into the spool first.
        """
        if not self._drainer.spooling:
            log.warning(f"{why}; spooling", extra={"in_flight": len(self._sender)})
        self._drainer.start_spooling()
        self._update_gauges()
        for entry in self._sender.take_unsettled():
            self._append(entry.record).add_done_callback(functools.partial(self._settle_spilled, entry))

    def _settle_spilled(self, entry: InFlight, waiter: asyncio.Future[None]) -> None:
        if entry.settled.done():
            return
        if waiter.cancelled() or waiter.exception() is not None:
            entry.settled.set_result(PublishOutcome.SPOOL_FULL)
        else:
            self.metrics.spooled.inc()
            entry.settled.set_result(PublishOutcome.SPOOLED)

    def _append(self, record: KafkaRecord) -> asyncio.Future[None]:
        self._drainer.wake.set()
        return self._spools.append(record)

    async def _spooled(self, waiter: asyncio.Future[None]) -> PublishOutcome:
        try:
            await waiter
        except SpoolFullError:
            return PublishOutcome.SPOOL_FULL
        self.metrics.spooled.inc()
        self._update_gauges()
        return PublishOutcome.SPOOLED

    # -- adoption of dead workers' spools -------------------------------------------------------

    async def _adopt_orphans(self) -> None:
        if await self._spools.adopt_orphans():
            self._drainer.start_spooling()

    async def _orphan_loop(self) -> None:
        while not self._drainer.stopping:
            await asyncio.sleep(ORPHAN_SCAN_INTERVAL_S)
            with contextlib.suppress(OSError):
                await self._adopt_orphans()
