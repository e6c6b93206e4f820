"""The accounts store's changelog is the contract's state topic, `pinwheel.account_state.v1` (`StoreSpec.changelog`):
each account snapshot is written once, there, in the task's partition, and the restore reads it back through the
pipeline's codec. Broker-free: the real Engine, AccountPipeline and RocksDB state over the in-memory broker
(`PipelineDriver`, `Machines`), and `restore` itself over that broker for what it refuses.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from processors.logic.account_table import AccountState
from processors.logic.codec import ACCOUNT_STATE_SERDE
from processors.logic.config import LogicConfig
from processors.logic.stores import ACCOUNTS, JOBS, TIMERS
from processors.pipeline import (
    LOG_APPEND_TIME,
    AccountPipeline,
    PipelineCounters,
    pipeline_task_state,
    state_topic_translation,
    timers_derivation,
)
from processors.runtime.restore import ChangelogUnreadable, RestoreStats, restore
from processors.runtime.state import TaskState
from processors.runtime.task import RecordingContext
from processors.topics import changelog_topics
from processors.wire import state_datum
from schemas import catalog
from schemas.catalog import changelog_topic
from schemas.codec import Codec
from schemas.confluent import RegistryClient, RegistryUnavailable
from schemas.envelope import build_family_record
from schemas.settings import SchemaSettings
from tests.processors.memory_kafka import MemoryKafka, MemoryRecord
from tests.processors.pipeline_driver import APP_ID, Machines, Output, PipelineDriver, on
from tests.processors.test_timers_restore import ACCOUNT, T0, final, pending  # the jobs' account
from tests.sample_data import account_added

STATE = catalog.ACCOUNT_STATE_TOPIC
UPDATES = catalog.ACCOUNT_UPDATES_TOPIC
OTHER = "7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d"
CONFIG = LogicConfig(pending_timeout=timedelta(hours=1), timeout_grace=timedelta(0))


def _deliveries() -> list[tuple[dict[str, Any], datetime]]:
    """An account added, two jobs pending (one closed later), the other account, the account again."""
    start = T0
    job_a, job_b = pending("income.added", start), pending("employment.added", start + timedelta(minutes=1))
    return [
        (account_added(ACCOUNT, start), start),
        (job_a, start),
        (job_b, start + timedelta(minutes=1)),
        (account_added(OTHER, start + timedelta(minutes=2)), start + timedelta(minutes=2)),
        (final(job_a, start + timedelta(minutes=3)), start + timedelta(minutes=3)),
        (account_added(ACCOUNT, start + timedelta(minutes=4)), start + timedelta(minutes=4)),  # a new event id
        (pending("identity.added", start + timedelta(minutes=5)), start + timedelta(minutes=5)),
    ]


def _run(root: Path, plan: str, deliveries: list[tuple[dict[str, Any], datetime]]) -> tuple[list[Output], Machines]:
    """Each delivery on the machine `plan` names (a letter per delivery), then the wall clock past every
    pending's window on the last one: every output committed, in order."""
    machines = Machines(root, CONFIG)
    outputs: list[Output] = []
    current = None
    for machine, (body, at) in zip(plan, deliveries, strict=True):
        if machine != current:
            driver = machines.start(machine)
            current = machine
        outputs += driver.pipe(body, at)
    outputs += driver.advance_to(T0 + timedelta(hours=2))
    return outputs, machines


def _downstream(outputs: list[Output]) -> list[tuple[str, str | None, dict[str, Any]]]:
    return [(o.topic, o.key, o.value) for o in outputs if o.topic != catalog.DEADLETTER_TOPIC]


