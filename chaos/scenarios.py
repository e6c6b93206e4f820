"""The fault-injection scenarios and the driver they share.

Every scenario: a private stack (chaos.harness.Stack), a simulation of `Size.accounts` accounts with Pinwheel's
retry policy compressed by `Size.time_scale`, a fault coroutine running at the same time, then `verify`
against the simulator's ledger. PASS needs 0 lost, 0 duplicated, 0 unexpected updates, every delivery
eventually accepted (none given up or rejected) and the scenario's own checks (the fault really happened:
events spooled, 503s answered, partitions moved, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import random
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, cast

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from chaos import forensics
from chaos.harness import Figures, Size, Stack, now_iso, say
from common.progress import ProgressBar
from common.topics import TopicSettings
from processors.runtime.engine import LOST_COMMIT_LOGGED
from processors.runtime.state import CHECKPOINT_KEY, Checkpoint
from processors.runtime.task import transactional_id
from schemas import catalog
from schemas.codec import build_codec
from schemas.envelope import build_family_record
from schemas.settings import SchemaSettings
from simulator.ledger import Ledger, read_ledger
from simulator.retry import is_accepted
from simulator.sender import signed_headers
from simulator.settings import SimulatorSettings
from simulator.simulate import plan_traffic, simulate
from simulator.verify import base_event_id, verify_ledger

SETUP_TIMEOUT_S = 120.0


@dataclass
class Context:
    """What a fault coroutine gets: the stack, the simulation's start, and where to record its checks."""

    stack: Stack
    size: Size
    t0: float
    simulation: asyncio.Task[Any]
    failures: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    async def at(self, seconds: float) -> None:
        """Sleep until `seconds` after the simulation started."""
        await asyncio.sleep(max(0.0, self.t0 + seconds - time.monotonic()))

    def elapsed(self) -> float:
        return round(time.monotonic() - self.t0, 1)

    def check(self, ok: bool, failure: str) -> None:
        if not ok:
            self.failures.append(failure)
            self.stack.say(f"CHECK FAILED: {failure}")

    def mark(self, event: str) -> None:
        """Timeline entry: `event` at the current offset from the simulation's start."""
        self.notes.setdefault("timeline", []).append(f"{event} @{self.elapsed()}s")
        self.stack.say(f"t={self.elapsed()}s {event}")

    async def restart_broker_and_drain(self, drain_timeout_s: float = 180.0) -> None:
        """Restart the killed broker, wait for the gateway's spool to drain into it, then for the simulation."""
        self.mark("restarting the broker")
        await self.stack.start_broker()
        self.mark("broker restarted")
        drained = await self.stack.wait_spool_drained(drain_timeout_s)
        self.mark(f"spool drained ({drained:.0f}s after the restart)")
        await self.simulation


