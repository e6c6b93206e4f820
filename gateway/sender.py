"""The direct path: a record sent straight to the producer, settled by the broker's ack within a deadline.

Each record in flight has a timer; when it expires, or the producer fails with a transient error, the
sender calls `on_stall` (the publisher then spills every unsettled record to the spool, in arrival order:
`take_unsettled`). A permanent producer error settles the record as FAILED (answered 503).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka.errors import TopicAuthorizationFailedError

from common.kafka_access import TopicOp, not_authorized
from common.kafka_errors import Kind, classify_kafka_error
from gateway.kafka_record import KafkaRecord
from gateway.metrics import GatewayMetrics
from gateway.outcome import PublishOutcome
from gateway.producer import PERMANENT_ERRORS, Producer, send

log = logging.getLogger(__name__)


@dataclass(eq=False)
class InFlight:
    seq: int
    record: KafkaRecord
    settled: asyncio.Future[PublishOutcome]
    task: asyncio.Task[None] | None = None
    queued: bool = False  # handed to the producer's accumulator (cancelling no longer unsends it)
    spilled: bool = False


def refusal_reason(exc: BaseException, topic: str) -> str | None:
    """The one line of a refusal an operator must fix (an ACL), naming the topic; None for a record's own fault
    (too large, corrupt): the next record may well get through."""
    if isinstance(exc, TopicAuthorizationFailedError):
        return str(not_authorized(TopicOp.WRITE.tool_name, "topic", [topic]))
    verdict = classify_kafka_error(exc)
    return verdict.reason if verdict.kind is Kind.MISCONFIGURED else None


class DirectSender:
    def __init__(self, metrics: GatewayMetrics, on_stall: Callable[[], None]) -> None:
        self._metrics = metrics
        self._on_stall = on_stall
        self._inflight: dict[int, InFlight] = {}
        self._seq = itertools.count()
        self.refusals: dict[str, str] = {}  # topic -> why the cluster refuses our records there (an ACL missing)

    def __len__(self) -> int:
        return len(self._inflight)

    @property
    def unsettled(self) -> list[asyncio.Future[PublishOutcome]]:
        return [e.settled for e in self._inflight.values() if not e.settled.done()]

    async def publish(self, producer: Producer, record: KafkaRecord, timeout_s: float) -> PublishOutcome:
        loop = asyncio.get_running_loop()
        entry = InFlight(next(self._seq), record, loop.create_future())
        self._inflight[entry.seq] = entry
        entry.task = asyncio.create_task(self._send(producer, entry))
        # A timer that stalls on expiry, rather than asyncio.wait or wait_for: no extra waiter future,
        # done-callbacks or task per request.
        timer = loop.call_later(max(0.001, timeout_s), self._deadline_passed, entry)
        try:
            return await entry.settled
        finally:
            timer.cancel()
            self._inflight.pop(entry.seq, None)

    def _deadline_passed(self, entry: InFlight) -> None:
        if not entry.settled.done():
            self._metrics.producer_errors.labels(kind="ack_timeout").inc()
            self._on_stall()  # settles the entry once the spool holds it

    async def _send(self, producer: Producer, entry: InFlight) -> None:
        try:
            acked = await send(producer, entry.record)
            entry.queued = True
            await acked
        except asyncio.CancelledError:
            raise
        except PERMANENT_ERRORS as exc:
            self._metrics.producer_errors.labels(kind=type(exc).__name__).inc()
            topic = entry.record.topic
            reason = refusal_reason(exc, topic)
            if reason is not None:  # the principal may not write there: /readyz says so until a record gets through
                self.refusals[topic] = reason
            log.error("record refused by kafka", extra={"error": type(exc).__name__, "topic": topic, "reason": reason})
            if not entry.settled.done():
                entry.settled.set_result(PublishOutcome.FAILED)
            return
        except Exception as exc:
            # The broker is not taking records: spool this one and everything behind it.
            self._metrics.producer_errors.labels(kind=type(exc).__name__).inc()
            if not entry.settled.done():
                self._on_stall()
            return
        self.refusals.pop(entry.record.topic, None)
        if not entry.settled.done():
            entry.settled.set_result(PublishOutcome.ACKED)

    def take_unsettled(self) -> list[InFlight]:
        """Every unsettled record not taken before, in arrival order, marked as spilled; the ones not yet in
        the producer are unsent (they must not land after records spooled behind them)."""
        taken = []
        for seq in sorted(self._inflight):
            entry = self._inflight[seq]
            if entry.spilled or entry.settled.done():
                continue
            entry.spilled = True
            if entry.task is not None and not entry.queued:
                entry.task.cancel()
            taken.append(entry)
        return taken