@pytest.mark.parametrize(
    "plan",
    [
        pytest.param("abbbbbb", id="from-scratch"),  # b restores everything a wrote, from the state topic
        pytest.param("aabbbaa", id="checkpoint-and-tail"),  # back on a: its checkpoint, then b's snapshots
    ],
)
def test_a_restore_from_the_state_topic_gives_the_same_outputs_as_one_uninterrupted_run(
    tmp_path: Path, plan: str
) -> None:
    deliveries = _deliveries()
    reference, single = _run(tmp_path / "single", "a" * len(deliveries), deliveries)
    single.stop()
    outputs, machines = _run(tmp_path / "split", plan, deliveries)
    try:
        assert _downstream(outputs) == _downstream(reference)
        assert machines.current is not None
        assert machines.current.engine.stats.restored_records > 0
        # The accounts store has no changelog of its own: its changelog records are the state snapshots.
        assert changelog_topic(APP_ID, ACCOUNTS) not in machines.broker.topic_names()
        snapshots = [(o.key, o.value) for o in outputs if o.topic == STATE]
        assert len(snapshots) == len(machines.changelog(ACCOUNTS))
        # The account's version went on from the restored one: one per update of the account, timeouts included.
        updates = [o for o in on(outputs, UPDATES) if o.key == ACCOUNT]
        assert [o.value["events_applied"] for o in on(outputs, STATE) if o.key == ACCOUNT][-1] == len(updates) == 8
        timed_out = [o for o in on(outputs, UPDATES) if o.value["change"] == "job_timed_out"]
        assert len(timed_out) == 2  # job b (pending on a, restored on b or a) and the last one
    finally:
        machines.stop()


def test_the_snapshot_goes_to_the_tasks_own_partition(tmp_path: Path) -> None:
    codec = Codec()
    state = pipeline_task_state(tmp_path, APP_ID, 5)
    try:
        ctx = RecordingContext(state, partition=5)
        pipeline = AccountPipeline(ctx, codec, LogicConfig(), PipelineCounters())
        family = build_family_record(
            orjson.dumps(account_added(ACCOUNT, T0)), webhook_id="wh", pinwheel_version="v", sent_at=T0, received_at=T0
        )
        value = codec.encode(family.topic, family.value)
        at_ms = int(T0.timestamp() * 1000)
        pipeline.process(MemoryRecord(family.topic, 5, 0, at_ms, LOG_APPEND_TIME, family.key, value, ()))
        pipeline.end_of_batch()
        [snapshot] = [out for out in ctx.emitted if out.topic == STATE]
        assert (snapshot.partition, snapshot.key) == (5, ACCOUNT.encode())  # not the key's partition: the task's
        # The task writes nothing else for the accounts store: that record is its changelog record.
        assert [store for store, _, _ in state.pending_writes()] == ["dedupe"]
        assert list(state.written_keys(ACCOUNTS)) == [ACCOUNT.encode()]
    finally:
        state.close()


def _jobs_headers(machines: Machines) -> list[tuple[str, dict[str, Any] | None]]:
    """(account, the `pinwheel_jobs` header read as plain JSON, or None) of every committed state record."""
    out = []
    for record in machines.broker.committed_records(STATE):
        raw = dict(record.headers).get("pinwheel_jobs")
        assert raw is None or raw[:1] == b"\x01"  # the serde's version byte
        out.append((record.key.decode() if record.key else "", None if raw is None else orjson.loads(raw[1:])))
    return out


def test_the_jobs_ride_on_the_state_records_and_have_no_changelog_of_their_own(tmp_path: Path) -> None:
    machines = Machines(tmp_path, CONFIG)
    try:
        driver = machines.start("a")
        job_a = pending("income.added", T0)
        driver.pipe(account_added(OTHER, T0), T0)  # an account without jobs: no header
        driver.pipe(job_a, T0)
        driver.pipe(pending("employment.added", T0), T0 + timedelta(seconds=1))
        driver.pipe(final(job_a, T0 + timedelta(minutes=1)), T0 + timedelta(minutes=1))
        headers = _jobs_headers(machines)
        assert [(key, jobs is None) for key, jobs in headers] == [
            (OTHER, True),
            (ACCOUNT, False),
            (ACCOUNT, False),
            (ACCOUNT, False),
        ]
        # Each record carries all of the account's jobs: [open, closed_through, timed_out] by event type.
        assert [sorted(jobs) for _, jobs in headers[1:] if jobs is not None] == [
            ["income.added"],
            ["employment.added", "income.added"],
            ["employment.added", "income.added"],
        ]
        last = headers[-1][1]
        assert last is not None
        assert last["income.added"][0] is None  # closed by its final
        assert last["income.added"][1] is not None
        assert last["employment.added"][0] is not None  # still open
        assert not [t for t in machines.broker.topic_names() if t.endswith("-jobs-changelog")]
    finally:
        machines.stop()


