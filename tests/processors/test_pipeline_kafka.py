"""The account pipeline against the real broker: dedupe, pending/final join and timeouts, end to end.

Family-topic records are produced exactly as the gateway produces them (schemas.envelope + codec), the
processor service runs in-process, and a read_committed consumer checks the output topics. Tests share
the family and output topics, so each one uses its own accounts and application id, and starts at their end:
its processors' group is committed at the end of the family topics before the test delivers anything, and its
readers start where the output topics ended. What earlier tests wrote is never read again (a test's cost does
not grow with the tests before it), and tests pass in any order.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.records_to_delete import RecordsToDelete
from aiokafka.partitioner import DefaultPartitioner

from common.offsets import start_at_end
from common.settings import KafkaSettings
from common.topics import TopicSettings, ensure_topics
from processors.pipeline import PipelineCounters
from processors.runtime import engine as engine_module
from processors.runtime.engine import Engine, MissingTopicsError
from processors.service import build_engine, serve_engine
from processors.settings import ProcessorSettings
from processors.topics import all_topics
from schemas import catalog
from schemas.catalog import changelog_topic, entry_log_topic
from schemas.codec import Codec, build_codec
from schemas.envelope import build_family_record
from schemas.settings import SchemaSettings
from tests.processors.faulty import event_id_of, inject_bug
from tests.processors.pipeline_driver import IndependentReader
from tests.sample_data import account_added


def job_body(event_type: str, account_id: str, outcome: str, at: datetime, job_id: str | None = None) -> dict[str, Any]:
    name = event_type.split(".")[0]
    return {
        "event_id": str(uuid.uuid4()),
        "event": event_type,
        "payload": {
            "id": job_id or str(uuid.uuid4()),
            "account_id": account_id,
            "link_token_id": str(uuid.uuid4()),
            "name": name,
            "timestamp": at.isoformat(),
            "outcome": outcome,
            "error_code": "timeout" if outcome == "error" else None,
            "error_type": "platform" if outcome == "error" else None,
            "params": {},
        },
    }


OUTPUT_TOPICS = (
    catalog.ACCOUNT_UPDATES_TOPIC,
    catalog.ACCOUNT_STATE_TOPIC,
    catalog.ACCOUNT_READINESS_TOPIC,
    catalog.DEADLETTER_TOPIC,
)


@dataclass
class Harness:
    bootstrap: str
    codec: Codec
    app_id: str
    outputs_start: dict[TopicPartition, int]  # the output topics' end offsets when the test began

    async def read_outputs(self, topic: str) -> AIOKafkaConsumer:
        """A started read_committed consumer of `topic` from where it ended when the test began."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, isolation_level="read_committed")
        await consumer.start()
        tps = [tp for tp in self.outputs_start if tp.topic == topic]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, self.outputs_start[tp])
        return consumer

    async def deliver(self, bodies: list[dict[str, Any]], received_at: datetime | None = None) -> None:
        """Publish each body as the gateway would (same topic, key, Avro value, headers)."""
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            for body in bodies:
                now = received_at or datetime.now(UTC)
                record = build_family_record(
                    orjson.dumps(body), webhook_id="wh", pinwheel_version="2023-11-22", sent_at=now, received_at=now
                )
                value = self.codec.encode(record.topic, record.value)
                headers = record.kafka_headers(self.codec.content_format)
                await producer.send(record.topic, value, key=record.key, headers=headers)
            await producer.flush()
        finally:
            await producer.stop()

    async def truncate(self, topic: str, partition: int) -> None:
        """Delete every record of one partition (the log start moves to its end)."""
        tp = TopicPartition(topic, partition)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap)
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await consumer.start()
        await admin.start()
        try:
            end = (await consumer.end_offsets([tp]))[tp]
            await admin.delete_records({tp: RecordsToDelete(before_offset=end)})
        finally:
            await admin.close()
            await consumer.stop()

    async def updates_for(
        self, accounts: set[str], expect: int, timeout_s: float = 60, settle_s: float = 2.0
    ) -> list[dict[str, Any]]:
        """The committed account updates of `accounts`; waits for `expect` of them, then a little more."""
        consumer = await self.read_outputs(catalog.ACCOUNT_UPDATES_TOPIC)
        found: list[dict[str, Any]] = []
        try:
            deadline = time.monotonic() + timeout_s
            settle_until = None
            while time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=300)).values():
                    for r in records:
                        if r.key.decode() in accounts:
                            found.append(self.codec.decode(catalog.ACCOUNT_UPDATES_TOPIC, r.value))
                if len(found) >= expect:
                    settle_until = settle_until or time.monotonic() + settle_s
                    if time.monotonic() >= settle_until:
                        break
        finally:
            await consumer.stop()
        return found


