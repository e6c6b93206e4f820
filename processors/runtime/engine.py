"""The processing loop: one consumer group, one task per input partition, exactly-once commits.

Life of a partition p on this instance:
  assigned  -> paused; the loop then starts the task's transactional producer (fencing the previous
               owner and completing its open transaction), restores state from the changelogs, seeks
               the inputs to the group's committed offsets and resumes them;
  running   -> fetched records are buffered per input partition and processed in event-time order
               (processors/runtime/ordering.py), each partition in offset order; a partition with
               nothing buffered but more on the broker is waited for (PROCESSOR_MAX_TASK_IDLE_MS);
               timers, whether stream time or the wall clock moves them, fire only below the task's
               low watermark: never for a time some input partition has not been read up to;
               every commit interval the task commits outputs + changelog writes + offsets in one
               transaction, and only once the broker acknowledged every record;
  failed    -> a commit error or timeout (broker lost, ...) discards the uncommitted work and the
               task is rebuilt from Kafka exactly as on assignment: nothing skipped, nothing doubled;
  isolating -> after the broker refused a record of a commit for what it is (too large, ...), or the
               processor could not produce a commit's outputs (BatchFailed), the rebuilt task replays that
               uncommitted range one input record per transaction; the record whose transaction is refused
               (or whose own outputs fail) is then handed to the processor's `reject` (a dead letter, no
               effects), and everything else is processed as usual;
  revoked   -> the open transaction is committed (or, failing that, abandoned) and the task closed.

A task's own phases (created, restoring, running, suspended, failed, closed) and the moves between them are a
type, checked at every move: processors/runtime/lifecycle.py. Kafka is reached through the port in
processors/runtime/ports.py (aiokafka behind it in kafka_clients.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from common.backoff import Backoff
from common.kafka_errors import KafkaMisconfigured, Kind, classify_kafka_error
from common.settings import KafkaSettings
from processors.runtime.isolation import Isolation
from processors.runtime.kafka_clients import AiokafkaClients
from processors.runtime.ordering import PartitionGroup
from processors.runtime.ports import (
    GroupConsumer,
    KafkaClients,
    NotAssignedError,
    OutgoingRecord,
    Record,
    TopicPartition,
    TransactionalProducer,
    input_key,
)
from processors.runtime.restore import ChangelogUnreadable, Translate, ahead_of_inputs, restore
from processors.runtime.retry import RetryLater
from processors.runtime.settings import RuntimeSettings
from processors.runtime.state import Derive, TaskState
from processors.runtime.task import (
    BatchFailed,
    ProcessorFactory,
    RecordFailed,
    RecordRefused,
    Task,
    TaskFailed,
    TaskFenced,
    transactional_id,
)

log = logging.getLogger(__name__)

#: The key of the tombstones a task writes, in a transaction it aborts, to decide what a commit Kafka lost left open
#: (`Engine._abort_lost_commit`): never committed, so never seen by a read_committed reader.
LOST_COMMIT_FENCE_KEY = b"pinwheel-lost-commit-fence"
#: The warning a task logs when it finds its store ahead of its inputs' committed offsets (the chaos runs count it).
LOST_COMMIT_LOGGED = "task ahead of its committed offsets: what its lost commit left open is aborted, the store rebuilt"

#: How long required topics may be missing (deleted and being recreated, say) before the engine stops.
MISSING_TOPICS_GRACE_S = 30.0


@dataclass
class EngineStats:
    """Counters the health endpoint and metrics read."""

    processed: int = 0
    committed: int = 0
    commits: int = 0
    task_restarts: int = 0
    restored_records: int = 0
    rebalances: int = 0
    retries: int = 0  # batches put back because a dependency (the schema registry) failed: RetryLater
    waiting: str | None = None  # why the engine is waiting on a dependency, while it is
    assigned: set[int] = field(default_factory=set)
    ready: set[int] = field(default_factory=set)
    refused_records: int = 0  # input records whose effects the broker refused (handed to `reject`)
    buffered: int = 0  # fetched input records waiting in the tasks' buffers (as of the last loop)
    passed_over: int = 0  # times a task went ahead without an input partition idle for max_task_idle_ms


class MissingTopicsError(RuntimeError):
    """Topics the application reads, restores or writes do not exist: nothing could run, so nothing runs."""

    def __init__(self, missing: Sequence[str], hint: str = "") -> None:
        super().__init__("topics missing: " + ", ".join(sorted(missing)) + (f"; {hint}" if hint else ""))
        self.missing = sorted(missing)


class _Listener:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.engine._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.engine._on_assigned(assigned)


class Engine:
    def __init__(
        self,
        settings: RuntimeSettings,
        kafka: KafkaSettings,
        input_topics: Sequence[str],
        changelogs: dict[str, str],
        factory: ProcessorFactory,
        clock: Callable[[], float] | None = None,
        output_topics: Sequence[str] = (),
        missing_topics_hint: str = "",
        before_batch: Callable[[list[Record]], Awaitable[None]] | None = None,
        retriable: tuple[type[Exception], ...] = (),
        *,
        max_fetch_bytes: int,
        max_request_bytes: int,
        clients: KafkaClients | None = None,
        local_stores: Sequence[str] = (),
        derive: Derive | None = None,
        output_logged: Sequence[str] = (),
        translate: Translate | None = None,
        expiring: Sequence[str] = (),
    ) -> None:
        """`max_fetch_bytes`: the largest record the input topics hold (what one partition fetch may return);
        `max_request_bytes`: the largest record a processor may write (the producers' request limit).

        `changelogs` names the tasks' logged stores (store -> changelog topic); `local_stores` the stores kept
        in the local state only, which the restore derives from the changelog records it replays (`derive`,
        processors/runtime/state.py); `output_logged` the logged stores whose changelog is an output topic the
        processor writes itself (in the task's partition), which the restore reads back through `translate`
        (processors/runtime/restore.py). An unreadable record there stops the engine (ChangelogUnreadable); a
        `retriable` error of `translate` (the registry down) makes the task's start wait and try again.
        `expiring` the logged stores whose entries leave them by time only, logged one record per transaction to
        a time-retained log (processors/runtime/entrylog.py).

        `before_batch(records)` runs before records are processed (and until it succeeds, with none, at
        start): async work such as fetching schemas. RetryLater, or one of `retriable`, raised by it or by a
        processor puts the batch back: the task's uncommitted work is discarded and redone after a back-off.

        `clients` makes the Kafka clients (processors/runtime/ports.py): aiokafka on `kafka` unless given; its
        clock times the loop, and, unless `clock` is given, the timers' wall clock."""
        self.clients: KafkaClients = clients if clients is not None else AiokafkaClients(kafka)
        self._monotonic = self.clients.clock.monotonic
        self.settings = settings
        self.clock = clock if clock is not None else self.clients.clock.wall  # wall clock of the timers (seconds)
        self.kafka = kafka
        self.input_topics = list(input_topics)
        self.changelogs = changelogs
        self.local_stores = tuple(local_stores)
        self.derive = derive
        self.output_logged = tuple(output_logged)
        self.translate = translate
        self.expiring = tuple(expiring)
        self.factory = factory
        self.before_batch = before_batch
        self.retriable: tuple[type[Exception], ...] = (RetryLater, *retriable)
        self.max_fetch_bytes = max_fetch_bytes
        self.max_request_bytes = max_request_bytes
        self._backoff = Backoff(cap_s=15.0)
        self.stats = EngineStats()
        self._tasks: dict[int, Task] = {}
        self._pending: set[int] = set()  # assigned, not yet initialised
        self._isolation: dict[int, Isolation] = {}
        self._required_topics = {*input_topics, *changelogs.values(), *output_topics}
        self._written_topics = sorted({*changelogs.values(), *output_topics})
        self._missing_topics_hint = missing_topics_hint
        self._topics_missing_since: float | None = None
        self._retry_start_at = 0.0  # after a failed task start (broker down): back off, do not spin
        self._lock = asyncio.Lock()
        self._consumer: GroupConsumer | None = None
        self._topic_rank = {topic: i for i, topic in enumerate(self.input_topics)}
        self._groups: dict[int, PartitionGroup[Record]] = {}  # of the running tasks
        self._full: set[TopicPartition] = set()  # paused: their task buffers a poll's worth of them
        self._more_ready = False  # a task stopped at its per-loop limit with records ready: do not wait

    # -- public ------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        await self._before_start(stop)
        consumer = self.clients.group_consumer(
            group_id=self.settings.application_id,
            instance_id=self.settings.instance_id,
            session_timeout_ms=self.settings.session_timeout_ms,
            max_poll_records=self.settings.max_poll_records,
            max_fetch_bytes=self.max_fetch_bytes,
        )
        self._consumer = consumer
        try:
            await consumer.start()  # a failed start (broker unreachable) leaves the client to stop as well
            await self._wait_for_topics(consumer)
            consumer.subscribe(self.input_topics, _Listener(self))
            try:
                await self._loop(consumer, stop)
            except BaseException:
                # A failure in the middle of a batch: its uncommitted work may be half done (a dedupe entry
                # written, its update not emitted), so it must not be committed. Discard; a restart
                # reprocesses from the committed offsets.
                async with self._lock:
                    for task in self._tasks.values():
                        task.fail()
                    await self._close_tasks(list(self._tasks))
                raise
            else:
                async with self._lock:
                    await self._commit_all()
                    self._suspend_all()
                    await self._close_tasks(list(self._tasks))
        finally:
            await consumer.stop()
            self._consumer = None
            self._pending.clear()
            self.stats.assigned.clear()  # a run after this one (the service waited for Kafka again) starts afresh

    async def _before_start(self, stop: asyncio.Event) -> None:
        """The batch hook with no records, until it succeeds: e.g. our schemas registered before any work."""
        while self.before_batch is not None and not stop.is_set():
            try:
                await self.before_batch([])
            except self.retriable as exc:
                self.stats.waiting = str(exc)
                delay = self._backoff.next_delay()
                log.warning("waiting before start", extra={"error": str(exc), "retry_in_s": round(delay, 2)})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
            else:
                self.stats.waiting = None
                self._backoff.reset()
                return

    async def _wait_for_topics(self, consumer: GroupConsumer, timeout_s: float = 60.0) -> None:
        """Subscribing to a topic the client has no metadata for yet would leave it unassigned for minutes."""
        deadline = self._monotonic() + timeout_s
        while missing := set(self.input_topics) - await consumer.topics():
            if self._monotonic() > deadline:
                raise RuntimeError(
                    f"input topics missing: {', '.join(sorted(missing))}; create them with `pinwheel-connector topics`"
                )
            await asyncio.sleep(0.5)

    # -- the loop ------------------------------------------------------------------------------------

    async def _loop(self, consumer: GroupConsumer, stop: asyncio.Event) -> None:
        interval_s = self.settings.commit_interval_ms / 1000
        punctuate_s = self.settings.punctuate_interval_ms / 1000
        next_commit = self._monotonic() + interval_s
        next_punctuate = self._monotonic() + punctuate_s
        while not stop.is_set():
            # Short polls: a rebalance assigns partitions while getmany waits, and those tasks are started
            # by this loop, not by the callback.
            start_now = bool(self._pending) and self._monotonic() >= self._retry_start_at
            wait_ms = (
                0 if start_now or self._more_ready else max(0, min(100, int((next_commit - self._monotonic()) * 1000)))
            )
            batch = await consumer.getmany(timeout_ms=wait_ms, max_records=self.settings.max_poll_records)
            retry = await self._run_before_batch(batch)
            async with self._lock:
                if start_now:
                    await self._initialise_pending(consumer)
                if retry is not None:
                    await self._put_back({tp.partition for tp in batch}, retry)
                elif (failed := await self._dispatch(consumer, batch)) is not None:
                    await self._put_back(*failed)
                now = self._monotonic()
                if now >= next_punctuate:
                    wall_ms = int(self.clock() * 1000)
                    for partition, task in list(self._tasks.items()):
                        if partition not in self._isolation:
                            task.punctuate(
                                wall_ms, self._groups[partition].watermark(await self._at_end(consumer, partition))
                            )
                    next_punctuate = now + punctuate_s
                buffered = max((len(t.outputs) for t in self._tasks.values()), default=0)
                if now >= next_commit or buffered >= self.settings.commit_max_records:
                    await self._commit_all()
                    next_commit = self._monotonic() + interval_s

    async def _run_before_batch(self, batch: dict[TopicPartition, list[Record]]) -> Exception | None:
        if self.before_batch is None or not batch:
            return None
        try:
            await self.before_batch([r for records in batch.values() for r in records])
        except self.retriable as exc:
            return exc
        return None

    async def _put_back(self, partitions: set[int], error: Exception) -> None:
        """Abandon the uncommitted (and buffered) work of these tasks; they restart after a back-off."""
        self.stats.retries += 1
        self.stats.waiting = str(error)
        delay = self._backoff.next_delay()
        log.warning("batch put back", extra={"error": str(error), "retry_in_s": round(delay, 2)})
        for partition in sorted(partitions):
            task = self._tasks.get(partition)
            if task is not None:
                await self._fail(task, error)
        self._retry_start_at = self._monotonic() + delay

    async def _dispatch(
        self, consumer: GroupConsumer, batch: dict[TopicPartition, list[Record]]
    ) -> tuple[set[int], Exception] | None:
        """Buffer a fetch, then let every task process its buffered records in event-time order as far as it
        may. A `retriable` error (a dependency down) is returned with the tasks it hit: the caller puts them
        back."""
        failed: set[int] = set()
        error: Exception | None = None
        for tp, records in batch.items():
            task = self._tasks.get(tp.partition)
            if task is None or tp.partition in failed:
                continue  # records of a task that is not ready are dropped: it seeks to its committed offsets first
            try:
                self._groups[tp.partition].add(tp, [(task.event_time(record), record) for record in records])
            except self.retriable as exc:
                failed.add(tp.partition)
                error = error or exc
        self._more_ready = False
        for partition in list(self._tasks):
            task = self._tasks.get(partition)
            group = self._groups.get(partition)
            if task is None or group is None or partition in failed or not group.total_buffered():
                continue
            at_end = await self._at_end(consumer, partition)
            isolation = self._isolation.get(partition)
            try:
                if isolation is None:
                    self._process_ready(task, group, at_end)
                else:
                    await self._process_isolated(partition, isolation, group, at_end)
            except self.retriable as exc:
                failed.add(partition)
                error = error or exc
            except RecordFailed as record_failed:
                await self._reject_failed(task, record_failed)
        self._flow_control(consumer)
        return None if error is None else (failed, error)

    def _process_ready(self, task: Task, group: PartitionGroup[Record], at_end: dict[TopicPartition, bool]) -> None:
        """The task's buffered records in event-time order, each with the watermark as of its turn, until the
        task must wait for a partition or has done a poll's worth (the loop then comes back without waiting)."""
        now = self._monotonic()
        limit = self.settings.max_poll_records
        done = 0
        try:
            process = task.process_one
            for time, record, watermark in group.take(at_end, now, limit):
                # The record itself is not processed yet: nothing due at or after its time may fire first.
                process(record, time if time < watermark else watermark)
                done += 1
        finally:
            self.stats.processed += done
            self._say_passed_over(group)
        if done >= limit:
            self._more_ready = True

    def _say_passed_over(self, group: PartitionGroup[Record]) -> None:
        for tp in group.take_passed_over():
            self.stats.passed_over += 1
            log.info(
                "input partition passed over: nothing fetched from it for PROCESSOR_MAX_TASK_IDLE_MS; the task's "
                "other partitions go ahead out of event-time order (timers still wait for it)",
                extra={"topic": tp.topic, "partition": tp.partition, "idle_ms": self.settings.max_task_idle_ms},
            )

    def _flow_control(self, consumer: GroupConsumer) -> None:
        """Pause an input partition while its task buffers a poll's worth of its records (a partition read far
        ahead of the others waits in Kafka, not in memory); resume it once the task has taken some."""
        cap = self.settings.max_poll_records
        buffered = 0
        for group in self._groups.values():
            for tp in group.partitions:
                count = group.buffered(tp)
                buffered += count
                if count >= cap and tp not in self._full:
                    consumer.pause(tp)
                    self._full.add(tp)
                elif count < cap and tp in self._full:
                    consumer.resume(tp)
                    self._full.discard(tp)
        self.stats.buffered = buffered

    async def _process_isolated(
        self,
        partition: int,
        isolation: Isolation,
        group: PartitionGroup[Record],
        at_end: dict[TopicPartition, bool],
    ) -> None:
        """One input record per transaction, so a refusal names its record; refused records are rejected."""
        now = self._monotonic()
        while (task := self._tasks.get(partition)) is not None:  # else failed: rebuilt from the committed offsets
            if isolation.finished():
                del self._isolation[partition]
                log.info("isolation over", extra={"partition": partition, "refused": len(isolation.refused)})
                self._process_ready(task, group, at_end)
                return
            item = next(group.take(at_end, now, 1), None)
            self._say_passed_over(group)
            if item is None:
                return
            time, record, watermark = item
            rejection = isolation.rejection(record)
            try:
                if rejection is None:
                    task.process_one(record, min(time, watermark))
                else:
                    task.reject(record, *rejection)
                    self.stats.refused_records += 1
            except RecordFailed as failed:
                isolation.refuse(record, failed.reason, failed.error)
                await self._fail(task, TaskFailed(f"task {partition}: {failed}"))
                return
            self.stats.processed += 1
            isolation.committing(record)
            await self._commit_tasks([task])
            if partition in self._tasks:  # committed
                isolation.committed(record)
            isolation.current = None

    async def _commit_all(self) -> None:
        await self._commit_tasks(list(self._tasks.values()))

    async def _commit_tasks(self, tasks: list[Task]) -> None:
        if not tasks:
            return
        results = await asyncio.gather(*(task.commit() for task in tasks), return_exceptions=True)
        refusal: KafkaMisconfigured | None = None
        for task, result in zip(tasks, results, strict=True):
            if isinstance(result, BaseException):
                verdict = classify_kafka_error(result)
                if verdict.kind is Kind.MISCONFIGURED and refusal is None:  # an ACL taken away: retrying repeats it
                    refusal = KafkaMisconfigured(f"kafka: task {task.partition} commit: {verdict.reason}")
                await self._fail(task, result)
            elif result:
                self.stats.committed += result
                self.stats.commits += 1
                self._backoff.reset()
                self.stats.waiting = None
        if refusal is not None:
            raise refusal

    async def _fail(self, task: Task, error: BaseException) -> None:
        """Throw the task's uncommitted work away and rebuild it from Kafka before it runs again."""
        self.stats.task_restarts += 1
        task.fail()
        partition = task.partition
        log.warning("task restart", extra={"partition": partition, "error": str(error)})
        if isinstance(error, (RecordRefused, BatchFailed)):
            self._isolate(task, error)
        await self._close_tasks([partition])
        if isinstance(error, TaskFenced):
            self._isolation.pop(partition, None)
            return  # another instance owns it; the coming rebalance takes it from us
        if isinstance(error, self.retriable):
            pass  # a dependency is down: the batch is redone after a back-off
        elif not isinstance(error, TaskFailed):
            log.error("unexpected task error", exc_info=error)
        elif self._consumer is not None:
            await self._check_topics(self._consumer)
        self._pending.add(partition)
        if self._consumer is not None:
            self._consumer.pause(*self._partitions_of(partition))

    async def _reject_failed(self, task: Task, failed: RecordFailed) -> None:
        """A record whose processing failed: redo the task's uncommitted records up to it, one per transaction,
        and reject it (its half-written effects are thrown away with the rest)."""
        isolation = self._isolation.get(task.partition)
        if isolation is None:
            self._isolation[task.partition] = Isolation.of_failed_record(
                task.next_offsets, failed.record, failed.reason, failed.error
            )
        else:
            isolation.refuse(failed.record, failed.reason, failed.error)
        await self._fail(task, TaskFailed(f"task {task.partition}: {failed}"))

    def _isolate(self, task: Task, error: RecordRefused | BatchFailed) -> None:
        """Remember what the failed commit covered, or, when it held one record, that this record is refused."""
        isolation = self._isolation.get(task.partition)
        if isolation is None:
            self._isolation[task.partition] = Isolation(until=dict(task.next_offsets))
            log.warning(
                "a commit failed for what it holds: replaying the uncommitted records one per transaction",
                extra={"partition": task.partition, "error": str(error)},
            )
        elif (stuck := isolation.current_failed(error)) is not None:
            # Even its dead letter was refused: nothing can be committed past this record. The task keeps
            # failing (loudly) rather than skip it.
            log.error(
                "the broker refuses the dead letter of a refused record; the partition cannot progress",
                extra={"partition": task.partition, "offset": stuck[2], "error": str(error)},
            )
            self._retry_start_at = self._monotonic() + 1.0

    async def _at_end(self, consumer: GroupConsumer, partition: int) -> dict[TopicPartition, bool]:
        """Which input partitions of the task are read to their last stable offset, as of a fetch answered
        within the last few seconds: nothing more of them is known to exist. Any other may hold unread records
        that a timer would pre-empt."""
        # The client stamps fetches with its clock's wall time, whatever clock drives the timers.
        fresh_after_ms = self.clients.clock.wall() * 1000 - max(5_000, 3 * self.settings.punctuate_interval_ms)
        at_end: dict[TopicPartition, bool] = {}
        for tp in self._groups[partition].partitions:
            end = consumer.last_stable_offset(tp)
            if end is None or end < 0:
                end = consumer.highwater(tp)
            polled = consumer.last_poll_timestamp(tp)
            at_end[tp] = False
            if end is None or polled is None or polled < fresh_after_ms:
                continue  # not fetched lately: position() could wait for one
            with contextlib.suppress(NotAssignedError):  # revoked meanwhile
                at_end[tp] = await consumer.position(tp) >= end
        return at_end

    # -- assignment --------------------------------------------------------------------------------

    def _partitions_of(self, partition: int) -> list[TopicPartition]:
        assert self._consumer is not None
        return [tp for tp in self._consumer.assignment() if tp.partition == partition]

    async def _on_revoked(self, revoked: list[TopicPartition]) -> None:
        async with self._lock:
            self.stats.rebalances += 1
            await self._commit_all()
            self._suspend_all()
            await self._close_tasks(list(self._tasks))
            self._pending.clear()
            self._isolation.clear()
            self.stats.assigned.clear()

    async def _on_assigned(self, assigned: list[TopicPartition]) -> None:
        async with self._lock:
            partitions = {tp.partition for tp in assigned}
            self.stats.assigned = set(partitions)
            self._pending = partitions - set(self._tasks)
            if self._consumer is not None and assigned:
                self._consumer.pause(*[tp for tp in assigned if tp.partition in self._pending])

    async def _initialise_pending(self, consumer: GroupConsumer) -> None:
        pending = sorted(self._pending)
        results = await asyncio.gather(*(self._start_task(consumer, p) for p in pending), return_exceptions=True)
        failed = False
        for partition, result in zip(pending, results, strict=True):
            if isinstance(result, BaseException):
                if isinstance(result, ChangelogUnreadable):  # restoring without it would build a wrong state
                    raise result
                if isinstance(result, self.retriable):  # a dependency of the restore is down: wait for it
                    self.stats.waiting = str(result)
                    delay = self._backoff.next_delay()
                    log.warning("task start waits", extra={"partition": partition, "error": str(result)})
                    self._retry_start_at = max(self._retry_start_at, self._monotonic() + delay)
                    failed = True
                    continue
                verdict = classify_kafka_error(result)
                if verdict.kind is Kind.MISCONFIGURED:  # not allowed (transactional id ACL, ...): retrying repeats it
                    tid = transactional_id(self.settings.application_id, partition)
                    raise KafkaMisconfigured(f"kafka: starting task {partition} (transactional id {tid}): "
                                             f"{verdict.reason}") from None  # fmt: skip
                log.warning("task start failed; will retry", extra={"partition": partition, "error": str(result)})
                self._retry_start_at = max(self._retry_start_at, self._monotonic() + 1.0)
                failed = True
                continue
            self._pending.discard(partition)
            consumer.resume(*self._partitions_of(partition))
        if failed:
            await self._check_topics(consumer)

    async def _check_topics(self, consumer: GroupConsumer) -> None:
        """After a failure: topics deleted under the running application end it (MissingTopicsError) once they
        stay missing for `MISSING_TOPICS_GRACE_S`, rather than retry and log forever."""
        try:
            missing = self._required_topics - await consumer.topics()
        except Exception:  # the broker is unreachable: not a missing topic
            return
        if not missing:
            self._topics_missing_since = None
            return
        now = self._monotonic()
        if self._topics_missing_since is None:
            self._topics_missing_since = now
            log.error("topics missing", extra={"topics": sorted(missing)})
        elif now - self._topics_missing_since >= MISSING_TOPICS_GRACE_S:
            raise MissingTopicsError(sorted(missing), self._missing_topics_hint)

    async def _start_task(self, consumer: GroupConsumer, partition: int) -> None:
        state = TaskState(
            self.settings.state_dir / self.settings.application_id / str(partition),
            self.settings.application_id,
            partition,
            self.changelogs,
            self.local_stores,
            self.output_logged,
            self.expiring,
        )
        try:
            producer = await self.clients.transactional_producer(
                self.settings.application_id, partition, self.max_request_bytes
            )
        except BaseException:
            state.close()
            raise
        task = Task(partition, state, producer, self.settings.application_id, self.settings.commit_timeout_s)
        try:
            task.restoring()
            # Read after the producer fenced any previous owner and completed its transaction: final.
            committed = {tp: await consumer.committed(tp) for tp in self._partitions_of(partition)}
            inputs = {input_key(tp): offset for tp, offset in committed.items()}
            checkpoint = state.checkpoint()
            behind = ahead_of_inputs(checkpoint.inputs, inputs) if checkpoint is not None else []
            if behind:  # the store holds a commit Kafka lost: it cannot be caught up, only rebuilt
                await self._abort_lost_commit(producer, partition, committed, behind)
            stats = await restore(
                state,
                self.clients,
                self.settings.max_checkpoint_age_h * 3600,
                self.derive,
                self.translate,
                from_scratch=bool(behind),
            )
            self.stats.restored_records += stats.records
            log.info(
                "task ready",
                extra={"partition": partition, "restored": stats.records, "seconds": round(stats.seconds, 3)},
            )
            for tp, offset in committed.items():
                if offset is None:
                    await consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, offset)
            task.run(self.factory)
        except BaseException:
            task.fail()
            with contextlib.suppress(Exception):
                await task.close()
            raise
        self._tasks[partition] = task
        self._groups[partition] = PartitionGroup(
            self._partitions_of(partition), self._topic_rank, self.settings.max_task_idle_ms
        )
        self.stats.ready.add(partition)

    async def _abort_lost_commit(
        self,
        producer: TransactionalProducer,
        partition: int,
        committed: Mapping[TopicPartition, int | None],
        behind: Sequence[str],
    ) -> None:
        """The task's local store is ahead of its inputs' committed offsets: Kafka lost a commit it acknowledged
        (docs/reliability.md, "Failures seen"). Its records may still be open, to be decided by the next marker
        this producer id writes on each partition, and its offsets pending: a later commit would publish them
        beside the inputs' replay. So decide them now, aborted: a transaction writing a tombstone of
        `LOST_COMMIT_FENCE_KEY` to every partition of every topic the tasks write (an output's key may place it
        in any), with the offsets as committed, aborted: read_committed readers never see it. The restore then
        rebuilds the store from the changelogs."""
        records = [
            OutgoingRecord(topic, p, LOST_COMMIT_FENCE_KEY, None, ())
            for topic in self._written_topics
            for p in range(await producer.partition_count(topic))
        ]
        await producer.begin_transaction()
        await producer.send_and_wait(records)
        # Every input partition, with no offset committed too (0: aborted, it never counts): the abort must reach
        # the group's offsets partition, where the lost commit's offsets may be pending.
        offsets = {tp: 0 if offset is None else offset for tp, offset in committed.items()}
        await producer.send_offsets_to_transaction(offsets, self.settings.application_id)
        await producer.abort_transaction()
        log.warning(
            LOST_COMMIT_LOGGED,
            extra={"partition": partition, "inputs": list(behind), "partitions": len(records)},
        )

    def _suspend_all(self) -> None:
        """Every task's work committed (or its task failed and closed): the tasks left are only to be closed."""
        for task in self._tasks.values():
            task.suspend()

    async def _close_tasks(self, partitions: list[int]) -> None:
        for partition in partitions:
            task = self._tasks.pop(partition, None)
            self.stats.ready.discard(partition)
            group = self._groups.pop(partition, None)
            if group is not None:  # its buffered records are fetched again from the committed offsets
                self._full.difference_update(group.partitions)
            if task is not None:
                await task.close()