# -- restore itself, over the in-memory broker ----------------------------------------------------------------


def _broker() -> MemoryKafka:
    broker = MemoryKafka()
    for topic in changelog_topics(APP_ID).values():
        broker.create_topic(topic, 1)
    return broker


def _restore(broker: MemoryKafka, path: Path, codec: Codec) -> tuple[TaskState, RestoreStats]:
    state = pipeline_task_state(path, APP_ID, 0)
    derive, translate = timers_derivation(LogicConfig()), state_topic_translation(codec)
    try:
        stats = asyncio.run(restore(state, broker, 3600, derive, translate))
    except BaseException:
        state.close()
        raise
    return state, stats


def _account(account_id: str, version: int) -> AccountState:
    at_us = 1_750_000_000_000_000 + version
    return AccountState(
        account_id,
        connected=True,
        platform_name="Workday",
        version=version,
        last_event_id=f"event-{version}",
        last_event_type="account.added",
        last_event_sent_at_us=at_us,
        last_change="account_added",
        updated_at_us=at_us,
    )


def test_the_restore_takes_each_accounts_latest_snapshot_and_a_tombstone_deletes(tmp_path: Path) -> None:
    codec, broker = Codec(), _broker()
    for account, version in ((ACCOUNT, 1), (OTHER, 1), (ACCOUNT, 2)):
        value = codec.encode(STATE, state_datum(_account(account, version)))
        broker.produce(STATE, 0, account.encode(), value, 0)
    broker.produce(STATE, 0, OTHER.encode(), None, 0)
    state, stats = _restore(broker, tmp_path, codec)
    try:
        assert stats.records == 4
        raw = state.get(ACCOUNTS, ACCOUNT.encode())
        assert raw is not None
        assert ACCOUNT_STATE_SERDE.from_bytes(raw) == _account(ACCOUNT, 2)
        assert state.get(ACCOUNTS, OTHER.encode()) is None
        checkpoint = state.checkpoint()
        assert checkpoint is not None
        assert checkpoint.positions[ACCOUNTS] == 4  # the state topic's offset
    finally:
        state.close()
    # From that checkpoint, only the tail is read.
    broker.produce(STATE, 0, OTHER.encode(), codec.encode(STATE, state_datum(_account(OTHER, 3))), 0)
    state, stats = _restore(broker, tmp_path, codec)
    try:
        assert (stats.from_scratch, stats.records) == (False, 1)
        raw = state.get(ACCOUNTS, OTHER.encode())
        assert raw is not None
        assert ACCOUNT_STATE_SERDE.from_bytes(raw) == _account(OTHER, 3)
    finally:
        state.close()


def _jobs(deadline_us: int | None, closed_us: int | None) -> bytes:
    """An account's jobs as the store keeps them, built by hand: one income job, open until `deadline_us`."""
    first = ["e1", "income.added", "income_employment", None, 1]
    open_job = None if deadline_us is None else [None, 1, 1, 1, deadline_us, first, "income"]
    return b"\x01" + orjson.dumps({"income.added": [open_job, closed_us, None]})


