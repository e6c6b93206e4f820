"""Consumer lag of the processors, as an outsider measures it: the group's committed offsets against the
end of the family topics, and the age of the oldest record not yet processed.

Measured from Kafka, not from the engine's memory, so a task that is stuck (not restoring, not committing)
shows a growing lag and age instead of its last good figures. Every `interval_s` a sample reads the
group's committed offsets (admin OffsetFetch) and the last stable offsets (ListOffsets, read_committed)
of the partitions assigned to this instance, and, for each partition that is behind, fetches the record
at the committed offset: its timestamp (the gateway's received_at) gives the age of the oldest unprocessed
record. Cost per sample: two requests plus one small fetch per lagging partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from common.settings import KafkaSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    lag: int  # records between the committed offset and the last stable offset
    oldest_age_s: float  # age of the record at the committed offset; 0 when caught up


class LagMonitor:
    def __init__(
        self,
        kafka: KafkaSettings,
        group: str,
        topics: Sequence[str],
        assigned: Callable[[], set[int]],
        *,
        interval_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kafka = kafka
        self.group = group
        self.topics = list(topics)
        self.assigned = assigned
        self.interval_s = interval_s
        self.clock = clock
        self.lags: list[PartitionLag] = []
        self.sampled_at: float | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._admin = AIOKafkaAdminClient(**self.kafka.client_kwargs(), client_id=f"{self.kafka.client_id_prefix}-lag")
        self._consumer = AIOKafkaConsumer(
            **self.kafka.client_kwargs(),
            client_id=f"{self.kafka.client_id_prefix}-lag",
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            max_partition_fetch_bytes=64 * 1024,  # the first batch comes whole even when larger
        )
        try:
            await self._admin.start()
            await self._consumer.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        consumer, admin, self._consumer, self._admin = self._consumer, self._admin, None, None
        if consumer is not None:
            await consumer.stop()
        if admin is not None:
            await admin.close()

    async def run(self, stop: asyncio.Event) -> None:
        """Start, sample every interval until `stop`, stop. A failed sample (broker down) keeps the last
        figures, and `processor_lag_sample_age_seconds` shows how old they are."""
        try:
            while not stop.is_set():
                try:
                    if self._consumer is None:
                        await self.start()
                    await self.sample()
                except Exception as exc:
                    log.warning("lag sample failed", extra={"error": type(exc).__name__})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval_s)
        finally:
            await self.stop()

    async def sample(self) -> list[PartitionLag]:
        assert self._admin is not None
        assert self._consumer is not None
        partitions = sorted(self.assigned())
        tps = [TopicPartition(topic, p) for topic in self.topics for p in partitions]
        if not tps:
            self.lags, self.sampled_at = [], self.clock()
            return self.lags
        committed = await self._admin.list_consumer_group_offsets(self.group, partitions=tps)
        consumer = self._consumer
        consumer.assign(tps)
        end = await consumer.end_offsets(tps)
        beginning = await consumer.beginning_offsets(tps)
        # Nothing committed yet: everything retained is unprocessed.
        position = {tp: max(committed[tp].offset if tp in committed else -1, beginning[tp]) for tp in tps}
        behind = [tp for tp in tps if position[tp] < end[tp]]
        first_ts = await self._first_timestamps(behind, position, end)
        now = self.clock()
        self.lags = [
            PartitionLag(
                tp.topic,
                tp.partition,
                max(0, end[tp] - position[tp]),
                max(0.0, now - first_ts[tp] / 1000) if tp in first_ts else 0.0,
            )
            for tp in tps
        ]
        self.sampled_at = now
        return self.lags

    async def _first_timestamps(
        self, tps: list[TopicPartition], position: dict[TopicPartition, int], end: dict[TopicPartition, int]
    ) -> dict[TopicPartition, int]:
        """Timestamp of the first committed record at or after `position` of each of `tps`."""
        assert self._consumer is not None
        consumer = self._consumer
        found: dict[TopicPartition, int] = {}
        if not tps:
            return found
        consumer.assign(tps)
        for tp in tps:
            # Wait for the initial position first: a seek made while it is still being resolved can be
            # overridden by that resolution.
            await consumer.position(tp)
            consumer.seek(tp, position[tp])
        deadline = time.monotonic() + 5.0
        while len(found) < len(tps) and time.monotonic() < deadline:
            waiting = [tp for tp in tps if tp not in found]
            batch = await consumer.getmany(*waiting, timeout_ms=500)
            for tp, records in batch.items():
                if records and tp not in found:
                    found[tp] = records[0].timestamp
            for tp in waiting:  # only transaction markers or aborted records before the end
                if tp not in found and await consumer.position(tp) >= end[tp]:
                    found[tp] = int(self.clock() * 1000)
        return found
