"""The publisher's ordering and spool logic with a scripted producer (fast, deterministic).

The real-broker versions of these properties are in test_outage.py; here each transition is
forced exactly: a broker that stops acknowledging, one that comes back, an orphaned spool, a full one.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError

from common.settings import KafkaSettings
from gateway.kafka_record import KafkaRecord, encode_record
from gateway.metrics import GatewayMetrics
from gateway.outcome import PublishOutcome
from gateway.publisher import Publisher
from gateway.settings import GatewaySettings
from gateway.spool.segments import Spool


class ScriptedProducer:
    """Acknowledges at once while `up`; otherwise holds sends (FIFO, as the real accumulator does)."""

    def __init__(self, up: bool = True, reachable: bool = True) -> None:
        self.up = up
        self.reachable = reachable
        self.landed: list[bytes] = []
        self.held: list[tuple[bytes, asyncio.Future[None]]] = []
        self.fail_with: BaseException | None = None

    async def start(self) -> None:
        if not self.reachable:
            raise KafkaConnectionError("down")

    async def stop(self) -> None:
        pass

    async def send(self, topic: str, value: bytes, **kwargs: Any) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.fail_with is not None:
            future.set_exception(self.fail_with)
        elif self.up:
            self.landed.append(value)
            future.set_result(None)
        else:
            self.held.append((value, future))
        return future

    def recover(self) -> None:
        self.up = True
        for value, future in self.held:
            self.landed.append(value)  # a timed-out send may still land: at-least-once
            if not future.done():
                future.set_result(None)
        self.held = []


def record(name: str) -> KafkaRecord:
    return KafkaRecord("pinwheel.account.v1", b"acct-1", name.encode(), (("event_id", name.encode()),), 0)


def settings(tmp_path: Path, **overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {"secrets": ["s"], "spool_dir": tmp_path / "spool", "shutdown_timeout_s": 5}
    return GatewaySettings(**(values | overrides))


async def started(tmp_path: Path, producer: ScriptedProducer, **overrides: Any) -> Publisher:
    publisher = Publisher(settings(tmp_path, **overrides), KafkaSettings(), GatewayMetrics(), lambda: producer)
    await publisher.start()
    return publisher


async def wait_until(condition: Any, timeout_s: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def first_occurrences(values: list[bytes]) -> list[bytes]:
    seen: list[bytes] = []
    for value in values:
        if value not in seen:
            seen.append(value)
    return seen


async def test_timeout_spills_in_flight_in_order_then_drains_in_order(tmp_path: Path) -> None:
    producer = ScriptedProducer(up=False)
    publisher = await started(tmp_path, producer)
    try:
        early = [asyncio.create_task(publisher.publish(record(f"a{i}"), 0.2)) for i in range(5)]
        assert await asyncio.gather(*early) == [PublishOutcome.SPOOLED] * 5
        assert publisher.spooling
        # While the spool holds events, new ones queue behind them, even with Kafka idle.
        later = [await publisher.publish(record(f"b{i}"), 0.2) for i in range(5)]
        assert later == [PublishOutcome.SPOOLED] * 5
        assert publisher.spool is not None
        names = [f"a{i}".encode() for i in range(5)] + [f"b{i}".encode() for i in range(5)]
        assert [p[-2:] for p in publisher.spool.iter_all()] == names  # payload ends with the value
        producer.recover()
        await wait_until(lambda: not publisher.spooling)
        assert publisher.pending_records == 0
        assert await publisher.publish(record("c0"), 1) is PublishOutcome.ACKED
        assert first_occurrences(producer.landed) == [*names, b"c0"]
        assert len(producer.landed) == 16  # a0..a4 twice: once late from the producer, once from the spool
    finally:
        await publisher.stop()


def spooled_total(metrics: GatewayMetrics) -> float | None:
    return metrics.registry.get_sample_value("gateway_spooled_total")


async def test_spooled_total_counts_records_spilled_from_in_flight(tmp_path: Path) -> None:
    producer = ScriptedProducer(up=False)
    metrics = GatewayMetrics()
    publisher = Publisher(settings(tmp_path), KafkaSettings(), metrics, lambda: producer)
    await publisher.start()
    try:
        # Five requests in flight when the acknowledgement deadline passes: all five are spilled to the spool.
        spilled = [asyncio.create_task(publisher.publish(record(f"a{i}"), 0.2)) for i in range(5)]
        assert await asyncio.gather(*spilled) == [PublishOutcome.SPOOLED] * 5
        assert spooled_total(metrics) == 5
        # Then two that go to the spool directly.
        assert [await publisher.publish(record(f"b{i}"), 0.2) for i in range(2)] == [PublishOutcome.SPOOLED] * 2
        assert spooled_total(metrics) == 7 == publisher.pending_records
    finally:
        await publisher.stop()


async def test_a_damaged_spool_frame_loses_only_itself_and_is_counted(tmp_path: Path) -> None:
    producer = ScriptedProducer(reachable=False)
    publisher = await started(tmp_path, producer)
    names = [f"r{i:02d}" for i in range(100)]
    assert [await publisher.publish(record(name), 0.5) for name in names] == [PublishOutcome.SPOOLED] * 100
    await publisher.stop()
    segment = next((tmp_path / "spool" / "worker-0").glob("*.seg"))
    data = bytearray(segment.read_bytes())
    at = data.index(b"r49")  # inside frame 50's payload
    data[at] ^= 0x20
    segment.write_bytes(bytes(data))

    producer = ScriptedProducer()
    metrics = GatewayMetrics()
    publisher = Publisher(settings(tmp_path), KafkaSettings(), metrics, lambda: producer)
    await publisher.start()
    try:
        await wait_until(lambda: not publisher.spooling)
        assert producer.landed == [name.encode() for name in names if name != "r49"]  # 99, in order
        assert metrics.registry.get_sample_value("gateway_spool_quarantined_total") == 1
        assert metrics.registry.get_sample_value("gateway_drained_total") == 99
    finally:
        await publisher.stop()


async def test_orphaned_spool_of_a_dead_worker_is_drained_first(tmp_path: Path) -> None:
    orphan = Spool.open(tmp_path / "spool" / "worker-7", segment_bytes=1 << 20, max_bytes=1 << 30)
    orphan.append_many([encode_record(record(f"o{i}")) for i in range(3)])
    orphan.close()  # its process died: the flock is gone
    producer = ScriptedProducer()
    publisher = await started(tmp_path, producer)
    try:
        assert publisher.spool is not None
        assert publisher.spool.directory.name == "worker-0"
        await wait_until(lambda: not publisher.spooling)
        assert await publisher.publish(record("n0"), 1) is PublishOutcome.ACKED
        assert producer.landed == [b"o0", b"o1", b"o2", b"n0"]
    finally:
        await publisher.stop()
    assert list((tmp_path / "spool" / "worker-7").glob("*.seg")) == []


async def test_restart_drains_own_spool_before_new_events(tmp_path: Path) -> None:
    producer = ScriptedProducer(reachable=False)
    publisher = await started(tmp_path, producer)
    assert [await publisher.publish(record(f"s{i}"), 0.5) for i in range(3)] == [PublishOutcome.SPOOLED] * 3
    await publisher.stop()
    producer = ScriptedProducer()
    publisher = await started(tmp_path, producer)
    try:
        assert await publisher.publish(record("n0"), 1) in (PublishOutcome.SPOOLED, PublishOutcome.ACKED)
        await wait_until(lambda: not publisher.spooling)
        assert producer.landed == [b"s0", b"s1", b"s2", b"n0"]
    finally:
        await publisher.stop()


async def test_full_spool_answers_spool_full_and_readiness_drops(tmp_path: Path) -> None:
    producer = ScriptedProducer(reachable=False)
    publisher = await started(tmp_path, producer, spool_max_bytes=1 << 20)
    try:
        big = KafkaRecord("t", None, b"x" * 100_000, (), 0)
        outcomes = [await publisher.publish(big, 0.5) for _ in range(12)]
        assert outcomes == [PublishOutcome.SPOOLED] * 10 + [PublishOutcome.SPOOL_FULL] * 2
        assert not publisher.accepting
    finally:
        await publisher.stop()


async def test_permanent_producer_error_is_not_spooled(tmp_path: Path) -> None:
    producer = ScriptedProducer()
    producer.fail_with = MessageSizeTooLargeError()
    publisher = await started(tmp_path, producer)
    try:
        assert await publisher.publish(record("huge"), 1) is PublishOutcome.FAILED
        assert not publisher.spooling
        assert publisher.pending_records == 0
    finally:
        await publisher.stop()


async def test_stop_flushes_the_spool_when_kafka_is_back(tmp_path: Path) -> None:
    producer = ScriptedProducer(up=False)
    publisher = await started(tmp_path, producer)
    assert await publisher.publish(record("x0"), 0.1) is PublishOutcome.SPOOLED
    producer.recover()
    await publisher.stop()
    assert publisher.pending_records == 0
    assert b"x0" in producer.landed


@pytest.mark.parametrize("workers", [2])
async def test_each_publisher_claims_its_own_directory(tmp_path: Path, workers: int) -> None:
    publishers = [await started(tmp_path, ScriptedProducer()) for _ in range(workers)]
    try:
        dirs = {p.spool.directory.name for p in publishers if p.spool is not None}
        assert dirs == {f"worker-{i}" for i in range(workers)}
    finally:
        for p in publishers:
            await p.stop()
