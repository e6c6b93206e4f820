"""Restore speed and local state size: an instance's dedupe logs (or state topic) of N keys restored into
empty stores.

    python -m bench.restore_bench [--keys 1000000] [--partitions 6] [--rounds 3] [--timers per-record]
        [--store dedupe|accounts] [--entries-per-record 20]

Writes N dedupe entries (random event ids, as Pinwheel's are: UUID4 text; the value the processors store,
an 8-byte epoch µs) in transactions, spread over the partitions of the store's log, `--entries-per-record` in
each record as a transaction of the processors writes them (processors/runtime/entrylog.py: a handful at
Pinwheel's pace, hundreds at full speed), then restores every partition into an empty local store at once, as
an instance starting its tasks does (`processors.runtime.restore`, read_committed, one task per partition,
concurrently), `--rounds` times. Reports the keys restored per second (median: dedupe entries, or state
records) and the stores' size on disk once RocksDB has flushed them (the files of the state directories after
close), per million keys, with the process's peak RSS growth and CPU time.

The timers store has no changelog: a restore derives each dedupe entry's expiry timer. `--timers` says how:
`per-record` (what the processors do: the pipeline's hook, for every record as it is restored), `rebuild`
(the alternative: restore the dedupe store, then scan it and write every timer) or `none` (the dedupe store
alone, as before the timers were derived).

`--store accounts` restores the accounts store instead: N account states (synthetic, seeded: a few job outcomes,
paystubs sync progress with its ids, readiness), written as the processors write them (`WireEncoder`,
single-object Avro) to a compacted state topic, read back through the pipeline's hook
(`state_topic_translation`: `Codec.decode_plain`, `account_state_of`, the store's serde); `--timers` does not
apply (no timers are derived from it).

Runs against KAFKA_BOOTSTRAP_SERVERS if set, else starts its own local broker.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import shutil
import statistics
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.broker import run_with_broker
from common.settings import KafkaSettings
from processors.logic.account_table import AccountState, Readiness, Recommendation, SyncProgress
from processors.logic.codec import INT_SERDE
from processors.logic.config import LogicConfig
from processors.logic.join import JobOutcome
from processors.logic.stores import ACCOUNTS, DEDUPE, LOCAL_STORE_NAMES, TIMERS
from processors.pipeline import state_topic_translation, timers_derivation
from processors.runtime.entrylog import encode_entries
from processors.runtime.kafka_clients import AiokafkaClients
from processors.runtime.restore import restore
from processors.runtime.state import Derive, TaskState
from processors.wire import WireEncoder
from schemas.codec import build_codec

TIMERS_MODES = ("per-record", "rebuild", "none")


def _say(message: str) -> None:
    print(f"[restore] {message}", flush=True)


def event_ids(count: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)).encode() for _ in range(count)]


def account_states(count: int, seed: int = 1) -> list[AccountState]:
    """Accounts as the logic leaves them after a few weeks of deliveries (synthetic: times and ids seeded)."""
    rng = random.Random(seed)

    def uid() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    states = []
    for _ in range(count):
        t = 1_767_225_600_000_000 + rng.randrange(10**12)
        jobs = {
            job: JobOutcome(job, uid(), "success", None, None, t - 9_000_000, t - 1_000_000, 1, t)
            for job in rng.sample(["employment", "income", "identity", "paystubs", "shifts"], rng.randint(1, 4))
        }
        paystubs = SyncProgress(
            *(t, t, t, None, "in_progress", t, 3, 40, 40, 0, "2025-01-03", "2025-12-19"),
            added_ids=tuple(uid() for _ in range(rng.randint(0, 20))),
            last_job_id=uid(),
        )
        account = AccountState(uid(), uid(), uid(), "Acme Payroll", uid(), True, t, "active", t)
        states.append(
            account._replace(
                additional_platforms=(Recommendation("payroll", "login", uid()),),
                additional_platforms_at_us=t,
                jobs=jobs,
                paystubs=paystubs,
                version=rng.randint(1, 60),
                last_event_id=uid(),
                last_event_type="paystubs.added",
                last_event_sent_at_us=t,
                last_change="job_succeeded",
                updated_at_us=t,
                readiness=Readiness("account_ready", None, None, {"paystubs.added": t}, t, t),
            )
        )
    return states


async def fill_changelog(
    kafka: KafkaSettings,
    topic: str,
    keys: list[bytes],
    partitions: int = 1,
    values: list[bytes] | None = None,
    entries_per_record: int = 0,
) -> None:
    """`keys` spread over `partitions`, each with its value in `values` (default: a dedupe entry's); with
    `entries_per_record`, as the records of an entry log holding that many entries each."""
    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
    await admin.start()
    policy = "delete" if entries_per_record else "compact"
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1, topic_configs={"cleanup.policy": policy})])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        **kafka.client_kwargs(),
        transactional_id=f"bench-restore-{uuid.uuid4().hex[:8]}",
        linger_ms=5,
        max_batch_size=512 * 1024,
    )
    await producer.start()
    dedupe_value = INT_SERDE.to_bytes(1_767_225_600_000_000)
    try:
        for start in range(0, len(keys), 100_000):
            await producer.begin_transaction()
            chunk = keys[start : start + 100_000]
            if entries_per_record:
                for p in range(partitions):
                    mine = chunk[p::partitions]
                    for at in range(0, len(mine), entries_per_record):
                        entries = [(key, dedupe_value) for key in mine[at : at + entries_per_record]]
                        for value in encode_entries(entries):
                            await producer.send(topic, value, partition=p)
            else:
                for i, key in enumerate(chunk, start):
                    value = dedupe_value if values is None else values[i]
                    await producer.send(topic, value, key=key, partition=i % partitions)
            await producer.commit_transaction()
            _say(f"  {min(start + 100_000, len(keys)):,}/{len(keys):,} keys written")
    finally:
        await producer.stop()


def rebuild_timers(state: TaskState, derive: Derive, chunk: int = 20_000) -> int:
    """The alternative to deriving per record: scan the restored dedupe store and write every timer."""
    derived = 0
    entries: list[tuple[bytes, bytes | None]] = []
    for key, value in state.range(DEDUPE, b"", b"\xff"):
        entries.append((key, value))
        if len(entries) == chunk:
            derived += state.apply_restored(TIMERS, [(k, v) for _s, k, v in derive(DEDUPE, entries)])
            entries = []
    if entries:
        derived += state.apply_restored(TIMERS, [(k, v) for _s, k, v in derive(DEDUPE, entries)])
    return derived


async def restore_one(state: TaskState, kafka: KafkaSettings, mode: str, derive: Derive) -> int:
    if ACCOUNTS in state.changelogs:
        stats = await restore(state, AiokafkaClients(kafka), 3600, translate=state_topic_translation(build_codec()))
        return stats.records
    stats = await restore(state, AiokafkaClients(kafka), 3600, derive if mode == "per-record" else None)
    if mode == "rebuild":
        await asyncio.sleep(0)  # the other tasks' restores go on meanwhile, as in an instance
        rebuild_timers(state, derive)
    return stats.records


def disk_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


async def run(args: argparse.Namespace, bootstrap: str, work: Path) -> None:
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    derive = timers_derivation(LogicConfig())
    accounts = args.store == ACCOUNTS
    topic = f"bench-restore-{uuid.uuid4().hex[:6]}-{'account-state' if accounts else 'dedupe-log'}"
    _say(f"writing {args.keys:,} {args.store} keys to {topic}")
    if accounts:
        generated, wire = account_states(args.keys), WireEncoder(build_codec())
        keys, values = [s.account_id.encode() for s in generated], [wire.state(s) for s in generated]
        del generated
        await fill_changelog(kafka, topic, keys, args.partitions, values)
        del keys, values
    else:
        await fill_changelog(
            kafka, topic, event_ids(args.keys), args.partitions, entries_per_record=args.entries_per_record
        )
    timers_mode = "none" if accounts else args.timers
    rates, sizes, rss, cpu = [], [], [], []
    for round_ in range(1, args.rounds + 1):
        path = work / f"state-{round_}"
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        states = [
            TaskState(path / str(p), "bench-restore", p, {ACCOUNTS: topic}, (), (ACCOUNTS,))
            if accounts
            else TaskState(path / str(p), "bench-restore", p, {DEDUPE: topic}, LOCAL_STORE_NAMES, expiring=(DEDUPE,))
            for p in range(args.partitions)
        ]
        started, cpu_before = time.monotonic(), time.process_time()
        restored = await asyncio.gather(*(restore_one(state, kafka, timers_mode, derive) for state in states))
        seconds = time.monotonic() - started
        cpu.append(time.process_time() - cpu_before)
        rss.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_before)
        timers = 0 if accounts else sum(1 for state in states for _ in state.range(TIMERS, b"", b"~"))
        store = ACCOUNTS if accounts else DEDUPE
        held = sum(1 for state in states for _ in state.range(store, b"", b"\xff"))
        for state in states:
            state.close()
        records = sum(restored)
        if timers != (0 if timers_mode == "none" else args.keys):
            raise RuntimeError(f"{timers:,} timers derived from {held:,} dedupe entries ({timers_mode})")
        if held != args.keys:
            raise RuntimeError(f"restored {held:,} keys ({records:,} records), expected {args.keys:,}")
        rates.append(held / seconds)
        sizes.append(disk_mib(path) * 1_000_000 / args.keys)
        _say(
            f"round {round_}: {held:,} keys ({records:,} records) in {seconds:.2f} s = {rates[-1]:,.0f}/s "
            f"({cpu[-1]:.2f} CPU s); {sizes[-1]:.1f} MiB per million keys"
        )
        shutil.rmtree(path, ignore_errors=True)
    print()
    print(
        "| store | keys | partitions | timers | restore, keys per second (median; rounds) | CPU s "
        "| local state per million keys |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(
        f"| {args.store} | {args.keys:,} | {args.partitions} | {timers_mode} | **{statistics.median(rates):,.0f}** "
        f"({', '.join(f'{r:,.0f}' for r in rates)}) | {statistics.median(cpu):.2f} | "
        f"**{statistics.median(sizes):.1f} MiB** on disk (peak RSS +{max(rss):.0f} MiB while restoring) |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timers", choices=TIMERS_MODES, default=TIMERS_MODES[0], help="how the timers are derived")
    parser.add_argument("--store", choices=(DEDUPE, ACCOUNTS), default=DEDUPE, help="the store restored")
    parser.add_argument("--entries-per-record", type=int, default=20, help="dedupe entries in a record of its log")
    args = parser.parse_args()
    run_with_broker("pinwheel-restore-", _say, lambda bootstrap, work: run(args, bootstrap, work))


if __name__ == "__main__":
    main()
