"""The gateway's Kafka producer: its interface, its options, the one way a record is sent, its connection.

`send` is the only call of `producer.send` in the gateway: the direct path (`gateway.sender`) and the spool
drain (`gateway.spool.drain`) both hand records over through it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka import errors as kafka_errors

from common.kafka_errors import RECORD_REFUSED_ERRORS
from common.kafka_stop import stop_producer
from common.settings import KafkaSettings
from gateway.kafka_record import KafkaRecord
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

# Errors that retrying or spooling cannot fix: the request is answered 503 (Pinwheel retries) rather
# than parking a record in the spool that would block the drain forever.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    *RECORD_REFUSED_ERRORS,
    kafka_errors.InvalidTopicError,
    kafka_errors.TopicAuthorizationFailedError,
    kafka_errors.UnsupportedForMessageFormatError,
)


class Producer(Protocol):
    """What the gateway uses of `AIOKafkaProducer` (tests script it)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None,
        headers: list[tuple[str, bytes]],
        timestamp_ms: int,
    ) -> Awaitable[object]:
        """Queue the record in the accumulator; the returned awaitable resolves on the broker's ack."""
        ...


ProducerFactory = Callable[[], Producer]


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


async def send(producer: Producer, record: KafkaRecord) -> Awaitable[object]:
    """Hand `record` to the producer (returns once it is in the accumulator); await the result for the ack."""
    return await producer.send(
        record.topic,
        record.value,
        key=record.key,
        headers=list(record.headers),
        timestamp_ms=record.timestamp_ms,
    )


class KafkaLink:
    """The producer of one worker, started when Kafka answers; an outage is logged once, not once per retry."""

    def __init__(self, factory: ProducerFactory, metrics: GatewayMetrics) -> None:
        self._factory = factory
        self._metrics = metrics
        self.producer: Producer | None = None
        # Kafka acknowledges: set by a connect, by the sends' outcomes (an ack, a stall, a failed drain batch).
        self.answering = False
        self._reported_down = False

    @classmethod
    def default(cls, settings: GatewaySettings, kafka: KafkaSettings, metrics: GatewayMetrics) -> KafkaLink:
        return cls(lambda: AIOKafkaProducer(**producer_options(settings, kafka)), metrics)

    async def connect(self, timeout_s: float) -> bool:
        """Start a producer; False (and none kept) when Kafka does not answer within `timeout_s`."""
        producer = self._factory()
        try:
            await asyncio.wait_for(producer.start(), timeout_s)
        except asyncio.CancelledError:
            await stop_producer(producer, 2.0)  # shutting down: release its connections and tasks
            raise
        except Exception as exc:
            self.answering = False
            self._metrics.producer_errors.labels(kind=type(exc).__name__).inc()
            if not self._reported_down:
                log.warning("kafka unavailable; spooling", extra={"error": type(exc).__name__})
                self._reported_down = True
            await stop_producer(producer, 2.0)  # bounded: a half-started client may never finish stopping
            return False
        if self._reported_down:
            log.info("kafka reachable again")
            self._reported_down = False
        self.producer = producer
        self.answering = True
        return True

    async def close(self, timeout_s: float) -> None:
        """Stop the producer, flushing what it holds within `timeout_s`; past it, abandon it (`stop_producer`:
        nothing of it keeps running, what it held fails, it is logged)."""
        if self.producer is None:
            return
        await stop_producer(self.producer, timeout_s)
