"""`verify`: compare the simulator's ledger with `pinwheel.account_updates.v1` (read_committed).

What is *expected* (docs/consuming.md, "What verify checks"):

- every event the gateway answered 2xx for at least once, and that the processors turn into an update,
  appears **exactly once** with `update_id == event_id`. The processors produce an update for an event that
  has an `account_id` and, for a job event, an outcome of success, error or pending. Events without an
  account (e.g. `company_connect.*`) and duplicate deliveries produce none; an event the gateway
  dead-lettered (its answer's reason is not `family`/`other`) produces none;
- every job that went pending (accepted) and whose final outcome was never accepted produces exactly one
  `<pending event_id>:timed_out` update (from any of the job's pending events).

Counted:
- `lost`: expected but absent; `duplicated`: an update_id seen more than once (or two timeouts of one job);
- `joined`: finals that closed a pending job (outcome success/error with `pending_since`);
- `timed_out`: timed_out updates; `late_timeouts`: a timeout of a job whose final was accepted (allowed);
- `premature_timeouts` (with the processors' pending window): a timeout of a job whose final outcome had been
  answered 2xx by the gateway before the job's deadline (earliest pending payload time + window): the final
  was in Kafka when the job timed out. Whether that fails a run is the caller's call (`make chaos` scenarios
  that stop the processors fail on any);
- `unacknowledged`: updates of events the gateway never answered 2xx for (the answer was lost, e.g. a client
  timeout after the broker acknowledged: at-least-once, not an error);
- `unexpected`: anything else of this run's ids (an update for an event that should produce none).

`compare` is pure; `UpdateCollector` and `verify_ledger` are the Kafka shell.

The reader shares no code with what it checks: a `read_committed` consumer (an aborted transaction's records
are never counted) and `AvscDecoder`, which decodes straight from the .avsc files with plain fastavro, as
docs/wire-format.md tells any consumer to, instead of the processors' `schemas.codec`.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Final, cast

import fastavro
from aiokafka import AIOKafkaConsumer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from fastavro.schema import fingerprint, to_parsing_canonical_form

from common.kafka_access import TopicOp, check_topics_of
from common.settings import KafkaSettings
from schemas.catalog import ACCOUNT_UPDATES_TOPIC, FINAL_OUTCOMES, JOB_OUTCOMES, PENDING, is_job
from schemas.confluent import client_config
from schemas.settings import SchemaSettings
from simulator.ledger import EventInfo, Ledger
from simulator.retry import is_accepted

TIMED_OUT_SUFFIX: Final = ":timed_out"
PUBLISHED_REASONS: Final = frozenset({"family", "other"})


@dataclass(frozen=True, slots=True)
class UpdateView:
    """The fields of an AccountUpdate that verify and the live display need."""

    update_id: str
    account_id: str
    change: str
    event_type: str
    received_at: datetime | None
    job: str | None = None
    outcome: str | None = None
    pending_since: datetime | None = None
    time_to_resolve_ms: int | None = None

    @property
    def event_id(self) -> str:
        return base_event_id(self.update_id)

    @classmethod
    def from_datum(cls, datum: Mapping[str, Any]) -> UpdateView:
        trigger = datum.get("trigger") or {}
        outcome = datum.get("outcome") or {}
        return cls(
            update_id=str(datum["update_id"]),
            account_id=str(datum["account_id"]),
            change=str(datum["change"]),
            event_type=str(trigger.get("event_type", "")),
            received_at=trigger.get("received_at"),
            job=outcome.get("job"),
            outcome=outcome.get("outcome"),
            pending_since=outcome.get("pending_since"),
            time_to_resolve_ms=outcome.get("time_to_resolve_ms"),
        )


def base_event_id(update_id: str) -> str:
    return update_id.removesuffix(TIMED_OUT_SUFFIX)


def produces_update(info: EventInfo) -> bool:
    """Whether the processors emit an account update for this (first, accepted) event."""
    if not info.account_id:
        return False
    return not is_job(info.event_type, info.outcome) or info.outcome in JOB_OUTCOMES


@dataclass(frozen=True, slots=True)
class Expectations:
    accepted: frozenset[str]
    updates: frozenset[str]  # event ids that must appear exactly once as update_id
    #: per job that must time out: the acceptable update ids (one per pending event of the job)
    timeouts: tuple[frozenset[str], ...]
    #: timeouts allowed but not required (the final came, possibly after the deadline)
    optional_timeouts: frozenset[str]
    resolved_pending_jobs: int


def expectations(ledger: Ledger) -> Expectations:
    ok_reasons: dict[str, bool] = {}
    for a in ledger.attempts:
        if is_accepted(a.status):
            published = a.reason is None or a.reason in PUBLISHED_REASONS
            ok_reasons[a.event_id] = ok_reasons.get(a.event_id, False) or published
    accepted = frozenset(ok_reasons)
    updates = frozenset(
        eid
        for eid, published in ok_reasons.items()
        if published and eid in ledger.events and produces_update(ledger.events[eid])
    )
    jobs: dict[tuple[str | None, str, str | None], list[EventInfo]] = defaultdict(list)
    for eid in updates:
        info = ledger.events[eid]
        if info.outcome in JOB_OUTCOMES:
            jobs[(info.account_id, info.event_type, info.job_id)].append(info)
    timeouts: list[frozenset[str]] = []
    optional: set[str] = set()
    resolved = 0
    for infos in jobs.values():
        pendings = frozenset(i.event_id + TIMED_OUT_SUFFIX for i in infos if i.outcome == PENDING)
        if not pendings:
            continue
        if any(i.outcome in FINAL_OUTCOMES for i in infos):
            optional |= pendings
            resolved += 1
        else:
            timeouts.append(pendings)
    timeouts.sort(key=sorted)
    return Expectations(accepted, updates, tuple(timeouts), frozenset(optional), resolved)


@dataclass(frozen=True, slots=True)
class VerifyReport:
    run_id: str
    events: int
    accepted_events: int
    expected_updates: int
    expected_timeouts: int
    found: int  # distinct update ids of this run
    lost: tuple[str, ...]
    duplicated: tuple[str, ...]
    joined: int
    resolved_pending_jobs: int
    timed_out: int
    late_timeouts: int
    unacknowledged: int
    unexpected: tuple[str, ...]
    changes: Mapping[str, int] = field(default_factory=dict)
    premature_timeouts: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.lost and not self.duplicated

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "ok": self.ok,
            "events": self.events,
            "accepted_events": self.accepted_events,
            "expected_updates": self.expected_updates,
            "expected_timeouts": self.expected_timeouts,
            "found": self.found,
            "lost": len(self.lost),
            "duplicated": len(self.duplicated),
            "joined": self.joined,
            "resolved_pending_jobs": self.resolved_pending_jobs,
            "timed_out": self.timed_out,
            "late_timeouts": self.late_timeouts,
            "unacknowledged": self.unacknowledged,
            "unexpected": len(self.unexpected),
            "premature_timeouts": len(self.premature_timeouts),
            "lost_ids": list(self.lost[:20]),
            "duplicated_ids": list(self.duplicated[:20]),
            "changes": dict(self.changes),
        }


def premature_timeouts(ledger: Ledger, timed_out_ids: Iterable[str], window: timedelta) -> tuple[str, ...]:
    """The timeouts (update ids) of jobs whose final outcome the gateway had answered 2xx for before the job's
    deadline: the earliest pending payload time (`pending_since`) + `window` (pending timeout + grace).

    The answer's time (attempt sent + its latency) is when the final was surely in Kafka; a final answered
    after the deadline makes its timeout late, not premature."""
    answered: dict[str, datetime] = {}
    for a in ledger.attempts:
        if is_accepted(a.status):
            at = datetime.fromisoformat(a.sent_at) + timedelta(milliseconds=a.latency_ms)
            answered[a.event_id] = min(at, answered.get(a.event_id, at))
    jobs: dict[tuple[str | None, str, str | None], list[EventInfo]] = defaultdict(list)
    for info in ledger.events.values():
        if info.outcome in JOB_OUTCOMES:
            jobs[(info.account_id, info.event_type, info.job_id)].append(info)
    job_of = {i.event_id: key for key, infos in jobs.items() for i in infos if i.outcome == PENDING}
    premature = []
    for update_id in timed_out_ids:
        key = job_of.get(base_event_id(update_id))
        if key is None:
            continue
        since = [datetime.fromisoformat(i.occurred_at) for i in jobs[key] if i.outcome == PENDING and i.occurred_at]
        finals = [answered[i.event_id] for i in jobs[key] if i.outcome in FINAL_OUTCOMES and i.event_id in answered]
        if since and finals and min(finals) <= min(since) + window:
            premature.append(update_id)
    return tuple(sorted(premature))


def compare(
    ledger: Ledger,
    updates: Iterable[UpdateView],
    expected: Expectations | None = None,
    pending_window: timedelta | None = None,
) -> VerifyReport:
    """The verdict for one run: `updates` may contain anything; only this run's event ids count.
    `pending_window` (the processors' pending timeout + grace): classify the timeouts (`premature_timeouts`)."""
    exp = expected or expectations(ledger)
    run_ids = set(ledger.events)
    mine = [u for u in updates if u.event_id in run_ids]
    counts = Counter(u.update_id for u in mine)
    present = set(counts)
    duplicated = {uid for uid, n in counts.items() if n > 1}
    lost = set(exp.updates - present)
    required_timeouts: set[str] = set()
    for candidates in exp.timeouts:
        seen = candidates & present
        required_timeouts |= candidates
        if not seen:
            lost.add(min(candidates))
        elif len(seen) > 1:
            duplicated |= seen  # one job timed out twice
    timed_out_ids = {uid for uid in present if uid.endswith(TIMED_OUT_SUFFIX)}
    late = timed_out_ids & exp.optional_timeouts
    others = present - exp.updates - required_timeouts - exp.optional_timeouts
    unacknowledged = {uid for uid in others if base_event_id(uid) not in exp.accepted}
    unexpected = others - unacknowledged
    first_by_id: dict[str, UpdateView] = {}
    for u in mine:
        first_by_id.setdefault(u.update_id, u)
    joined = sum(1 for u in first_by_id.values() if u.outcome in FINAL_OUTCOMES and u.pending_since is not None)
    changes = Counter(u.change for u in first_by_id.values())
    return VerifyReport(
        run_id=str(ledger.run.get("run_id", "")),
        events=len(ledger.events),
        accepted_events=len(exp.accepted & run_ids),
        expected_updates=len(exp.updates),
        expected_timeouts=len(exp.timeouts),
        found=len(present),
        lost=tuple(sorted(lost)),
        duplicated=tuple(sorted(duplicated)),
        joined=joined,
        resolved_pending_jobs=exp.resolved_pending_jobs,
        timed_out=len(timed_out_ids),
        late_timeouts=len(late),
        unacknowledged=len(unacknowledged),
        unexpected=tuple(sorted(unexpected)),
        changes=dict(sorted(changes.items())),
        premature_timeouts=() if pending_window is None else premature_timeouts(ledger, timed_out_ids, pending_window),
    )


def complete(ledger: Ledger, updates: Sequence[UpdateView], expected: Expectations) -> bool:
    """Every expected update (and required timeout) is present."""
    present = {u.update_id for u in updates}
    return expected.updates <= present and all(c & present for c in expected.timeouts)


def format_report(report: VerifyReport) -> str:
    verdict = "OK" if report.ok else "FAILED"
    lines = [
        f"verify {verdict} (run {report.run_id})",
        f"  events sent        {report.events:>7}   accepted by the gateway {report.accepted_events}",
        f"  expected updates   {report.expected_updates:>7}   + {report.expected_timeouts} timed_out",
        f"  found              {report.found:>7}",
        f"  lost               {len(report.lost):>7}",
        f"  duplicated         {len(report.duplicated):>7}",
        f"  joined             {report.joined:>7}   (pending jobs resolved: {report.resolved_pending_jobs})",
        f"  timed out          {report.timed_out:>7}   (late, allowed: {report.late_timeouts})",
        f"  unacknowledged     {report.unacknowledged:>7}   unexpected {len(report.unexpected)}",
    ]
    if report.changes:
        lines.append("  by change          " + ", ".join(f"{k}={v}" for k, v in report.changes.items()))
    if report.lost:
        lines.append("  lost ids (first 10): " + ", ".join(report.lost[:10]))
    if report.duplicated:
        lines.append("  duplicated ids (first 10): " + ", ".join(report.duplicated[:10]))
    return "\n".join(lines)


# -- independent decoding ------------------------------------------------------------------------------------

SINGLE_OBJECT_MARKER: Final = b"\xc3\x01"
CONFLUENT_MAGIC: Final = b"\x00"


class AvscDecoder:
    """Decodes one record type from its .avsc files with plain fastavro, in both our wire formats.

    avro-single-object: `C3 01`, the writer schema's CRC-64-AVRO fingerprint (looked up among every version's
    file), the body. confluent-avro: `00`, a registry schema id (fetched once through `fetch_schema`), the body.
    The highest version of `record_name` is the reader schema.
    """

    def __init__(
        self, record_name: str, avsc_dir: Path | None = None, fetch_schema: Callable[[int], str] | None = None
    ) -> None:
        directory = avsc_dir or Path(str(resources.files("schemas") / "avro"))
        self.by_fingerprint: dict[bytes, Any] = {}
        versions: dict[int, Any] = {}
        for path in sorted(directory.glob("*.avsc")):
            schema = fastavro.parse_schema(json.loads(path.read_text()), named_schemas={})
            canonical = to_parsing_canonical_form(schema)
            self.by_fingerprint[bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))] = schema
            if match := re.fullmatch(rf"{re.escape(record_name)}\.v(\d+)\.avsc", path.name):
                versions[int(match[1])] = schema
        if not versions:
            raise FileNotFoundError(f"no {record_name}.v<N>.avsc in {directory}")
        self.reader = versions[max(versions)]
        self.fetch_schema = fetch_schema
        self.by_id: dict[int, Any] = {}

    def decode(self, value: bytes) -> dict[str, Any]:
        if value[:2] == SINGLE_OBJECT_MARKER:
            writer, body = self.by_fingerprint[value[2:10]], value[10:]
        elif value[:1] == CONFLUENT_MAGIC and len(value) >= 5:
            writer, body = self._registry_schema(int.from_bytes(value[1:5], "big")), value[5:]
        else:
            raise ValueError("neither avro-single-object nor confluent-avro")
        return cast(dict[str, Any], fastavro.schemaless_reader(io.BytesIO(body), writer, self.reader))

    def _registry_schema(self, schema_id: int) -> Any:
        if schema_id not in self.by_id:
            if self.fetch_schema is None:
                raise ValueError("confluent-avro record but no schema registry configured (SCHEMA_REGISTRY_URL)")
            self.by_id[schema_id] = fastavro.parse_schema(json.loads(self.fetch_schema(schema_id)), named_schemas={})
        return self.by_id[schema_id]