async def start_harness(bootstrap: str, app_id: str) -> Harness:
    """The topics of application `app_id`, its group committed at the end of the family topics, and the output
    topics' end offsets: the test's processors and readers see what it writes, nothing earlier."""
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    await ensure_topics(kafka, all_topics(TopicSettings(processor_application_id=app_id)))
    await start_at_end(kafka, app_id, list(catalog.FAMILY_TOPICS.values()))
    return Harness(bootstrap, build_codec(SchemaSettings()), app_id, await end_offsets(bootstrap, OUTPUT_TOPICS))


@pytest.fixture
async def harness(bootstrap: str, unique: Callable[[str], str]) -> Harness:
    return await start_harness(bootstrap, unique("pipeline"))


async def end_offsets(bootstrap: str, topics: tuple[str, ...]) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


class Clock:
    """The processors' wall clock, moved by the test: timeouts fire when the test says, not when a loaded
    machine happens to get there."""

    def __init__(self, start: datetime) -> None:
        self.now = start.timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@contextlib.asynccontextmanager
async def running_processor(
    harness: Harness,
    state_dir: Path,
    clock: Clock | None = None,
    tune: Callable[[Engine], None] | None = None,
    **overrides: Any,
) -> AsyncIterator[None]:
    defaults = {
        "application_id": harness.app_id,
        "state_dir": state_dir,
        "health_port": 0,
        "punctuate_interval_ms": 200,
    }
    settings = ProcessorSettings.model_validate(defaults | overrides)
    counters = PipelineCounters()
    engine = build_engine(settings, KafkaSettings(bootstrap_servers=harness.bootstrap), SchemaSettings(), counters)
    if clock is not None:
        engine.clock = clock
    if tune is not None:
        tune(engine)
    stop = asyncio.Event()
    task = asyncio.create_task(serve_engine(settings, engine, counters, stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def test_duplicates_give_exactly_one_update_per_unique_event(harness: Harness, tmp_path: Path) -> None:
    rng = random.Random(3)
    accounts = [str(uuid.uuid4()) for _ in range(40)]
    now = datetime.now(UTC)
    unique_events: list[dict[str, Any]] = []
    for account in accounts:
        unique_events.append(account_added(account, now))
        for event_type in ("employment.added", "income.added", "direct_deposit_allocations.added"):
            unique_events.append(job_body(event_type, account, "success", now))
    deliveries = [body for body in unique_events for _ in range(rng.choice((1, 1, 2, 3)))]
    assert len(deliveries) > len(unique_events)  # the run really contains duplicates
    async with running_processor(harness, tmp_path):
        await harness.deliver(deliveries)
        updates = await harness.updates_for(set(accounts), expect=len(unique_events))
    counts = Counter(u["update_id"] for u in updates)
    assert set(counts) == {body["event_id"] for body in unique_events}
    assert all(n == 1 for n in counts.values()), [k for k, n in counts.items() if n > 1][:5]


async def test_pending_then_final_is_joined_and_lonely_pending_times_out(harness: Harness, tmp_path: Path) -> None:
    account = str(uuid.uuid4())
    t0 = datetime.now(UTC)
    pending = job_body("employment.added", account, "pending", t0)
    pending_again = {**pending, "event_id": str(uuid.uuid4())}  # Pinwheel re-announces the still-pending job
    final = job_body("employment.added", account, "success", datetime.now(UTC), job_id=pending["payload"]["id"])
    lonely = job_body("identity.added", account, "pending", t0)
    # A 3-second pending window (plus no grace); the processors' clock stands still until the test moves it.
    clock = Clock(t0)
    async with running_processor(harness, tmp_path, clock, pending_timeout_h=3 / 3600, timeout_grace_s=0):
        await harness.deliver([account_added(account, t0), pending, pending_again, lonely], received_at=t0)
        assert len(await harness.updates_for({account}, expect=4, settle_s=0.5)) == 4
        await harness.deliver([final], received_at=t0 + timedelta(seconds=1))
        assert len(await harness.updates_for({account}, expect=5, settle_s=0.5)) == 5
        clock.advance(10)  # past the lonely pending's deadline: the punctuation times it out
        updates = await harness.updates_for({account}, expect=6, timeout_s=40)
    by_change = defaultdict(list)
    for update in updates:
        by_change[update["change"]].append(update)
    joined = next(u for u in by_change["job_succeeded"] if u["outcome"]["job"] == "employment")
    outcome = joined["outcome"]
    assert outcome["outcome"] == "success"
    assert outcome["pending_since"] is not None
    assert outcome["resolved_at"] is not None
    assert outcome["time_to_resolve_ms"] >= 0
    assert outcome["deliveries_seen"] == 3  # two pending announcements and the final
    timed_out = [u for u in by_change["job_timed_out"]]
    assert [u["update_id"] for u in timed_out] == [f"{lonely['event_id']}:timed_out"]
    assert timed_out[0]["outcome"]["outcome"] == "timed_out"
    # Once over, the employment job never times out.
    assert all(u["outcome"]["job"] != "employment" for u in timed_out)
    state = updates[-1]["account"]
    assert str(state["account_id"]) == account


async def test_a_catch_up_never_times_out_a_pending_whose_final_waits_unread(harness: Harness, tmp_path: Path) -> None:
    # A backlog: a pending, its final 1 s later, and a pending that never resolves, all read by a processor
    # whose clock is already a minute later (it was stopped meanwhile). The window is 2 s. Records come one
    # per poll with punctuation in between: a wall-clock timer firing before the final is read would time the
    # job out although its final is in Kafka.
    account = str(uuid.uuid4())
    t0 = datetime.now(UTC)
    pending = job_body("employment.added", account, "pending", t0)
    final = job_body("employment.added", account, "success", t0, job_id=pending["payload"]["id"])
    lonely = job_body("identity.added", account, "pending", t0)
    await harness.deliver([account_added(account, t0), pending, lonely], received_at=t0)
    await harness.deliver([final], received_at=t0 + timedelta(seconds=1))
    overrides = {"pending_timeout_h": 2 / 3600, "timeout_grace_s": 0, "max_poll_records": 1}
    clock = Clock(t0 + timedelta(seconds=60))
    async with running_processor(harness, tmp_path, clock, **overrides, punctuate_interval_ms=10):
        updates = await harness.updates_for({account}, expect=5, timeout_s=60)
    changes = Counter((u["change"], u["outcome"]["job"] if u["outcome"] else None) for u in updates)
    assert changes[("job_timed_out", "employment")] == 0, changes
    assert changes[("job_succeeded", "employment")] == 1, changes
    # Once caught up, the clock does time out what never resolved.
    assert changes[("job_timed_out", "identity")] == 1, changes


async def test_timers_are_derived_on_a_new_machine_and_from_a_checkpoint_and_its_tail(
    harness: Harness, tmp_path: Path
) -> None:
    # The timers have no changelog: each restore derives them from the jobs (and dedupe) changelogs. Machine a
    # opens two pendings (3 s windows) and stops; machine b (an empty state directory) closes one, opens a third
    # and times the first out; back on a (its checkpoint, then b's records), the third times out, and neither
    # the closed one nor the first (a's checkpoint still has their timers) times out again.
    account = str(uuid.uuid4())
    t0 = datetime.now(UTC)
    first = job_body("employment.added", account, "pending", t0)
    closed = job_body("identity.added", account, "pending", t0)
    final = job_body("identity.added", account, "success", t0 + timedelta(seconds=1), job_id=closed["payload"]["id"])
    third = job_body("income.added", account, "pending", t0 + timedelta(seconds=1))
    window = {"pending_timeout_h": 3 / 3600, "timeout_grace_s": 0}
    clock = Clock(t0)
    engines: list[Engine] = []
    async with running_processor(harness, tmp_path / "a", clock, **window):
        await harness.deliver([first, closed], received_at=t0)
        assert len(await harness.updates_for({account}, expect=2, settle_s=0.5)) == 2
    async with running_processor(harness, tmp_path / "b", clock, engines.append, **window):
        await harness.deliver([final, third], received_at=t0 + timedelta(seconds=1))
        assert len(await harness.updates_for({account}, expect=4, settle_s=0.5)) == 4
        clock.advance(3.5)  # past the first's deadline (t0 + 3 s), not the third's (t0 + 4 s)
        assert len(await harness.updates_for({account}, expect=5, settle_s=0.5)) == 5
    clock.advance(10)
    async with running_processor(harness, tmp_path / "a", clock, engines.append, **window):
        updates = await harness.updates_for({account}, expect=6, settle_s=2.0)
    timed_out = [u["update_id"] for u in updates if u["change"] == "job_timed_out"]
    assert timed_out == [f"{first['event_id']}:timed_out", f"{third['event_id']}:timed_out"]
    assert len(updates) == 6
    assert all(engine.stats.restored_records > 0 for engine in engines)  # each restored the other's records
    consumer = AIOKafkaConsumer(bootstrap_servers=harness.bootstrap)
    await consumer.start()
    try:
        assert changelog_topic(harness.app_id, "timers") not in await consumer.topics()
    finally:
        await consumer.stop()


def _partition_of(account: str) -> int:
    every = list(range(TopicSettings().partitions))
    return int(DefaultPartitioner()(account.encode(), every, every))


def _same_partition_account(account: str) -> str:
    """Another account whose records land in the same partition as `account`'s (default partitioner)."""
    while True:
        other = str(uuid.uuid4())
        if _partition_of(other) == _partition_of(account):
            return other


async def test_one_far_future_record_does_not_expire_the_partitions_dedupe(harness: Harness, tmp_path: Path) -> None:
    # A gateway whose clock jumped 8 days ahead stamps one record; the dedupe retention is 7 days. Stream
    # time moved to that record's received_at expired every event id of the partition, so re-sent old
    # deliveries came out again. The broker's append time now bounds how far one record moves stream time.
    account = str(uuid.uuid4())
    jumped = _same_partition_account(account)
    now = datetime.now(UTC)
    first = account_added(account, now)
    try:
        async with running_processor(harness, tmp_path):
            await harness.deliver([first])
            assert len(await harness.updates_for({account}, expect=1, settle_s=0.5)) == 1
            await harness.deliver([account_added(jumped, now)], received_at=now + timedelta(days=8))
            assert len(await harness.updates_for({jumped}, expect=1, settle_s=0.5)) == 1
            await harness.deliver([first])  # a re-sent old delivery (Pinwheel retry, spool replay)
            marker = account_added(account, now)  # then a new event: once it is out, the re-send was handled
            await harness.deliver([marker])
            updates = await harness.updates_for({account}, expect=2, settle_s=1.0)
    finally:
        # Tests elsewhere whose processors read the shared family topics from the start (tests/operate): the
        # jumped record would still move their stream time (by up to max_clock_skew). Truncate it away.
        await harness.truncate(catalog.FAMILY_TOPICS[catalog.Family.ACCOUNT], _partition_of(account))
    assert [u["update_id"] for u in updates] == [first["event_id"], marker["event_id"]]


async def committed_records(h: Harness, topic: str, keys: set[bytes], expect: int) -> list[Any]:
    """A plain read_committed consumer (no project code): the records of `topic` with one of `keys` since the test
    began."""
    consumer = await h.read_outputs(topic)
    found: list[Any] = []
    try:
        deadline = time.monotonic() + 40
        while len(found) < expect and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                found += [r for r in records if r.key in keys]
    finally:
        await consumer.stop()
    return found


async def test_output_records_carry_the_headers_of_the_event_they_come_from(harness: Harness, tmp_path: Path) -> None:
    account = str(uuid.uuid4())
    t0 = datetime.now(UTC)
    added = account_added(account, t0)
    income = job_body("income.added", account, "success", t0)
    lonely = job_body("identity.added", account, "pending", t0)
    garbage_id = str(uuid.uuid4())
    async with running_processor(harness, tmp_path, pending_timeout_h=2 / 3600, timeout_grace_s=0):
        await harness.deliver([added, income, lonely])
        # a record on a family topic that is not Avro: its dead letter keeps the delivery's ids
        producer = AIOKafkaProducer(bootstrap_servers=harness.bootstrap)
        await producer.start()
        source_headers = [("event_id", garbage_id.encode()), ("webhook_id", b"wh"), ("pinwheel_version", b"v9")]
        topic = catalog.FAMILY_TOPICS[catalog.Family.ACCOUNT]
        await producer.send_and_wait(topic, b"\x00garbage", key=account.encode(), headers=source_headers)
        await producer.stop()
        updates = await committed_records(harness, catalog.ACCOUNT_UPDATES_TOPIC, {account.encode()}, 4)
        states = await committed_records(harness, catalog.ACCOUNT_STATE_TOPIC, {account.encode()}, 1)
        dead = await committed_records(harness, catalog.DEADLETTER_TOPIC, {garbage_id.encode()}, 1)

    def headers(record: Any) -> dict[str, str]:
        names = [name for name, _ in record.headers]
        assert len(names) == len(set(names)), names  # each header once
        return {name: value.decode() for name, value in record.headers}

    delivered = {"webhook_id": "wh", "pinwheel_version": "2023-11-22", "content_format": harness.codec.content_format}
    by_event = {headers(r)["event_id"]: headers(r) for r in updates}
    assert set(by_event) == {added["event_id"], income["event_id"], lonely["event_id"]}
    for body in (added, income):  # an update caused by a delivery: all five headers, the delivery's
        assert by_event[body["event_id"]] == {"event_id": body["event_id"], "event_type": body["event"], **delivered}
    # lonely: its pending update has all five; its timeout (no delivery of its own) names the pending event
    lonely_updates = [headers(r) for r in updates if headers(r)["event_id"] == lonely["event_id"]]
    assert {"event_id": lonely["event_id"], "event_type": "identity.added", **delivered} in lonely_updates
    assert {
        "event_id": lonely["event_id"],
        "event_type": "identity.added",
        "content_format": harness.codec.content_format,
    } in lonely_updates
    # every account_state record names the last event applied to the account
    for record in states:
        state_headers = headers(record)
        assert state_headers["event_id"] in by_event
        assert state_headers["content_format"] == harness.codec.content_format
        assert "event_type" in state_headers
    [dead_letter] = dead
    assert headers(dead_letter) == {
        "event_id": garbage_id,
        "webhook_id": "wh",
        "pinwheel_version": "v9",
        "content_format": harness.codec.content_format,
        "error_reason": "decode_error",
    }


async def test_a_changelog_deleted_under_the_running_processor_stops_it_naming_the_topic(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: a task that can neither commit nor restore retried (and logged) forever.
    monkeypatch.setattr(engine_module, "MISSING_TOPICS_GRACE_S", 1.0)
    account = str(uuid.uuid4())
    changelog = entry_log_topic(harness.app_id, "dedupe")  # an account.added writes dedupe (and the state topic)
    settings = ProcessorSettings.model_validate(
        {"application_id": harness.app_id, "state_dir": tmp_path, "health_port": 0, "commit_timeout_s": 3}
    )
    counters = PipelineCounters()
    # A 5 s client request timeout (30 s by default): the failed commits and restores it waits on end sooner.
    kafka = KafkaSettings(bootstrap_servers=harness.bootstrap, request_timeout_ms=5_000)
    engine = build_engine(settings, kafka, SchemaSettings(), counters)
    running = asyncio.create_task(serve_engine(settings, engine, counters, asyncio.Event()))
    admin = AIOKafkaAdminClient(bootstrap_servers=harness.bootstrap)
    await admin.start()
    try:
        await harness.deliver([account_added(account, datetime.now(UTC))])
        assert len(await harness.updates_for({account}, expect=1, settle_s=0.2)) == 1
        await admin.delete_topics([changelog])
        await harness.deliver([account_added(account, datetime.now(UTC))])  # a commit that needs the changelog
        with pytest.raises(MissingTopicsError) as info:
            await asyncio.wait_for(running, 90)
    finally:
        running.cancel()
        await admin.close()
    assert info.value.missing == [changelog]
    assert "topics create" in str(info.value)


async def test_a_record_whose_processing_fails_is_kept_without_its_effects(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bug that raises half-way through an event (its dedupe entry and state already written): the record is
    # dead-lettered, its effects dropped with the failed batch, the records around it processed once. After
    # the fix, a replay of it is processed as new: the half-written dedupe entry did not survive.
    account = str(uuid.uuid4())
    t0 = datetime.now(UTC)
    before, bad, after = (
        job_body(t, account, "success", t0) for t in ("employment.added", "income.added", "identity.added")
    )
    inject_bug(monkeypatch, lambda record: "processing_error" if event_id_of(record) == bad["event_id"] else None)
    await harness.deliver([account_added(account, t0), before, bad, after])
    async with running_processor(harness, tmp_path):
        updates = await harness.updates_for({account}, expect=3, settle_s=1.0)
        [dead] = await committed_records(harness, catalog.DEADLETTER_TOPIC, {bad["event_id"].encode()}, 1)
    assert [u["change"] for u in updates] == ["account_connected", "job_succeeded", "job_succeeded"]
    assert [u["update_id"] for u in updates[1:]] == [before["event_id"], after["event_id"]]
    assert bad["event_id"] not in {u["update_id"] for u in updates}
    assert dict(dead.headers)["error_reason"] == b"processing_error"
    monkeypatch.undo()  # the fix
    async with running_processor(harness, tmp_path):
        await harness.deliver([bad])  # what `deadletter replay` re-injects
        updates = await harness.updates_for({account}, expect=4, settle_s=1.0)
    assert Counter(u["update_id"] for u in updates) == dict.fromkeys(
        [updates[0]["update_id"], before["event_id"], bad["event_id"], after["event_id"]], 1
    )


# Issue 25: a processor catching up read one family partition hours ahead of another (a fetch is sized in
# bytes, and a quiet topic's fetch spans hours), stream time jumped to the ahead partition's time, and timers
# fired for pendings whose finals were still unread in the behind partition. The test below builds that backlog
# on purpose, cuts fetches to one record batch per partition and three records per poll, and sets the
# processors' wall clock hours after the backlog, punctuating every 10 ms: no timeout may be premature, from
# either source, and the timeouts that are due still fire.

SKEW_WINDOW_S = 30  # pending timeout, no grace: the shortened window


async def deliver_one_per_batch(h: Harness, deliveries: list[tuple[dict[str, Any], datetime]]) -> None:
    """Each body as the gateway publishes it, received at its own time, one record per batch (so a fetch of
    one batch per partition really splits the backlog)."""
    producer = AIOKafkaProducer(bootstrap_servers=h.bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for body, received_at in deliveries:
            record = build_family_record(
                orjson.dumps(body),
                webhook_id="wh",
                pinwheel_version="2023-11-22",
                sent_at=received_at,
                received_at=received_at,
            )
            value = h.codec.encode(record.topic, record.value)
            headers = record.kafka_headers(h.codec.content_format)
            await producer.send_and_wait(record.topic, value, key=record.key, headers=headers)
    finally:
        await producer.stop()


def small_fetches(engine: Engine) -> None:
    engine.max_fetch_bytes = 1  # the broker still returns one whole batch per partition: one record


async def test_a_skewed_backlog_times_out_no_job_whose_final_was_in_kafka(harness: Harness, tmp_path: Path) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=6)
    first = str(uuid.uuid4())
    accounts = [first] + [_same_partition_account(first) for _ in range(11)]
    partition = _partition_of(first)  # the processors start at the end: the partition's backlog is this one
    # The ahead partition: account.added events spanning three hours (the account topic is quiet).
    ahead = [
        (account_added(a, t0 + timedelta(minutes=20 * i)), t0 + timedelta(minutes=20 * i))
        for i, a in enumerate(accounts[:10])
    ]
    # The behind partition: jobs one minute apart, each resolved 10 s after its pending, well inside the window.
    behind: list[tuple[dict[str, Any], datetime]] = []
    finals: dict[str, datetime] = {}  # pending event_id -> when its final reached the gateway
    deadlines: dict[str, datetime] = {}
    for i, account in enumerate(accounts[:10]):
        at = t0 + timedelta(minutes=i)
        pending = job_body("employment.added", account, "pending", at)
        final = job_body("employment.added", account, "success", at + timedelta(seconds=10), pending["payload"]["id"])
        behind += [(pending, at), (final, at + timedelta(seconds=10))]
        finals[pending["event_id"]] = at + timedelta(seconds=10)
        deadlines[pending["event_id"]] = at + timedelta(seconds=SKEW_WINDOW_S)
    # Due timeouts: a pending that never resolves, and one whose final comes 45 s late (timed out, then joined).
    lonely = job_body("identity.added", accounts[10], "pending", t0 + timedelta(seconds=5))
    late_at = t0 + timedelta(minutes=3, seconds=30)
    late = job_body("income.added", accounts[11], "pending", late_at)
    late_final = job_body(
        "income.added", accounts[11], "success", late_at + timedelta(seconds=45), late["payload"]["id"]
    )
    behind += [(lonely, t0 + timedelta(seconds=5)), (late, late_at), (late_final, late_at + timedelta(seconds=45))]
    finals[late["event_id"]] = late_at + timedelta(seconds=45)
    deadlines[late["event_id"]] = late_at + timedelta(seconds=SKEW_WINDOW_S)
    behind.sort(key=lambda item: item[1])
    try:
        # The ahead partition first: by append time (what the merge used to order by) it comes first too.
        await deliver_one_per_batch(harness, ahead)
        await deliver_one_per_batch(harness, behind)
        clock = Clock(t0 + timedelta(hours=6))  # the processors' wall clock: hours past every deadline
        overrides = {
            "pending_timeout_h": SKEW_WINDOW_S / 3600,
            "timeout_grace_s": 0,
            "max_poll_records": 3,
            "punctuate_interval_ms": 10,
        }
        expect = len(ahead) + len(behind) + 2  # every event an update, and two timeouts
        async with running_processor(harness, tmp_path, clock, small_fetches, **overrides):
            updates = await harness.updates_for(set(accounts), expect=expect, timeout_s=60, settle_s=1.0)
    finally:
        for topic in catalog.FAMILY_TOPICS.values():  # tests elsewhere read the family topics from the start
            await harness.truncate(topic, partition)
    timed_out = [u["update_id"].removesuffix(":timed_out") for u in updates if u["change"] == "job_timed_out"]
    premature = [event_id for event_id in timed_out if event_id in finals and finals[event_id] <= deadlines[event_id]]
    assert premature == [], f"{len(premature)} of {len(timed_out)} timeouts premature"
    assert Counter(timed_out) == {lonely["event_id"]: 1, late["event_id"]: 1}
    changes = Counter(u["change"] for u in updates)
    assert changes["job_succeeded"] == 11, changes  # ten joined in time, one late-joined after its timeout
    assert len(updates) == expect, changes


async def test_enum_values_pinwheel_adds_are_written_as_unknown_and_the_account_keeps_flowing(
    harness: Harness, tmp_path: Path
) -> None:
    """docs/wire-format.md, "Enums are open": a new monitoring status and a new platform type and action give
    their updates (not dead letters), written as `unknown`; the account's next event flows too. Outputs are read
    with fastavro and the .avsc files only (`IndependentReader`)."""
    account = str(uuid.uuid4())
    t0 = datetime.now(UTC)
    added = account_added(account, t0)
    added["payload"]["monitoring_status"] = "paused"
    recommended = {
        "event_id": str(uuid.uuid4()),
        "event": "account.additional_connections_recommended",
        "payload": {
            "account_id": account,
            "additional_platforms": [
                {"platform_type": "gig_economy", "action": "login"},
                {"platform_type": "payroll", "action": "connect_later"},
            ],
        },
    }
    income = job_body("income.added", account, "success", t0)
    reader = IndependentReader()
    key = {account.encode()}
    async with running_processor(harness, tmp_path):
        await harness.deliver([added, recommended])
        first = await committed_records(harness, catalog.ACCOUNT_UPDATES_TOPIC, key, 2)
        await harness.deliver([income])  # after both: its context carries the new status
        updates = await committed_records(harness, catalog.ACCOUNT_UPDATES_TOPIC, key, 3)
        # snapshots are coalesced per account and commit: read until the one after the third event
        consumer = await harness.read_outputs(catalog.ACCOUNT_STATE_TOPIC)
        states: list[dict[str, Any]] = []
        try:
            deadline = time.monotonic() + 40
            while not any(s["events_applied"] == 3 for s in states) and time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=300)).values():
                    states += [reader.decode(r.value) for r in records if r.key in key]
        finally:
            await consumer.stop()
    assert len(first) == 2
    by_event = {u["update_id"]: u for u in (reader.decode(r.value) for r in updates)}
    assert set(by_event) == {added["event_id"], recommended["event_id"], income["event_id"]}  # none dead-lettered
    for update in by_event.values():
        assert update["account"]["monitoring_status"] == "unknown"
    assert by_event[income["event_id"]]["change"] == "job_succeeded"
    last = max(states, key=lambda s: s["events_applied"])
    assert last["events_applied"] == 3
    assert last["monitoring_status"] == "unknown"
    assert [(p["platform_type"], p["action"]) for p in last["additional_platforms"]] == [
        ("unknown", "login"),
        ("payroll", "unknown"),
    ]
