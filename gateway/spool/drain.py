"""The spool drain: while the publisher is in spooling mode, publish the spools in order, batch by batch.

A batch is sent through the producer and committed in the spool only once every record of it is
acknowledged; a failure retries the batch after a back-off (at-least-once: consumers dedupe by event_id).
Records kept while the schema registry was unreachable (`KafkaRecord.schema_id_pending`) are re-framed
with their schema id first; the batch waits (retried the same way) until the registry has given it.
When the spools are empty and nothing else is on its way into them, the mode switches back to direct
publishing, with no await between the check and the switch: a request handled after it goes straight to the
producer, behind everything drained.

Kafka's state is what the sends say (`KafkaLink.answering`): an acknowledged batch means Kafka is up even
while the backlog drains; a failure of the spool itself (reading, committing) says nothing about Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from gateway.kafka_record import KafkaRecord, decode_record
from gateway.metrics import GatewayMetrics
from gateway.producer import KafkaLink, send
from gateway.spool.segments import error_name
from gateway.spool.worker_spools import Batch, WorkerSpools
from schemas.confluent import RegistryUnavailable

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0


class SpoolStepError(Exception):
    """Reading or committing the spool failed (not Kafka): the drain retries after a back-off."""


Reframe = Callable[[str, bytes], bytes]
"""(topic, single-object value) → the value in the configured format; RegistryUnavailable until it can."""


class Drainer:
    def __init__(
        self,
        spools: WorkerSpools,
        link: KafkaLink,
        metrics: GatewayMetrics,
        *,
        send_timeout_s: float,
        reframe: Reframe,
        quiet: Callable[[], bool],
        on_progress: Callable[[], None],
    ) -> None:
        """`quiet()`: nothing is on its way into the spool besides what it holds (no unsettled direct send)."""
        self._spools = spools
        self._link = link
        self._metrics = metrics
        self._send_timeout_s = send_timeout_s
        self._reframe = reframe
        self._quiet = quiet
        self._on_progress = on_progress
        self.spooling = False  # records go to the spool, behind what it holds, until it is drained
        self.stopping = False  # return once drained (or when not spooling)
        self.wake = asyncio.Event()

    def start_spooling(self) -> None:
        self.spooling = True
        self.wake.set()

    async def run(self) -> None:
        backoff = 0.2
        while True:
            if not self.spooling:
                if self.stopping:
                    return
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), 1.0)
                continue
            if self._link.producer is None and not await self._link.connect(CONNECT_TIMEOUT_S):
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            try:
                progressed = await self._drain_once()
            except asyncio.CancelledError:
                raise
            except RegistryUnavailable as exc:
                # Not a Kafka error: the records wait in the spool until the registry answers.
                self._metrics.registry_waits.inc()
                log.info("spooled records wait for the schema registry", extra={"error": type(exc).__name__})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            except SpoolStepError as exc:
                cause = exc.__cause__ or exc
                log.warning("spool drain failed; retrying", extra={"stage": str(exc), "error": error_name(cause)})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            except Exception as exc:
                self._link.answering = False
                self._metrics.producer_errors.labels(kind=type(exc).__name__).inc()
                log.warning("spool drain failed; retrying", extra={"stage": "send", "error": type(exc).__name__})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.2
            self._on_progress()
            if progressed:
                continue
            if self._spools.empty and self._quiet():
                self.spooling = False  # no await since the check (see the module docstring)
                self._on_progress()
                log.info("spool drained; publishing directly")
                if self.stopping:
                    return
            else:
                await asyncio.sleep(0.01)  # appends are being written: read them next round

    async def _drain_once(self) -> bool:
        """Publish one batch; True if there was one."""
        try:
            batch = await self._spools.next_batch()
        except OSError as exc:
            raise SpoolStepError("read") from exc
        if batch is None:
            return False
        await self._publish(batch)
        self._link.answering = True
        try:
            await self._spools.commit(batch)
        except OSError as exc:  # published but not marked: published again next round (at-least-once)
            raise SpoolStepError("commit") from exc
        self._metrics.drained.inc(len(batch.payloads))
        return True

    def _ready(self, record: KafkaRecord) -> KafkaRecord:
        if not record.schema_id_pending:
            return record
        value = self._reframe(record.topic, record.value)
        return KafkaRecord(record.topic, record.key, value, record.headers, record.timestamp_ms)

    async def _publish(self, batch: Batch) -> None:
        producer = self._link.producer
        assert producer is not None
        # Every record of the batch ready before the first is sent: a half-sent batch would be sent again.
        ready = [self._ready(decode_record(payload)) for payload in batch.payloads]
        acks = [await asyncio.wait_for(send(producer, record), self._send_timeout_s) for record in ready]
        # Wait however long the producer needs: resending now would only add duplicates.
        results = await asyncio.gather(*acks, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise failures[0]
