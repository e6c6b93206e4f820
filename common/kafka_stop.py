"""Stopping an aiokafka producer within a deadline, and abandoning it completely past it.

`AIOKafkaProducer.stop()` first waits until every batch it holds is delivered: without a broker, forever.
Bounding it with `wait_for` cancels only the `stop()` call: the producer's sender task goes on retrying
(its in-flight requests, the transaction's AddPartitionsToTxn), the accumulator's close task waits, the
connections stay open, and when the broker is back and the partition's next owner fences this producer,
each future it fails then is logged as "Future exception was never retrieved". Past the deadline,
`stop_producer` therefore abandons the producer: its sender's tasks are cancelled, the batches it holds
failed (their futures retrieved: nobody is waiting for them any more), and its client closed.

This reaches into aiokafka's internals (`_sender`, `_message_accumulator`, `_txn_manager`; pyproject.toml bounds
aiokafka below its next minor release); tests/processors/runtime/test_abandoned_producer.py (a transactional producer)
and tests/gateway/test_producer_stop.py (the gateway's idempotent one) hold it to the behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

log = logging.getLogger(__name__)

#: How long the abandonment itself may take (cancelled tasks unwinding, the client's connections closing).
ABANDON_TIMEOUT_S = 5.0


async def stop_producer(producer: AIOKafkaProducer, timeout_s: float) -> bool:
    """Stop `producer`, flushing what it holds, within `timeout_s`; past it, abandon it (nothing of it keeps
    running, nothing it held is delivered). True when it stopped cleanly."""
    stopping = asyncio.ensure_future(producer.stop())
    done, _ = await asyncio.wait([stopping], timeout=timeout_s)
    if stopping in done:
        if stopping.cancelled() or stopping.exception() is not None:  # the exception retrieved: it is logged here
            log.warning("producer stopped with an error", extra={"error": _name(stopping)})
            return False
        return True
    await _abandon(producer, stopping)
    return False


async def _abandon(producer: AIOKafkaProducer, stopping: asyncio.Future[None]) -> None:
    sender: Any = getattr(producer, "_sender", None)
    accumulator: Any = getattr(producer, "_message_accumulator", None)
    # Its batches failed first: the accumulator's close (which `stop()` awaits) then returns at once.
    if accumulator is not None:
        accumulator.fail_all(KafkaConnectionError("producer abandoned before its batches were acknowledged"))
    # The sender and every request task it runs (they would retry until the producer is fenced).
    owned = [t for t in asyncio.all_tasks() if not t.done() and _runs_for(t, (sender, accumulator))]
    for task in owned:
        task.cancel()
    if owned:
        await asyncio.wait(owned, timeout=ABANDON_TIMEOUT_S)
    for task in owned:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: the abandonment is what we report, not each task's last error
    # `stop()` carries on now (its sender done) and closes the client; if it still hangs, close it ourselves.
    done, _ = await asyncio.wait([stopping], timeout=ABANDON_TIMEOUT_S)
    if stopping not in done:
        stopping.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(producer.client.close(), ABANDON_TIMEOUT_S)
    elif not stopping.cancelled():
        stopping.exception()
    _retrieve_failures(accumulator, getattr(producer, "_txn_manager", None))
    left = [t for t in owned if not t.done()]
    log.warning(
        "producer abandoned: its batches were not acknowledged in time",
        extra={"tasks_cancelled": len(owned), "tasks_left": len(left)},
    )


def _runs_for(task: asyncio.Task[Any], owners: tuple[object, ...]) -> bool:
    """The task runs a method of one of `owners` (the sender's routine and request tasks, the accumulator's
    close): its coroutine's `self`."""
    frame = getattr(task.get_coro(), "cr_frame", None)
    if frame is None:
        return False
    this = frame.f_locals.get("self")
    return this is not None and any(this is owner for owner in owners)


def _retrieve_failures(accumulator: Any, txn_manager: Any) -> None:
    """Mark the failed futures nobody awaits any more as seen (each would log "never retrieved" when
    collected): the batches' own and their drain waiters, the transaction's waiter."""
    futures: list[asyncio.Future[Any]] = []
    if accumulator is not None:
        batches = [b for queue in accumulator._batches.values() for b in queue] + list(accumulator._pending_batches)
        for batch in batches:
            futures += [batch.future, batch._drain_waiter, *(f for f, _ in batch._msg_futures)]
    if txn_manager is not None and txn_manager._transaction_waiter is not None:  # None: idempotent, no transaction
        futures.append(txn_manager._transaction_waiter)
    for future in futures:
        if future.done() and not future.cancelled():
            future.exception()


def _name(future: asyncio.Future[Any]) -> str:
    if future.cancelled():
        return "CancelledError"
    exc = future.exception()
    return type(exc).__name__ if exc is not None else "none"