Fault = Callable[[Context], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class Scenario:
    name: str
    injected: str
    fault: Fault
    gateway_env: dict[str, str] = field(default_factory=dict)
    processor_env: dict[str, str] = field(default_factory=dict)
    #: the scenario needs events in the gateway's spool (counted from its log)
    expects_spool: bool = False
    #: the scenario needs 503 answers
    expects_503: bool = False
    #: fewest SIGKILLs for the scenario to count
    min_kills: int = 0
    #: Kafka nodes: 1 is the single-node broker, 3 a KRaft cluster (RF 3, min ISR 2 on every topic)
    nodes: int = 1
    #: 503 answers are allowed (without it, any 503 fails the scenario: the gateway must spool)
    allows_503: bool = False
    #: any premature timeout fails the scenario: a job timed out although its final reached the gateway before
    #: the deadline (the processors stopped, not the gateway: every final was in Kafka in time)
    no_premature_timeouts: bool = False


@dataclass
class Result:
    scenario: str
    injected: str
    passed: bool
    figures: Figures
    failures: list[str]
    wall_s: float
    date: str
    #: every process the scenario started (all stopped when it returns)
    pids: list[int] = field(default_factory=list)

    def summary(self) -> str:
        f = self.figures
        verdict = "PASS" if self.passed else "FAIL"
        return (
            f"chaos {self.scenario}: {verdict} lost={f.lost} duplicated={f.duplicated} "
            f"accepted={f.accepted}/{f.deliveries} spooled={f.spooled} 503s={f.status_503} kills={f.kills} "
            f"wall={self.wall_s:.0f}s"
        )


# -- faults -------------------------------------------------------------------------------------------


async def poll_until(
    probe: Callable[[], Awaitable[dict[str, Any] | None]],
    done: Callable[[dict[str, Any]], bool],
    timeout_s: float,
    interval_s: float = 0.5,
) -> dict[str, Any] | None:
    """Poll a health endpoint until `done` holds or the time is up; the last answer either way."""
    deadline = time.monotonic() + timeout_s
    body: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        body = await probe()
        if body and done(body):
            break
        await asyncio.sleep(interval_s)
    return body


async def broker_outage(ctx: Context) -> None:
    """SIGKILL the broker a quarter into the traffic, restart it 30 s later; the gateway spools and drains."""
    stack = ctx.stack
    await ctx.at(ctx.size.spread_s * 0.25)
    await stack.kill_broker()
    ctx.mark("broker killed")
    await asyncio.sleep(30)
    body = await stack.gateway_ready()
    ctx.notes["spool records when the broker was restarted"] = body.get("spool_records") if body else None
    ctx.check(bool(body and body.get("kafka") == "down"), f"gateway did not see Kafka down: {body}")
    await ctx.restart_broker_and_drain()
    for instance, service in stack.processors.items():
        ctx.check(service.alive(), f"processor {instance} exited during the outage")
    await stack.wait_processor("a", 120)
    ctx.mark("processor ready again")


async def broker_kill_loop(ctx: Context) -> None:
    """SIGKILL the broker every few seconds of its uptime while the traffic flows, restarting it at once: each
    kill lands in whatever the processors and the gateway were doing (a commit half sent, a produce unanswered)."""
    stack = ctx.stack
    rng = random.Random(ctx.size.seed)
    low, high = ctx.size.kill_every_s
    while not ctx.simulation.done():
        await asyncio.sleep(rng.uniform(low, high) * 2)
        if ctx.simulation.done():
            break
        await stack.kill_broker()
        ctx.mark(f"broker killed ({stack.kills})")
        await stack.start_broker()
        ctx.mark("broker restarted")
    drained = await stack.wait_spool_drained(180.0)
    ctx.mark(f"traffic delivered; {stack.kills} kills; spool drained {drained:.0f}s after")
    await stack.wait_processor("a", 120)
    ctx.mark("processor ready")
    ctx.notes["task rebuilds (commits failed)"] = stack.processor_log_count('"task restart"')
    ctx.notes["tasks that found a commit of theirs lost by Kafka (aborted its leftovers, rebuilt)"] = (
        stack.processor_log_count(LOST_COMMIT_LOGGED)
    )


async def processor_kill_loop(ctx: Context) -> None:
    """kill -9 the processor every few seconds while the traffic flows, restarting it at once."""
    stack = ctx.stack
    rng = random.Random(ctx.size.seed)
    low, high = ctx.size.kill_every_s
    while not ctx.simulation.done():
        await asyncio.sleep(rng.uniform(low, high))
        if ctx.simulation.done():
            break
        stack.kill_processor("a")
        stack.start_processor("a")
    ctx.mark(f"traffic delivered; {stack.kills} kills")
    await stack.wait_processor("a", 120)
    ctx.mark("processor ready")


async def processor_scale(ctx: Context) -> None:
    """A second instance joins a third into the traffic and stops (SIGTERM) at two thirds."""
    stack = ctx.stack
    await ctx.at(ctx.size.spread_s / 3)
    stack.start_processor("b")
    ctx.mark("processor b started")
    body_b = await stack.wait_processor("b", 90)
    body_a = await stack.processor_ready("a")
    ctx.mark(f"b ready with partitions {body_b.get('assigned')}, a has {body_a and body_a.get('assigned')}")
    ctx.notes["partitions of b / of a while both ran"] = (
        f"{body_b.get('assigned')} / {body_a and body_a.get('assigned')}"
    )
    ctx.check(bool(body_b.get("assigned")), "processor b got no partition")
    await ctx.at(ctx.size.spread_s * 2 / 3)
    await stack.stop_processor("b")
    ctx.mark("processor b stopped")
    body = await poll_until(
        lambda: stack.processor_ready("a"), lambda b: b.get("status") == "ready" and len(b.get("assigned", [])) == 6, 90
    )
    ctx.check(bool(body and len(body.get("assigned", [])) == 6), f"a did not take every partition back: {body}")
    ctx.mark("a owns the 6 partitions again")


async def gateway_kill_with_spool(ctx: Context) -> None:
    """Broker down → the gateway spools; kill -9 the gateway; broker back; gateway restarted drains the spool."""
    stack = ctx.stack
    await ctx.at(ctx.size.spread_s * 0.2)
    await stack.kill_broker()
    ctx.mark("broker killed")
    body = await poll_until(stack.gateway_ready, lambda b: b.get("spool_records", 0) >= 100, 40)
    spooled = body.get("spool_records") if body else None
    ctx.notes["spool records when the gateway was killed"] = spooled
    ctx.check(bool(body and body.get("spool_records", 0) > 0), f"nothing spooled before the kill: {body}")
    stack.kill_gateway()
    on_disk = sum(p.stat().st_size for p in stack.spool_dir.rglob("*.seg"))
    ctx.mark(f"gateway killed with {spooled} records ({on_disk} bytes) in its spool")
    ctx.notes["spool bytes on disk after the kill"] = on_disk
    ctx.check(on_disk > 0, "the spool is empty on disk after the kill")
    ctx.mark("restarting the broker")
    await stack.start_broker()
    ctx.mark("broker restarted")
    stack.start_gateway()
    await stack.wait_gateway()
    ctx.mark("gateway restarted")
    drained = await stack.wait_spool_drained(180)
    ctx.mark(f"spool drained ({drained:.0f}s after the gateway restart)")
    await ctx.simulation
    await stack.wait_processor("a", 120)


async def spool_full(ctx: Context) -> None:
    """A tiny spool and the broker down: the gateway answers 503 + Retry-After, the simulator retries."""
    stack = ctx.stack
    await ctx.at(ctx.size.spread_s * 0.15)
    await stack.kill_broker()
    ctx.mark("broker killed")
    body = await poll_until(stack.gateway_ready, lambda b: b.get("status") == "not_ready", 60, interval_s=0.3)
    ctx.check(bool(body and body.get("status") == "not_ready"), f"the spool never filled up: {body}")
    ctx.mark(f"spool full ({body and body.get('spool_bytes')} bytes): /readyz 503")
    status, retry_after = await probe(stack)
    ctx.notes["probe delivery while the spool was full"] = f"HTTP {status}, Retry-After: {retry_after}"
    ctx.check(status == 503 and retry_after is not None, f"probe got {status}, Retry-After {retry_after}")
    await asyncio.sleep(20)
    await ctx.restart_broker_and_drain()
    await stack.wait_processor("a", 120)


async def processor_stop_catch_up(ctx: Context) -> None:
    """The processor stopped (SIGTERM) for 60 s under traffic, then restarted: it catches up on the backlog.

    Pendings and their finals pile up unread, and a fetch reads some family partitions further ahead than
    others; a timer fired during the catch-up (by stream time or the wall clock) before a final still unread
    would time out a job whose final is already in Kafka. verify classifies every timeout; a premature one
    (the final answered by the gateway before the deadline) fails the scenario.
    """
    await _stop_processor_for(ctx, at_s=ctx.size.spread_s * 0.2, down_s=60.0)


async def processor_checkpoint_ahead(ctx: Context) -> None:
    """The processor stopped (SIGTERM) halfway through the traffic; every task's local checkpoint is then made
    to claim input offsets a million past the committed ones, as if Kafka had lost the tasks' last commits
    (docs/reliability.md, "Failures seen"); restarted, each task must abort what such a commit could have left
    open, rebuild its store from the changelogs and go on: 0 lost, 0 duplicated."""
    stack = ctx.stack
    await ctx.at(ctx.size.spread_s * 0.5)
    await stack.stop_processor("a")
    moved = await asyncio.to_thread(_checkpoints_ahead, stack.work_dir / "state-a", 1_000_000)
    ctx.mark(f"processor stopped; {moved} task checkpoints moved ahead of the committed offsets")
    ctx.check(moved > 0, "no task checkpoint with committed input offsets to move")
    stack.start_processor("a")
    await stack.wait_processor("a", 120)
    ctx.mark("processor ready")
    fenced = stack.processor_log_count(LOST_COMMIT_LOGGED)
    ctx.notes["tasks that aborted a lost commit's leftovers and rebuilt their store"] = fenced
    ctx.check(fenced >= moved, f"{moved} checkpoints moved ahead, but {fenced} tasks noticed")
    await ctx.simulation


def _checkpoints_ahead(state_dir: Path, by: int) -> int:
    """Move every task checkpoint's input offsets (processors/runtime/state.py, `Checkpoint.inputs`) `by` ahead,
    in the stopped processor's stores; how many checkpoints had any."""
    from rocksdict import Options, Rdict

    moved = 0
    for store in sorted(path for path in state_dir.glob("*/*") if path.is_dir()):
        db = Rdict(str(store), Options(raw_mode=True))
        try:
            raw = db.get(CHECKPOINT_KEY)
            checkpoint = Checkpoint.from_bytes(raw) if raw else None
            if checkpoint is not None and checkpoint.inputs:
                ahead = {key: offset + by for key, offset in checkpoint.inputs.items()}
                db[CHECKPOINT_KEY] = dataclasses.replace(checkpoint, inputs=ahead).to_bytes()
                moved += 1
        finally:
            db.close()
    return moved


async def processor_long_outage(ctx: Context) -> None:
    """The processor stopped from early in the traffic until well after it ended (at least four pending windows),
    then restarted: the whole run is one backlog, and a fetch of a quiet family partition spans all of it (the
    24 h window's case after a long outage, compressed). No timeout may be premature."""
    size = ctx.size
    down_s = max(size.spread_s * 1.2, 4 * size.pending_timeout_s)
    await _stop_processor_for(ctx, at_s=size.spread_s * 0.05, down_s=down_s)


async def _stop_processor_for(ctx: Context, *, at_s: float, down_s: float) -> None:
    stack = ctx.stack
    await ctx.at(at_s)
    await stack.stop_processor("a")
    ctx.mark("processor stopped")
    await asyncio.sleep(down_s)
    stack.start_processor("a")
    ctx.mark(f"processor restarted after {down_s:.0f}s")
    await stack.wait_processor("a", 120)
    ctx.mark("processor ready")
    await ctx.simulation


async def clock_jump_record(ctx: Context) -> None:
    """One record per partition stamped 8 days ahead (a gateway whose clock jumped), a third into the traffic.

    Dedupe remembers event ids for 7 days of stream time: had such a record carried stream time 8 days
    forward, every later duplicate delivery of the run would come out again (verify: duplicated).
    """

    stack = ctx.stack
    await ctx.at(ctx.size.spread_s / 3)
    partitioner, every = DefaultPartitioner(), list(range(TopicSettings().partitions))
    accounts: dict[int, str] = {}
    while len(accounts) < len(every):
        account = str(uuid.uuid4())
        accounts.setdefault(partitioner(account.encode(), every, every), account)
    codec = build_codec(SchemaSettings())
    jumped = datetime.now(UTC) + timedelta(days=8)
    producer = AIOKafkaProducer(**stack.kafka.client_kwargs(), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for account in accounts.values():
            body = {
                "event_id": str(uuid.uuid4()),
                "event": "account.added",
                "payload": {
                    "account_id": account, "link_token_id": str(uuid.uuid4()), "platform_id": str(uuid.uuid4()),
                    "platform_name": "Workday", "created_at": jumped.isoformat(), "connected": True,
                    "monitoring_status": "active",
                },
            }  # fmt: skip
            record = build_family_record(
                json.dumps(body).encode(), webhook_id="clock-jump", pinwheel_version="2023-11-22",
                sent_at=jumped, received_at=jumped,
            )  # fmt: skip
            value = codec.encode(record.topic, record.value)
            headers = record.kafka_headers(codec.content_format)
            await producer.send_and_wait(record.topic, value, key=record.key, headers=headers)
    finally:
        await producer.stop()
    ctx.mark(f"{len(accounts)} records received 8 days ahead, one per partition")
    await ctx.simulation


async def probe(stack: Stack) -> tuple[int | None, str | None]:
    """One extra signed delivery (not in the ledger): its status and Retry-After header."""

    event = next(
        e
        for e in plan_traffic(
            SimulatorSettings(accounts=1, seed=stack.size.seed + 1000, include_capture=False), datetime.now(UTC)
        )
        if e.account_id
    )
    # Padded past any room left in a spool that just refused an append (a small body could still fit):
    # an unknown payload field, which Pinwheel may add any day, keeps it a genuine event.
    body = json.loads(event.body)
    body["payload"]["probe_padding"] = "x" * 64_000
    event = dataclasses.replace(event, body=json.dumps(body).encode())
    headers = signed_headers(event, stack.secret.encode(), int(time.time()))
    async with stack.http() as client:
        try:
            response = await client.post(stack.webhook_url, content=event.body, headers=headers)
        except Exception as exc:
            stack.say(f"probe failed: {type(exc).__name__}")
            return None, None
    return response.status_code, response.headers.get("retry-after")


# -- cluster faults (3 nodes: every topic RF 3, min.insync.replicas 2, unclean election off) ------------

CLUSTER_DOWN_S = 20.0


async def _restart_node(ctx: Context, node: int) -> None:
    ctx.mark(f"restarting node {node}")
    took = await ctx.stack.start_node(node)
    ctx.mark(f"node {node} serving again ({took:.0f}s)")


async def _until_changed(read: Callable[[], Awaitable[int]], old: int, timeout_s: float = 60.0) -> int | None:
    """Poll `read` until it answers a node other than `old` (and not -1); None after the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            value = await read()
            if value not in (old, -1):
                return value
        await asyncio.sleep(0.5)
    return None


async def _finish(ctx: Context) -> None:
    """The traffic's end, then every partition fully replicated again and the processor ready."""
    await ctx.simulation
    topics = [catalog.ACCOUNT_UPDATES_TOPIC, *catalog.FAMILY_TOPICS.values()]
    body = await poll_until(
        lambda: _as_body(ctx.stack.under_replicated(topics)), lambda b: b["under_replicated"] == 0, 120
    )
    ctx.check(bool(body and body["under_replicated"] == 0), f"partitions still under-replicated: {body}")
    await ctx.stack.wait_processor("a", 120)


async def _as_body(count: Awaitable[int]) -> dict[str, Any]:
    return {"under_replicated": await count}


async def _kill_holder(ctx: Context, role: str, find: Callable[[], Awaitable[int]]) -> None:
    """A quarter into the traffic, SIGKILL the node holding `role` (found by `find`), see another node take it
    over, restart the killed node 20 s later."""
    stack = ctx.stack
    await ctx.at(ctx.size.spread_s * 0.25)
    holder = await find()
    await stack.kill_node(holder)
    ctx.mark(f"node {holder} ({role}) killed")
    new = await _until_changed(find, holder)
    ctx.mark(f"{role} now node {new}")
    ctx.notes[role] = f"node {holder} → node {new}"
    ctx.check(new is not None, f"no other node became {role}")
    await asyncio.sleep(CLUSTER_DOWN_S)
    await _restart_node(ctx, holder)
    await _finish(ctx)


async def cluster_leader_kill(ctx: Context) -> None:
    """SIGKILL the node leading partition 0 of the output topic; back 20 s later."""
    topic = catalog.ACCOUNT_UPDATES_TOPIC
    await _kill_holder(ctx, f"leader of {topic}-0", lambda: ctx.stack.leader_of(topic, 0))


async def cluster_coordinator_kill(ctx: Context) -> None:
    """SIGKILL the node coordinating the transactions of the processors' task 0; back 20 s later."""

    txn_id = transactional_id(ctx.stack.app_id, 0)
    await _kill_holder(ctx, "transaction coordinator of task 0", lambda: ctx.stack.transaction_coordinator(txn_id))


async def cluster_controller_kill(ctx: Context) -> None:
    """SIGKILL the active controller (the KRaft quorum leader); back 20 s later."""
    await _kill_holder(ctx, "active controller", ctx.stack.active_controller)


async def cluster_two_down(ctx: Context) -> None:
    """SIGKILL 2 of the 3 nodes for 20 s: no quorum, no partition with 2 in-sync replicas. The gateway may
    only spool or answer 503, never acknowledge a record that rests on one broker; both nodes come back."""
    stack = ctx.stack
    await ctx.at(ctx.size.spread_s * 0.25)
    down = [2, 3]
    for node in down:
        await stack.kill_node(node)
    ctx.mark(f"nodes {down} killed, node 1 alone")
    await asyncio.sleep(2)  # answers to acknowledgements received before the kills are out by now
    acked_before = await stack.gateway_published()
    await asyncio.sleep(CLUSTER_DOWN_S / 2 - 2)
    body = await stack.gateway_ready()
    ctx.notes["gateway /readyz 10 s into the outage"] = body and {
        k: v for k, v in body.items() if k in ("status", "kafka", "spooling", "spool_records", "min_isr")
    }
    ctx.check(bool(body and body.get("spooling")), f"the gateway is not spooling with 2 of 3 nodes down: {body}")
    await asyncio.sleep(CLUSTER_DOWN_S / 2)
    acked_after = await stack.gateway_published()
    ctx.notes["deliveries answered on a Kafka acknowledgement while 1 node was up (must be 0)"] = (
        None if acked_before is None or acked_after is None else acked_after - acked_before
    )
    ctx.check(
        acked_before is not None and acked_after == acked_before,
        f"Kafka acknowledged writes with 1 of 3 nodes up: {acked_before} → {acked_after} published",
    )
    await asyncio.gather(*(_restart_node(ctx, node) for node in down))
    drained = await stack.wait_spool_drained(180)
    ctx.mark(f"spool drained ({drained:.0f}s after the restarts)")
    await _finish(ctx)


async def cluster_rolling_restart(ctx: Context) -> None:
    """SIGTERM and restart node 1, 2, 3 in turn, each once every partition is fully replicated again."""
    stack = ctx.stack
    topics = [catalog.ACCOUNT_UPDATES_TOPIC, *catalog.FAMILY_TOPICS.values()]
    await ctx.at(ctx.size.spread_s * 0.15)
    for node in (1, 2, 3):
        await stack.stop_node(node)
        ctx.mark(f"node {node} stopped")
        await _restart_node(ctx, node)
        body = await poll_until(
            lambda: _as_body(stack.under_replicated(topics)), lambda b: b["under_replicated"] == 0, 90
        )
        ctx.check(bool(body and body["under_replicated"] == 0), f"not fully replicated after node {node}: {body}")
        ctx.mark(f"fully replicated again after node {node}")
    ctx.notes["nodes restarted"] = 3
    await _finish(ctx)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "broker_outage",
            "broker SIGKILLed under gateway load, down 30 s, restarted on the same data",
            broker_outage,
            expects_spool=True,
            min_kills=1,
        ),
        Scenario(
            "broker_kill_loop",
            "broker SIGKILLed every 6-12 s of uptime during the traffic, restarted at once on the same data; "
            "commits time out after 5 s, so each kill fails the tasks committing and rebuilds them",
            broker_kill_loop,
            processor_env={"PROCESSOR_COMMIT_TIMEOUT_S": "5"},
            min_kills=3,
        ),
        Scenario(
            "processor_checkpoint_ahead",
            "processor stopped halfway; its tasks' local checkpoints moved ahead of the committed offsets (a commit "
            "Kafka lost); restarted",
            processor_checkpoint_ahead,
        ),
        Scenario(
            "processor_kill_loop",
            "processor kill -9 every 3-6 s during the traffic, restarted at once (same instance id)",
            processor_kill_loop,
            min_kills=3,
        ),
        Scenario(
            "processor_scale",
            "processors scaled 1 → 2 → 1 during the traffic (second instance joins, later SIGTERM)",
            processor_scale,
        ),
        Scenario(
            "gateway_kill_spool",
            "broker SIGKILLed so the gateway spools, gateway kill -9 with a non-empty spool, broker then "
            "gateway restarted",
            gateway_kill_with_spool,
            expects_spool=True,
            min_kills=2,
        ),
        Scenario(
            "spool_full_503",
            "GATEWAY_SPOOL_MAX_BYTES=1 MiB (the smallest allowed, ~750 events) and the broker SIGKILLed until the "
            "spool is full and 20 s more: 503 + Retry-After, the simulator retries on Pinwheel's schedule",
            spool_full,
            gateway_env={
                "GATEWAY_SPOOL_MAX_BYTES": str(1024 * 1024),
                "GATEWAY_SPOOL_SEGMENT_BYTES": str(256 * 1024),
                "GATEWAY_RETRY_AFTER_S": "5",
            },
            expects_spool=True,
            expects_503=True,
            min_kills=1,
        ),
        Scenario(
            "processor_stop_catch_up",
            "processor stopped 60 s under traffic (30 s pending window), then catches up on the backlog: no "
            "premature timeout (a job's final reached the gateway before its deadline)",
            processor_stop_catch_up,
            no_premature_timeouts=True,
        ),
        Scenario(
            "processor_long_outage",
            "processor stopped from early in the traffic until well after it ended (>= 4 pending windows), then "
            "catches up on the whole run at once: no premature timeout",
            processor_long_outage,
            no_premature_timeouts=True,
        ),
        Scenario(
            "clock_jump_record",
            "one family record per partition with received_at 8 days ahead (gateway clock jump) a third into "
            "the traffic; duplicates delivered after it must still be dropped",
            clock_jump_record,
        ),
        Scenario(
            "cluster_leader_kill",
            "3-node cluster: the leader of pinwheel.account_updates.v1-0 SIGKILLed, back after 20 s",
            cluster_leader_kill,
            min_kills=1,
            nodes=3,
        ),
        Scenario(
            "cluster_coordinator_kill",
            "3-node cluster: the transaction coordinator of the processors' task 0 SIGKILLed, back after 20 s",
            cluster_coordinator_kill,
            min_kills=1,
            nodes=3,
        ),
        Scenario(
            "cluster_controller_kill",
            "3-node cluster: the active controller (KRaft quorum leader) SIGKILLed, back after 20 s",
            cluster_controller_kill,
            min_kills=1,
            nodes=3,
        ),
        Scenario(
            "cluster_two_down",
            "3-node cluster: 2 of 3 nodes SIGKILLed for 20 s (no quorum, under min ISR): spool or 503, never a "
            "premature 200",
            cluster_two_down,
            expects_spool=True,
            allows_503=True,
            min_kills=2,
            nodes=3,
        ),
        Scenario(
            "cluster_rolling_restart",
            "3-node cluster: rolling restart (SIGTERM, restart, wait for full replication; node 1, 2, 3)",
            cluster_rolling_restart,
            nodes=3,
        ),
    )
}

