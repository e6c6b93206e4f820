"""The processing runtime against the real broker: exactly-once through crashes, rebalances and lost state.

Restore after deleted local state and the replay of a batch whose end fails are engine logic: they run broker-free
in test_engine_memory.py; here a real broker's restore is the take-over of a killed instance's partitions.

The application under test (counting_app.py) counts per key in changelog-backed state and emits
`<count>:<value>`, so a read_committed consumer of its output can tell any loss (a gap or a missing
value), any duplicate (a repeated count or value) and any state rollback (counts restarting).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka import errors as Errors
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from confluent_kafka import ConsumerGroupState
from confluent_kafka.admin import AdminClient

pytestmark = pytest.mark.own_topics  # every topic, group and transactional id it uses is its own (tests/conftest.py)

APP = Path(__file__).resolve().parents[1] / "counting_app.py"
ROOT = Path(__file__).resolve().parents[3]


async def partitions_of(bootstrap: str, topic: str) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        return sorted(TopicPartition(topic, p["partition"]) for p in described["partitions"])
    finally:
        await admin.close()


async def read_committed(bootstrap: str, topic: str) -> dict[bytes, list[bytes]]:
    """All committed records of a topic, values grouped by key in offset order."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
    await consumer.start()
    got: dict[bytes, list[bytes]] = defaultdict(list)
    try:
        tps = await partitions_of(bootstrap, topic)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + 60
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            assert time.monotonic() < deadline, "could not read the output to its end"
            for records in (await consumer.getmany(*remaining, timeout_ms=300)).values():
                for r in records:
                    got[r.key].append(r.value)
            remaining = {tp for tp in remaining if await consumer.position(tp) < ends[tp]}
    finally:
        await consumer.stop()
    return got