def registry_fetcher() -> Callable[[int], str] | None:
    """A schema's text by id from the registry (Confluent's own client, with every connection option of
    SchemaSettings: auth, CA file, client certificate), when SCHEMA_REGISTRY_URL is set."""

    settings = SchemaSettings()
    if not settings.registry_url:
        return None
    client = SchemaRegistryClient(client_config(settings))

    def fetch(schema_id: int) -> str:
        return str(client.get_schema(schema_id).schema_str)

    return fetch


# -- Kafka shell ----------------------------------------------------------------------------------------


class UpdateCollector:
    """Reads pinwheel.account_updates.v1 with read_committed and keeps this run's updates.

    `from_end`: start at the current end offsets (a live run); else from the beginning, keeping updates whose
    triggering event was received at or after `since`.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        run_ids: set[str],
        *,
        since: datetime | None = None,
        from_end: bool = False,
        on_update: Callable[[UpdateView], None] | None = None,
    ) -> None:
        self.kafka = kafka
        self.run_ids = run_ids
        self.since = since
        self.from_end = from_end
        self.on_update = on_update
        self.decoder = AvscDecoder("AccountUpdate", fetch_schema=registry_fetcher())
        self.updates: list[UpdateView] = []
        self.partitions: list[Any] = []
        self.kafka = kafka
        self.consumer = AIOKafkaConsumer(
            **kafka.client_kwargs(),
            client_id=f"{kafka.client_id_prefix}-verify",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )

    async def start(self) -> UpdateCollector:
        try:
            await self._start()
        except BaseException:
            await self.consumer.stop()  # a failed start leaves the client open ("Unclosed AIOKafkaConsumer")
            raise
        return self

    async def _start(self) -> None:
        # Read on the updates, asked first: a topic the principal may not describe looks "not found" otherwise.
        await check_topics_of(self.kafka, {ACCOUNT_UPDATES_TOPIC: (TopicOp.READ,)}, "verify-check")
        await self.consumer.start()
        partitions = self.consumer.partitions_for_topic(ACCOUNT_UPDATES_TOPIC)
        if not partitions:
            await self.consumer._client.force_metadata_update()
            partitions = self.consumer.partitions_for_topic(ACCOUNT_UPDATES_TOPIC) or set()
        if not partitions:
            raise RuntimeError(f"topic {ACCOUNT_UPDATES_TOPIC} not found; create topics first")
        tps = [TopicPartition(ACCOUNT_UPDATES_TOPIC, p) for p in sorted(partitions)]
        self.partitions = tps
        self.consumer.assign(tps)
        if self.from_end:
            for tp, offset in (await self.consumer.end_offsets(tps)).items():
                self.consumer.seek(tp, offset)
        else:
            await self.consumer.seek_to_beginning(*tps)

    async def poll(self, timeout_ms: int = 300) -> int:
        """One fetch; returns how many of this run's updates it added."""
        added = 0
        batch = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=5000)
        for records in batch.values():
            for record in records:
                # The trigger's event_id header names another run's update without decoding it (the topic may
                # hold records this reader cannot decode, e.g. Confluent-format ones with no registry set).
                trigger = next((value for name, value in record.headers or () if name == "event_id"), None)
                if trigger is not None and trigger.decode(errors="replace") not in self.run_ids:
                    continue
                # A record written before the run began is not of it, whatever its event id (the real sandbox
                # deliveries every run includes keep their ids): skipped before decoding too.
                if self.since is not None and record.timestamp < self.since.timestamp() * 1000:
                    continue
                view = UpdateView.from_datum(self.decoder.decode(record.value))
                if view.event_id not in self.run_ids:
                    continue
                if self.since is not None and view.received_at is not None and view.received_at < self.since:
                    continue
                self.updates.append(view)
                added += 1
                if self.on_update is not None:
                    self.on_update(view)
        return added

    async def catch_up(self, timeout_s: float = 600.0) -> None:
        """Read at least everything committed when called (the topic's history may take longer than `wait`)."""
        target = await self.consumer.end_offsets(self.partitions)  # read_committed: the last stable offsets
        deadline = time.monotonic() + timeout_s
        while [tp for tp, end in target.items() if await self.consumer.position(tp) < end]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{ACCOUNT_UPDATES_TOPIC} not read to its end within {timeout_s:.0f} s")
            await self.poll()

    async def run_until(self, done: Callable[[], bool], deadline: float, settle_s: float = 2.0) -> None:
        """Poll until `done()` (then `settle_s` more, to see late duplicates) or the monotonic `deadline`."""
        settle_until: float | None = None
        while time.monotonic() < deadline:
            await self.poll()
            if settle_until is None and done():
                settle_until = time.monotonic() + settle_s
            if settle_until is not None and time.monotonic() >= settle_until:
                return

    async def stop(self) -> None:
        await self.consumer.stop()


async def verify_ledger(
    ledger: Ledger,
    kafka: KafkaSettings,
    *,
    wait_s: float,
    settle_s: float = 2.0,
    pending_window: timedelta | None = None,
) -> VerifyReport:
    """Read the run's updates (waiting up to `wait_s` for the missing ones) and compare."""
    started = ledger.run.get("started_at")
    since = datetime.fromisoformat(started) - timedelta(seconds=5) if isinstance(started, str) else None
    expected = expectations(ledger)
    collector = await UpdateCollector(kafka, set(ledger.events), since=since).start()
    try:
        await collector.catch_up()  # `wait_s` counts from there: a loss is never just an unread record
        await collector.run_until(
            lambda: complete(ledger, collector.updates, expected), time.monotonic() + wait_s, settle_s
        )
    finally:
        await collector.stop()
    return compare(ledger, collector.updates, expected, pending_window)


def run_verify(ledger: Ledger, kafka: KafkaSettings, wait_s: float) -> VerifyReport:
    return asyncio.run(verify_ledger(ledger, kafka, wait_s=wait_s))