CLUSTER_SCENARIOS = [name for name, s in SCENARIOS.items() if s.nodes > 1]


# -- driver -------------------------------------------------------------------------------------------


class _Lines(io.StringIO):
    """A non-terminal stream for the progress bar: plain lines on stdout, prefixed."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.strip():
                print(f"{self.prefix}{line}", flush=True)
        return len(text)

    def isatty(self) -> bool:
        return False


async def execute(scenario: Scenario, size: Size, work_dir: Path) -> Result:
    started = time.monotonic()
    stack = Stack(scenario.name, work_dir, size, scenario.nodes)
    figures = Figures()
    failures: list[str] = []
    date = now_iso()
    say(scenario.name, f"{scenario.injected}; {size.accounts} accounts; data in {work_dir}")
    try:
        await asyncio.wait_for(setup(stack, scenario), SETUP_TIMEOUT_S)
        sim = stack.simulator_settings()
        base = datetime.now(UTC)
        events = plan_traffic(sim, base)
        total = sum(e.deliveries for e in events)
        figures.events, figures.deliveries = len(events), total
        stack.say(f"simulating {len(events)} events, {total} deliveries over ~{size.spread_s:.0f}s")
        bar = ProgressBar(
            total, "deliveries", stream=cast(IO[str], _Lines(f"[chaos {scenario.name}] ")), plain_interval_s=10
        )
        simulation = asyncio.create_task(
            simulate(sim, secret=stack.secret, events=events, started_at=base, progress=bar)
        )
        ctx = Context(stack, size, time.monotonic(), simulation)
        fault = asyncio.create_task(scenario.fault(ctx))
        try:
            await fault
        except BaseException:
            simulation.cancel()
            with contextlib.suppress(BaseException):
                await simulation
            raise
        run = await simulation
        result = run.result
        figures.accepted, figures.gave_up, figures.rejected = (
            result.accepted_deliveries,
            result.gave_up_deliveries,
            result.rejected_deliveries,
        )
        figures.attempts = result.attempts
        figures.status_503 = result.statuses.get("503", 0)
        figures.network_errors = sum(n for k, n in result.statuses.items() if not k.isdigit())
        stack.say(
            f"traffic done at t={ctx.elapsed()}s: {result.accepted_deliveries}/{result.deliveries} accepted, "
            f"{result.attempts} attempts, statuses {dict(sorted(result.statuses.items()))}"
        )
        stack.say("verify: reading pinwheel.account_updates.v1 (read_committed) against the ledger")
        ledger = read_ledger(sim.ledger)
        window = timedelta(seconds=size.pending_timeout_s)  # the processors' grace is 0 (connector.run.processor_env)
        report = await verify_ledger(
            ledger, stack.kafka, wait_s=size.verify_wait_s, settle_s=3.0, pending_window=window
        )
        resolved, reordered = finals_before_pendings(ledger)
        if reordered:
            ctx.notes["resolved pending jobs whose final was accepted before their pending (reordered by retries)"] = (
                f"{reordered} of {resolved}"
            )
        figures.lost, figures.duplicated, figures.unexpected = (
            len(report.lost),
            len(report.duplicated),
            len(report.unexpected),
        )
        figures.expected_updates, figures.found = report.expected_updates + report.expected_timeouts, report.found
        figures.joined, figures.timed_out, figures.late_timeouts = report.joined, report.timed_out, report.late_timeouts
        figures.premature_timeouts = len(report.premature_timeouts)
        stack.say(
            f"verify: expected {report.expected_updates} updates + {report.expected_timeouts} timeouts, found "
            f"{report.found}, lost {len(report.lost)}, duplicated {len(report.duplicated)}, unexpected "
            f"{len(report.unexpected)}, joined {report.joined}, timed out {report.timed_out} "
            f"({len(report.premature_timeouts)} premature)"
        )
        failures.extend(ctx.failures)
        figures.notes.update(ctx.notes)
        if report.lost:
            failures.append(f"{len(report.lost)} lost (first: {', '.join(report.lost[:3])})")
            await look_for_lost(stack, report.lost)
        if report.duplicated:
            failures.append(f"{len(report.duplicated)} duplicated (first: {', '.join(report.duplicated[:3])})")
        if report.unexpected:
            failures.append(f"{len(report.unexpected)} unexpected updates")
        if scenario.no_premature_timeouts and report.premature_timeouts:
            failures.append(
                f"{len(report.premature_timeouts)} of {report.timed_out} timeouts premature (the job's final reached "
                f"the gateway before the deadline; first: {', '.join(report.premature_timeouts[:3])})"
            )
        if result.gave_up_deliveries or result.rejected_deliveries:
            failures.append(
                f"{result.gave_up_deliveries} deliveries given up, {result.rejected_deliveries} rejected "
                "(every delivery must eventually be accepted)"
            )
    except Exception as exc:
        failures.append(f"{type(exc).__name__}: {exc}")
        stack.say(f"ERROR {type(exc).__name__}: {exc}")
    finally:
        stack.say("stopping everything this scenario started")
        stack.close(keep_data=bool(failures))  # blocking on purpose: also runs when the scenario is cancelled
    leaks = stack.secret_leaks()
    if leaks:
        failures.append(f"the signing secret is written in {', '.join(leaks)}")
    figures.kills = stack.kills
    figures.spooled = stack.gateway_outcomes().get("spooled", 0)
    if not failures:
        if scenario.expects_spool and figures.spooled == 0:
            failures.append("no event went through the spool")
        if scenario.expects_503 and figures.status_503 == 0:
            failures.append("no 503 was answered")
        if not (scenario.expects_503 or scenario.allows_503) and figures.status_503:
            failures.append(f"{figures.status_503} answers were 503 (the gateway must spool and answer 200)")
        if figures.kills < scenario.min_kills:
            failures.append(f"only {figures.kills} kills (at least {scenario.min_kills} expected)")
    return Result(
        scenario.name,
        scenario.injected,
        not failures,
        figures,
        failures,
        time.monotonic() - started,
        date,
        list(stack.pids),
    )


async def look_for_lost(stack: Stack, lost: Sequence[str]) -> None:
    """Post-mortem of lost updates (chaos/forensics.py), while the broker still runs: where each lost event's
    records are, in `forensics.json` and the scenario's output."""
    out = stack.work_dir / "forensics.json"
    stack.say(f"looking for the {len(lost)} lost events in every topic (read_uncommitted and read_committed)")
    try:
        ids = sorted({base_event_id(update_id) for update_id in lost})
        report = await asyncio.wait_for(forensics.investigate(stack.kafka, ids), 180)
        await asyncio.to_thread(out.write_text, json.dumps(report, indent=1))
    except Exception as exc:  # a post-mortem must not hide the verdict
        stack.say(f"forensics failed: {type(exc).__name__}: {exc}")
        return
    for line in forensics.summary(report):
        stack.say(f"  {line}")
    stack.say(f"forensics in {out}")