def test_the_restore_takes_the_jobs_from_the_state_records_headers(tmp_path: Path) -> None:
    codec, broker = Codec(), _broker()
    state_of = {account: codec.encode(STATE, state_datum(_account(account, 1))) for account in (ACCOUNT, OTHER)}
    broker.produce(STATE, 0, ACCOUNT.encode(), state_of[ACCOUNT], 0, headers=[("pinwheel_jobs", _jobs(7_000, None))])
    broker.produce(STATE, 0, OTHER.encode(), state_of[OTHER], 0, headers=[("pinwheel_jobs", _jobs(9_000, None))])
    broker.produce(STATE, 0, ACCOUNT.encode(), state_of[ACCOUNT], 0)  # no header: the jobs stay as they were
    broker.produce(STATE, 0, OTHER.encode(), None, 0)  # a tombstone: the jobs go with the account
    state, stats = _restore(broker, tmp_path, codec)
    try:
        assert stats.records == 4  # each record read once, for both stores
        assert state.get(JOBS, ACCOUNT.encode()) == _jobs(7_000, None)
        assert state.get(JOBS, OTHER.encode()) is None
        # The open job's timeout is derived from the header; the deleted account's stays, obsolete when it fires.
        timers = [key.decode() for key, _ in state.range(TIMERS, b"0", b"~")]
        assert timers == [f"{7_000:016d}|j|{ACCOUNT}|income.added", f"{9_000:016d}|j|{OTHER}|income.added"]
        checkpoint = state.checkpoint()
        assert checkpoint is not None
        assert checkpoint.positions[JOBS] == checkpoint.positions[ACCOUNTS] == 4
    finally:
        state.close()
    # From that checkpoint, only the tail: the job closed.
    broker.produce(STATE, 0, ACCOUNT.encode(), state_of[ACCOUNT], 0, headers=[("pinwheel_jobs", _jobs(None, 8))])
    state, stats = _restore(broker, tmp_path, codec)
    try:
        assert (stats.from_scratch, stats.records) == (False, 1)
        assert state.get(JOBS, ACCOUNT.encode()) == _jobs(None, 8)
    finally:
        state.close()


def test_a_jobs_header_that_does_not_decode_stops_the_restore(tmp_path: Path) -> None:
    codec, broker = Codec(), _broker()
    value = codec.encode(STATE, state_datum(_account(ACCOUNT, 1)))
    broker.produce(STATE, 0, ACCOUNT.encode(), value, 0, headers=[("pinwheel_jobs", b"\x01{not json")])
    with pytest.raises(ChangelogUnreadable, match=f"store 'jobs': a record of {STATE} partition 0.*pinwheel_jobs"):
        _restore(broker, tmp_path, codec)


@pytest.mark.parametrize(
    ("key", "value", "error"),
    [
        pytest.param(ACCOUNT.encode(), b"\xc3\x01not avro", "unreadable", id="undecodable"),
        pytest.param(OTHER.encode(), None, "holds the account", id="another-key"),
        pytest.param(None, None, "without a key", id="no-key"),
    ],
)
def test_a_state_record_the_pipeline_did_not_write_stops_the_restore(
    tmp_path: Path, key: bytes | None, value: bytes | None, error: str
) -> None:
    codec, broker = Codec(), _broker()
    good = codec.encode(STATE, state_datum(_account(ACCOUNT, 1)))
    broker.produce(STATE, 0, ACCOUNT.encode(), good, 0)
    broker.produce(STATE, 0, key, good if value is None and key is not None else value or b"", 0)
    with pytest.raises(ChangelogUnreadable, match=error) as raised:
        _restore(broker, tmp_path, codec)
    assert f"{STATE} partition 0" in str(raised.value)
    state = pipeline_task_state(tmp_path, APP_ID, 0)
    try:
        assert state.checkpoint() is None  # not marked restored: the next start restores again
    finally:
        state.close()


def test_a_confluent_record_waits_for_the_registry_rather_than_restore_without_it(tmp_path: Path) -> None:
    codec, broker = Codec(), _broker()
    body = codec.encode(STATE, state_datum(_account(ACCOUNT, 1)))[10:]  # the Avro body of a single-object record
    broker.produce(STATE, 0, ACCOUNT.encode(), b"\x00\x00\x00\x00\x63" + body, 0)  # schema id 99
    settings = SchemaSettings(registry_url="http://127.0.0.1:9", registry_timeout_s=1.0)
    unreachable = Codec(registry=RegistryClient(settings))
    with pytest.raises(RegistryUnavailable):
        _restore(broker, tmp_path, unreachable)
    state = pipeline_task_state(tmp_path, APP_ID, 0)
    try:
        assert state.checkpoint() is None
    finally:
        state.close()


def test_an_unreadable_state_record_stops_the_engine_naming_it(tmp_path: Path) -> None:
    broker = _broker()
    broker.produce(STATE, 0, ACCOUNT.encode(), b"\xc3\x01not avro", 0)
    with pytest.raises(ChangelogUnreadable, match=f"{STATE} partition 0 between offsets 0 and 0"):
        PipelineDriver(tmp_path, broker=broker)  # the task never starts: the engine's run ends with the error