class Pipeline:
    def __init__(self, bootstrap: str, names: dict[str, str], state_root: Path) -> None:
        self.bootstrap = bootstrap
        self.names = names
        self.state_root = state_root
        self.sent: dict[bytes, list[bytes]] = defaultdict(list)

    async def produce(
        self,
        count: int,
        keys: int,
        start: int = 0,
        per_second: float | None = None,
        pad: int | Callable[[int], int] = 0,
    ) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            for i in range(start, start + count):
                key = b"k%02d" % (i % keys)
                value = b"v%06d" % i + b"x" * (pad(i) if callable(pad) else pad)
                self.sent[key].append(value)
                await producer.send(self.names["input"], value, key=key)
                if per_second and i % 100 == 99:
                    await asyncio.sleep(100 / per_second)
            await producer.flush()
        finally:
            await producer.stop()

    def spawn(self, instance: str, *extra: str) -> subprocess.Popen[bytes]:
        args = [
            sys.executable, str(APP), "--bootstrap", self.bootstrap, "--app-id", self.names["app"],
            "--input", self.names["input"], "--output", self.names["output"],
            "--changelog", self.names["log" if "--expiring" in extra else "changelog"],
            "--state-dir", str(self.state_root / instance),
            "--instance-id", instance, *extra,
        ]  # fmt: skip
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        return subprocess.Popen(args, env=env, cwd=ROOT)

    async def lag(self) -> int:
        """Records of the input not yet covered by the group's committed offsets."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, isolation_level="read_committed")
        await admin.start()
        await consumer.start()
        try:
            tps = await partitions_of(self.bootstrap, self.names["input"])
            ends = await consumer.end_offsets(tps)
            committed = await admin.list_consumer_group_offsets(self.names["app"])
            return sum(ends[tp] - (committed[tp].offset if tp in committed else 0) for tp in tps)
        finally:
            await consumer.stop()
            await admin.close()

    async def wait_caught_up(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while (lag := await self.lag()) > 0:
            assert time.monotonic() < deadline, f"still {lag} records behind"
            await asyncio.sleep(0.5)

    async def wait_members_assigned(self, members: int, timeout_s: float) -> None:
        """Until the group is stable with `members` members, each assigned partitions of the input."""
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        deadline = time.monotonic() + timeout_s
        seen = "not described yet"
        while True:
            future = admin.describe_consumer_groups([self.names["app"]], request_timeout=10)[self.names["app"]]
            group = await asyncio.to_thread(future.result, 15)
            assigned = [len(m.assignment.topic_partitions) if m.assignment else 0 for m in group.members]
            if group.state == ConsumerGroupState.STABLE and len(assigned) == members and all(assigned):
                return
            seen = f"{group.state}, partitions per member {assigned}"
            assert time.monotonic() < deadline, f"the group is not {members} members with partitions: {seen}"
            await asyncio.sleep(0.2)

    async def outputs(self) -> dict[bytes, list[bytes]]:
        """Everything committed to the output topic, per key, in offset order."""
        return await read_committed(self.bootstrap, self.names["output"])

    async def assert_exactly_once(self) -> int:
        outputs = await self.outputs()
        assert set(outputs) == set(self.sent)
        for key, values in outputs.items():
            expected = [b"%d:%s" % (i + 1, v) for i, v in enumerate(self.sent[key])]
            if values != expected:
                counts = [int(v.split(b":")[0]) for v in values]
                pairs = enumerate(zip(values, expected, strict=False))
                first_bad = next((i for i, (got, want) in pairs if got != want), min(len(values), len(expected)))
                raise AssertionError(
                    f"key {key!r}: {len(values)} outputs for {len(expected)} inputs, "
                    f"{len(counts) - len(set(counts))} duplicated counts, first difference at index {first_bad}"
                )
        return sum(len(v) for v in outputs.values())


@pytest.fixture
async def pipeline(
    bootstrap: str, make_topic: Callable[..., Any], unique: Callable[[str], str], tmp_path: Path
) -> Pipeline:
    names = {
        "app": unique("counter"),
        "input": await make_topic("counter-in", partitions=3),
        "output": await make_topic("counter-out", partitions=3),
        "changelog": await make_topic("counter-changelog", partitions=3, compact=True),
        "log": await make_topic("counter-log", partitions=3),  # not compacted: its records have no key
    }
    return Pipeline(bootstrap, names, tmp_path)


def _stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


async def test_commits_larger_than_a_broker_message(pipeline: Pipeline) -> None:
    # ~2 MB per partition per commit (the output topic takes 1 MiB per record batch), and one record per
    # 100 larger than a producer batch on its own.
    await pipeline.produce(800, keys=6, pad=lambda i: 600_000 if i % 100 == 7 else 8_000)
    app = pipeline.spawn("a", "--commit-interval-ms", "5000")
    try:
        await pipeline.wait_caught_up(90)
    finally:
        _stop(app)
    assert await pipeline.assert_exactly_once() == 800


async def test_a_failure_mid_batch_commits_nothing_of_that_batch(pipeline: Pipeline) -> None:
    await pipeline.produce(2_000, keys=8)
    crashing = pipeline.spawn("a", "--fail-at", "v001000", "--commit-interval-ms", "60000")
    assert crashing.wait(60) != 0, "the injected failure must stop the processor"
    app = pipeline.spawn("a")
    try:
        await pipeline.wait_caught_up(60)
    finally:
        _stop(app)
    # Had the half-processed batch been committed, the failing key's count would skip a number.
    assert await pipeline.assert_exactly_once() == 2_000


@pytest.mark.parametrize(
    "changelog",
    [
        pytest.param((), id="own-changelog"),
        # The output topic is the store's changelog (as the state topic is the accounts store's): each restore
        # after a kill reads the counts back from the committed outputs of its partition.
        pytest.param(("--output-logged",), id="output-as-changelog"),
        # One record per transaction holding the counts it put (the dedupe store's log): each restore after a
        # kill reads every record of its partition's log, or those after its checkpoint.
        pytest.param(("--expiring",), id="expiring-log"),
    ],
)
async def test_exactly_once_through_repeated_kill_9(pipeline: Pipeline, changelog: tuple[str, ...]) -> None:
    total = 20_000
    producing = asyncio.create_task(pipeline.produce(total, keys=40, per_second=1000))
    rng = random.Random(7)
    kills = 0
    app = pipeline.spawn("a", *changelog)
    try:
        started = time.monotonic()
        while not producing.done() and time.monotonic() - started < 60:
            await asyncio.sleep(rng.uniform(1.5, 3.5))
            app.send_signal(signal.SIGKILL)
            app.wait()
            kills += 1
            app = pipeline.spawn("a", *changelog)
        await producing
        await pipeline.wait_caught_up(120)
    finally:
        _stop(app)
    assert kills >= 3, "the test must actually have killed the processor mid-stream"
    assert await pipeline.assert_exactly_once() == total
    print(f"kill -9 loop: {kills} kills in {time.monotonic() - started:.0f}s, {total} records, exactly once")


async def test_second_instance_takes_over_a_killed_one(pipeline: Pipeline) -> None:
    total = 12_000
    await pipeline.produce(total // 2, keys=30)
    first = pipeline.spawn("a")
    second = pipeline.spawn("b")
    try:
        await pipeline.wait_members_assigned(2, 60)  # both in the group, each with partitions
        await pipeline.wait_caught_up(60)  # and the first half processed: the kill falls in the second
        producing = asyncio.create_task(pipeline.produce(total // 2, keys=30, start=total // 2, per_second=1500))
        await asyncio.sleep(1.5)
        first.send_signal(signal.SIGKILL)  # its partitions move to `second` after the session timeout
        first.wait()
        await producing
        await pipeline.wait_caught_up(120)
    finally:
        _stop(first)
        _stop(second)
    assert await pipeline.assert_exactly_once() == total


# -- the broker refusing records: no commit without every output acknowledged ---------------------------


async def _topic_config(bootstrap: str, topic: str, config: dict[str, str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=config)])
    finally:
        await admin.close()


async def _assert_exactly_once_or_rejected(pipeline: Pipeline, limit: int) -> int:
    """Every input once: counted in order when its output fits the topic, else a `rejected` marker that
    leaves the count alone (the refused record's state write was dropped with its output)."""
    outputs = await pipeline.outputs()
    assert set(outputs) == set(pipeline.sent)
    rejected = 0
    for key, values in outputs.items():
        expected: list[bytes | None] = []
        count = 0
        for value in pipeline.sent[key]:
            if len(value) + 16 > limit:
                expected.append(None)
            else:
                count += 1
                expected.append(b"%d:%s" % (count, value))
        assert len(values) == len(expected), f"key {key!r}: {len(values)} outputs for {len(expected)} inputs"
        for got, want in zip(values, expected, strict=True):
            if want is None:
                assert got.startswith(b"rejected:"), got[:40]
                rejected += 1
            else:
                assert got == want, (got[:40], want[:40])
    return rejected


async def test_an_output_the_broker_refuses_is_dead_lettered_never_committed_without(pipeline: Pipeline) -> None:
    # The output topic takes 64 kB; one input in 40 makes a 100 kB output, which the broker refuses (its
    # batch with it). Before the fix the transaction committed the input offsets anyway: outputs vanished.
    limit = 64_000
    await _topic_config(pipeline.bootstrap, pipeline.names["output"], {"max.message.bytes": str(limit)})
    await pipeline.produce(400, keys=6, pad=lambda i: 100_000 if i % 40 == 17 else 50)
    app = pipeline.spawn("a")
    try:
        await pipeline.wait_caught_up(120)
    finally:
        _stop(app)
    assert await _assert_exactly_once_or_rejected(pipeline, limit) == 10


async def test_a_limit_lowered_at_runtime_loses_nothing(pipeline: Pipeline) -> None:
    await pipeline.produce(300, keys=6, pad=50)
    app = pipeline.spawn("a")
    try:
        await pipeline.wait_caught_up(60)
        # An operator lowers the output topic's limit under the running processor.
        limit = 4_000
        await _topic_config(pipeline.bootstrap, pipeline.names["output"], {"max.message.bytes": str(limit)})
        await pipeline.produce(200, keys=6, start=300, pad=lambda i: 6_000 if i % 20 == 5 else 50)
        await pipeline.wait_caught_up(180)
    finally:
        _stop(app)
    assert await _assert_exactly_once_or_rejected(pipeline, limit) == 10


async def test_records_of_one_partition_are_processed_in_offset_order_whatever_their_timestamps(
    pipeline: Pipeline,
) -> None:
    # Timestamps that run backwards within a partition (a gateway draining its spool does that): sorting a
    # fetch by timestamp processed later offsets first, so the committed offset could trail processed work.
    producer = AIOKafkaProducer(bootstrap_servers=pipeline.bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        base = int(time.time() * 1000)
        for i in range(200):
            value = b"v%06d" % i
            pipeline.sent[b"k"].append(value)
            await producer.send(pipeline.names["input"], value, key=b"k", partition=0, timestamp_ms=base - i * 10)
        await producer.flush()
    finally:
        await producer.stop()
    app = pipeline.spawn("a")
    try:
        await pipeline.wait_caught_up(60)
    finally:
        _stop(app)
    assert await pipeline.assert_exactly_once() == 200


async def test_no_commit_while_the_output_topic_is_gone(pipeline: Pipeline) -> None:
    # The output topic is deleted under the running processor: nothing can be acknowledged, so no input
    # offset may be committed until it exists again; then the counts continue where they stopped.
    output = pipeline.names["output"]
    await pipeline.produce(300, keys=3, pad=50)
    app = pipeline.spawn("a", "--commit-interval-ms", "50")
    admin = AIOKafkaAdminClient(bootstrap_servers=pipeline.bootstrap)
    await admin.start()
    try:
        await pipeline.wait_caught_up(60)
        before = await pipeline.outputs()
        await admin.delete_topics([output])
        await pipeline.produce(300, keys=3, start=300, pad=50)
        await asyncio.sleep(8)  # time for many commit attempts: every one must fail
        assert await pipeline.lag() == 300, "an input offset was committed while its output topic was gone"
        deadline = time.monotonic() + 30
        while True:  # deletion is asynchronous in the broker: retry until the name is free again
            try:
                await admin.create_topics([NewTopic(output, 3, 1)])
                break
            except Errors.TopicAlreadyExistsError:
                assert time.monotonic() < deadline, "the deleted topic never went away"
                await asyncio.sleep(0.5)
        await pipeline.wait_caught_up(120)
    finally:
        await admin.close()
        _stop(app)
    after = await pipeline.outputs()
    for key, values in pipeline.sent.items():
        expected = [b"%d:%s" % (i + 1, v) for i, v in enumerate(values)]
        # What was committed before the deletion went with the topic; the rest is there exactly once.
        assert before[key] + after[key] == expected, key