def finals_before_pendings(ledger: Any) -> tuple[int, int]:
    """(resolved pending jobs, those whose final outcome was accepted before any of their pendings)."""

    assert isinstance(ledger, Ledger)
    accepted_at: dict[str, str] = {}
    for attempt in ledger.attempts:
        if is_accepted(attempt.status):
            previous = accepted_at.get(attempt.event_id)
            accepted_at[attempt.event_id] = attempt.sent_at if previous is None else min(previous, attempt.sent_at)
    jobs: dict[tuple[str | None, str, str | None], list[Any]] = {}
    for info in ledger.events.values():
        if info.account_id and info.outcome in catalog.JOB_OUTCOMES and info.event_id in accepted_at:
            jobs.setdefault((info.account_id, info.event_type, info.job_id), []).append(info)
    resolved = reordered = 0
    for infos in jobs.values():
        pendings = [accepted_at[i.event_id] for i in infos if i.outcome == catalog.PENDING]
        finals = [accepted_at[i.event_id] for i in infos if i.outcome != catalog.PENDING]
        if pendings and finals:
            resolved += 1
            reordered += min(finals) < min(pendings)
    return resolved, reordered


async def setup(stack: Stack, scenario: Scenario) -> None:
    await stack.start_broker()
    await stack.provision()
    stack.start_gateway(**scenario.gateway_env)
    stack.processor_extra |= scenario.processor_env
    stack.start_processor("a")
    await stack.wait_gateway()
    await stack.wait_processor("a")
    stack.say("gateway and processor ready")


def run_scenario(name: str, size: Size, work_dir: Path) -> Result:
    """Run one scenario to its verdict (everything it started is stopped, also on failure)."""
    result = asyncio.run(execute(SCENARIOS[name], size, work_dir))
    print(result.summary(), file=sys.stdout, flush=True)
    for failure in result.failures:
        print(f"  - {failure}", flush=True)
    return result
