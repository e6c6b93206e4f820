"""End-to-end latency: a delivery received by the gateway → its account update visible to a read_committed reader.

    python -m bench.e2e_bench [--duration 60] [--instances 1,2] [--max-rate R] [--saturation-deliveries 5000]
                              [--sender paced|simulator] [--warm-up 5]

Every part runs as its own OS process, as deployed: a Kafka broker (a private local one unless
KAFKA_BOOTSTRAP_SERVERS is set), the gateway (`pinwheel-connector gateway`, uvicorn over TLS with a
self-signed certificate), 1 then 2 processor instances (`pinwheel-connector processor`, a fresh consumer
group each, started at the end of the family topics) and the load generator. The traffic is the simulator's
(signed Pinwheel-like deliveries with duplicates, pending jobs and their finals, out-of-order arrival); by
default `bench.paced_sender` sends it, which costs a fraction of the simulator's CPU per delivery, so that
the generator is not what limits the throughput; `--sender simulator` sends it with `pinwheel-connector
simulate` (32 in flight) instead. This process only reads `pinwheel.account_updates.v1` with read_committed.

1. Saturation (skipped with --max-rate): S deliveries sent as fast as the generator can (8 connections, or 32
   requests in flight for the simulator) through one processor instance. The maximum sustainable throughput
   is the rate at which updates became visible between the 10th and the 90th percent of them (ramp-up and
   tail left out), in deliveries per second.
2. For each instance count, traffic at half that rate for --duration seconds, paced evenly. The latency of
   an update is this consumer's wall clock when the fetch returned it minus `trigger.received_at`, the
   gateway's receipt time (same machine, same clock). Pending jobs all get their final outcome (an update
   that waits for a pending timeout is late by design). Afterwards `verify`'s comparison with the
   generator's ledger counts lost and duplicated updates. Before it, the instances carry --warm-up seconds
   of other traffic at the same rate (its updates awaited; reported on a line of its own, not in the
   table), so the measured traffic finds them past their first transactions: the steady state. A fresh
   instance's first seconds are slower (its first transactions' produce requests wait up to a second for
   their acks on this machine); `--warm-up 0` measures them within the run.

Each run also splits the latency at the update's own timestamp (CreateTime: set when the processor's commit
built the batch, at the start of its produce): receipt → produce (the gateway's publish, the processor's fetch,
the wait for the next commit) and produce → visible (the rest of the transaction, its markers, this reader's
fetch); each percentile of each part on its own, so they do not add up. It also reports the CPU seconds
that the generator, the gateway, the processors and the broker spent while the traffic was sent. Prints
markdown tables and draws docs/img/e2e-latency-cdf.png.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import secrets
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench import paced_sender, plot
from bench.instances import Instances, process_cpu_seconds, provision, start_instances, wait_settled
from bench.report import percentile, table
from common.ports import free_port
from common.settings import KafkaSettings
from connector.local_kafka import NODE_PORT_SPAN, LocalKafka, LocalKafkaSettings
from connector.run import Service, gateway_env, start_service, stop_on_sigterm, wait_ready
from gateway.tls import ensure_self_signed
from schemas.catalog import ACCOUNT_UPDATES_TOPIC
from schemas.codec import build_codec
from simulator.ledger import Ledger, read_ledger
from simulator.traffic import PlannedEvent, TrafficConfig, build_traffic
from simulator.verify import UpdateView, compare, complete, expectations

PARTITIONS = 6
PERCENTILES = (50.0, 90.0, 99.0, 99.9)
SEND_CONCURRENCY = 32  # the simulator's requests in flight
SEND_CONNECTIONS = 8  # the paced sender's
# No pending job stays unresolved: its timeout update would be late by design, not by the pipeline.
UNRESOLVED_RATE = 0.0


def _say(message: str) -> None:
    print(f"[e2e] {message}", flush=True)


@dataclass(frozen=True, slots=True)
class Seen:
    view: UpdateView
    visible_at: float  # epoch seconds when the consumer's fetch returned it
    produced_at: float  # the update record's timestamp (CreateTime): when its commit's produce built its batch

    @property
    def latency_s(self) -> float:
        assert self.view.received_at is not None
        return self.visible_at - self.view.received_at.timestamp()

    @property
    def to_produce_s(self) -> float:
        """Receipt → the commit's produce: gateway publish, the processor's fetch, the wait for the next commit."""
        assert self.view.received_at is not None
        return self.produced_at - self.view.received_at.timestamp()

    @property
    def after_produce_s(self) -> float:
        """The commit's produce → visible: the rest of the transaction, its markers, this reader's fetch."""
        return self.visible_at - self.produced_at


class UpdateWatcher:
    """Reads the account updates with read_committed from the current end, timestamping each fetch."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.codec = build_codec()
        self.seen: list[Seen] = []
        self.consumer = AIOKafkaConsumer(
            **kafka.client_kwargs(), group_id=None, enable_auto_commit=False, isolation_level="read_committed"
        )

    async def start(self) -> UpdateWatcher:
        await self.consumer.start()
        tps = [TopicPartition(ACCOUNT_UPDATES_TOPIC, p) for p in range(PARTITIONS)]
        self.consumer.assign(tps)
        await self.consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the positions now, before any traffic
            await self.consumer.position(tp)
        return self

    async def poll(self) -> None:
        batch = await self.consumer.getmany(timeout_ms=100, max_records=5000)
        now = time.time()
        for records in batch.values():
            for record in records:
                datum = await self.codec.decode_resolved(ACCOUNT_UPDATES_TOPIC, record.value)
                self.seen.append(Seen(UpdateView.from_datum(datum), now, record.timestamp / 1000))

    def views(self) -> list[UpdateView]:
        return [s.view for s in self.seen]

    async def stop(self) -> None:
        await self.consumer.stop()


Generator = Literal["paced", "simulator"]


@dataclass(frozen=True, slots=True)
class Traffic:
    deliveries: int
    accounts: int
    spread_s: float
    rate: float  # deliveries per second, 0: as fast as possible
    seed: int

    def events(self) -> list[PlannedEvent]:
        return build_traffic(_config(self.accounts, self.seed, self.spread_s), datetime.now(UTC))


def deliveries_per_account(seed: int) -> float:
    sample = build_traffic(_config(200, seed, 10.0), datetime.now(UTC))
    return sum(e.deliveries for e in sample) / 200


def _config(accounts: int, seed: int, spread_s: float) -> TrafficConfig:
    return TrafficConfig(
        accounts=accounts, seed=seed, spread_s=spread_s, unresolved_rate=UNRESOLVED_RATE, include_capture=False
    )


def plan_traffic(deliveries: int, rate: float, duration_s: float, seed: int) -> Traffic:
    accounts = max(1, math.ceil(deliveries / deliveries_per_account(seed)))
    # Accounts connect over the first quarter of the run (each account's events then span up to ~15 s), so the
    # simulator's schedule stays ahead of its rate limiter and the limiter alone sets the pace: deliveries queue
    # in the generator, before the gateway's receipt, where latency is measured from. (The paced sender keeps
    # only the order of the due times.)
    return Traffic(deliveries, accounts, duration_s / 4, rate, seed)


@dataclass
class Stack:
    """What the phases share: the broker, the gateway, the signing secret and the load generator."""

    kafka: KafkaSettings
    work: Path
    url: str
    cert: Path
    secret: str
    generator: Generator
    gateway: Service
    broker: LocalKafka | None

    def cpu_seconds(self, instances: Instances) -> dict[str, float | None]:
        """CPU seconds so far of the processes the generator loads (the broker's only when it is our own)."""
        broker_pid = self.broker.pid() if self.broker is not None else None
        return {
            "gateway": process_cpu_seconds(self.gateway.process.pid),
            "processors": instances.cpu_seconds(),
            "broker": process_cpu_seconds(broker_pid) if broker_pid is not None else None,
        }


def start_gateway(kafka: KafkaSettings, work: Path, secret: str) -> tuple[Service, str, str, Path]:
    """The gateway, its webhook base URL (HTTPS), its admin listener's URL (/readyz, /metrics) and its certificate."""
    cert, key = work / "tls" / "gateway.crt", work / "tls" / "gateway.key"
    ensure_self_signed(cert, key)
    port, admin_port = free_port(), free_port()
    base = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers}
    env = gateway_env(
        base, secret=secret, port=port, admin_port=admin_port, cert=cert, key=key, spool_dir=work / "spool"
    )
    gateway = start_service("gateway", ["gateway"], env, work / "gateway.log")
    return gateway, f"https://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}", cert


def start_simulator(stack: Stack, traffic: Traffic, ledger: Path) -> Service:
    args = ["simulate", "--url", f"{stack.url}/webhooks/pinwheel", "--ca-file", str(stack.cert)]
    args += ["--accounts", str(traffic.accounts), "--seed", str(traffic.seed), "--rate", f"{traffic.rate:.1f}"]
    args += ["--concurrency", str(SEND_CONCURRENCY), "--time-scale", "0.01", "--ledger", str(ledger)]
    args += ["--no-capture", "--no-progress"]
    env = {
        **os.environ,
        "SIMULATOR_SECRET": stack.secret,
        "SIMULATOR_SPREAD_S": str(traffic.spread_s),
        "SIMULATOR_UNRESOLVED_RATE": str(UNRESOLVED_RATE),
    }
    return start_service("simulator", args, env, ledger.with_suffix(".log"))


def start_paced_sender(stack: Stack, traffic: Traffic, ledger: Path) -> Service:
    events = ledger.with_suffix(".traffic.jsonl")
    paced_sender.write_traffic(events, traffic.events())
    args = ["--traffic", str(events), "--url", f"{stack.url}/webhooks/pinwheel", "--ca-file", str(stack.cert)]
    args += ["--ledger", str(ledger), "--rate", f"{traffic.rate:.1f}", "--connections", str(SEND_CONNECTIONS)]
    args += ["--seed", str(traffic.seed)]
    return paced_sender.start("paced sender", args, stack.secret, ledger.with_suffix(".log"))


def start_generator(stack: Stack, traffic: Traffic, ledger: Path) -> Service:
    if stack.generator == "simulator":
        return start_simulator(stack, traffic, ledger)
    return start_paced_sender(stack, traffic, ledger)


@dataclass(frozen=True, slots=True)
class PhaseResult:
    label: str
    instances: int
    ledger: Ledger
    seen: list[Seen]
    lost: int
    duplicated: int
    cpu_s: dict[str, float | None]  # per process kind, while the traffic was sent
    warm_up: PhaseResult | None = None  # the uncounted traffic the same instances carried first

    @property
    def generator_cpu_ms(self) -> float | None:
        """The paced sender's own CPU per delivery (from its ledger); the simulator does not report it."""
        value = (self.ledger.end or {}).get("cpu_ms_per_delivery")
        return float(value) if value is not None else None

    def mine(self) -> list[Seen]:
        """This run's updates, first sighting of each."""
        first: dict[str, Seen] = {}
        for s in self.seen:
            if s.view.event_id in self.ledger.events:
                first.setdefault(s.view.update_id, s)
        return list(first.values())


async def run_phase(
    stack: Stack, label: str, instances: int, traffic: Traffic, warm_up: Traffic | None = None
) -> PhaseResult:
    app = f"bench-e2e-{instances}-{uuid.uuid4().hex[:6]}"
    await provision(stack.kafka, app, PARTITIONS)
    group = start_instances("pipeline", instances, kafka=stack.kafka, app_id=app, work=stack.work)
    try:
        await wait_settled(group, PARTITIONS)
        first = None
        if warm_up is not None:
            first = await run_traffic(stack, group, warm_up, f"{label} warm-up", stack.work / f"{app}-warm-up.jsonl")
        result = await run_traffic(stack, group, traffic, label, stack.work / f"{app}-ledger.jsonl")
    finally:
        group.stop()
    return dataclasses.replace(result, warm_up=first)


async def run_traffic(stack: Stack, group: Instances, traffic: Traffic, label: str, path: Path) -> PhaseResult:
    """One traffic through running instances, watched from the current end of the updates topic."""
    watcher = await UpdateWatcher(stack.kafka).start()
    try:
        rate = f"{traffic.rate:,.0f}/s" if traffic.rate else "as fast as possible"
        _say(f"{label}: {traffic.deliveries:,} deliveries ({traffic.accounts} accounts) at {rate}")
        ledger, cpu_s = await drive(stack, watcher, group, traffic, label, path)
    finally:
        await watcher.stop()
    verdict = compare(ledger, watcher.views(), expectations(ledger))
    instances = len(group.health_ports)
    return PhaseResult(label, instances, ledger, watcher.seen, len(verdict.lost), len(verdict.duplicated), cpu_s)


async def drive(
    stack: Stack, watcher: UpdateWatcher, group: Instances, traffic: Traffic, label: str, path: Path
) -> tuple[Ledger, dict[str, float | None]]:
    """Send the traffic; then wait for every expected update, and 2 s more for a duplicate to show up.

    Returns the ledger and the CPU seconds each process kind spent while the generator ran."""
    before = stack.cpu_seconds(group)
    generator = start_generator(stack, traffic, path)
    try:
        await follow(watcher, generator, group.check_alive, label)
    finally:
        generator.stop()
    cpu_s = _spent(before, stack.cpu_seconds(group))
    if generator.process.returncode != 0:
        _say(f"{label}: some deliveries were refused or given up (counted below):\n{generator.log_tail(5)}")
    ledger = read_ledger(path)
    expected = expectations(ledger)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not complete(ledger, watcher.views(), expected):
        await watcher.poll()
    settle = time.monotonic() + 2
    while time.monotonic() < settle:
        await watcher.poll()
    return ledger, cpu_s


def _spent(before: dict[str, float | None], after: dict[str, float | None]) -> dict[str, float | None]:
    spent: dict[str, float | None] = {}
    for kind, end in after.items():
        start = before[kind]
        spent[kind] = None if end is None or start is None else end - start
    return spent


async def follow(watcher: UpdateWatcher, generator: Service, check: Callable[[], None], label: str) -> None:
    """Collect updates while the generator sends, with a progress line every 5 s."""
    started = time.monotonic()
    next_report, reported = started + 5, 0
    while generator.alive():
        check()
        await watcher.poll()
        if time.monotonic() >= next_report:
            window = sorted(s.latency_s for s in watcher.seen[reported:] if s.view.received_at is not None)
            if window:
                _say(
                    f"  {label}: {time.monotonic() - started:5.0f}s {len(watcher.seen):,} updates; last 5 s: "
                    f"{len(window) / 5:,.0f}/s, p50 {percentile(window, 50) * 1000:,.0f} ms, "
                    f"max {window[-1] * 1000:,.0f} ms"
                )
            reported, next_report = len(watcher.seen), time.monotonic() + 5


def max_throughput(result: PhaseResult) -> float:
    """Deliveries per second, from the updates' visibility between their 10th and 90th percent."""
    visible = sorted(s.visible_at for s in result.mine())
    low, high = visible[len(visible) // 10], visible[len(visible) * 9 // 10]
    updates_per_s = (len(visible) * 0.8) / (high - low)
    accepted = sum(1 for a in result.ledger.attempts if a.result == "accepted")
    return updates_per_s * accepted / len(visible)


def latency_ms(latencies: list[float]) -> dict[str, float]:
    """The percentiles and the maximum of sorted latencies."""
    return {f"p{p:g}": percentile(latencies, p) for p in PERCENTILES} | {"max": latencies[-1]}


def sorted_latencies_ms(result: PhaseResult) -> list[float]:
    return sorted(s.latency_s * 1000 for s in result.mine())


def summarize(result: PhaseResult, target_rate: float) -> dict[str, Any]:
    mine = result.mine()
    latencies = sorted_latencies_ms(result)
    accepted = [a for a in result.ledger.attempts if a.result == "accepted"]
    sent = sorted(datetime.fromisoformat(a.sent_at).timestamp() for a in accepted)
    visible = sorted(s.visible_at for s in mine)
    return {
        "label": result.label,
        "instances": result.instances,
        "target_rate": target_rate,
        "deliveries": len(accepted),
        "deliveries_per_s": len(sent) / (sent[-1] - sent[0]),
        "updates": len(mine),
        "updates_per_s": len(visible) / (visible[-1] - visible[0]),
        "latency_ms": latency_ms(latencies),
        "split_ms": {
            "to_produce": latency_ms(sorted(s.to_produce_s * 1000 for s in mine)),
            "after_produce": latency_ms(sorted(s.after_produce_s * 1000 for s in mine)),
        },
        "warm_up_latency_ms": None if result.warm_up is None else latency_ms(sorted_latencies_ms(result.warm_up)),
        "lost": result.lost,
        "duplicated": result.duplicated,
        "generator_cpu_ms_per_delivery": result.generator_cpu_ms,
        "cpu_s": result.cpu_s,
        "cdf": [(percentile(latencies, q), q) for q in (*range(1, 100), 99.5, 99.9, 100)],
    }


async def run(args: argparse.Namespace, kafka: KafkaSettings, stack: Stack) -> dict[str, Any]:
    max_rate = args.max_rate
    saturation: dict[str, Any] | None = None
    if max_rate is None:
        traffic = plan_traffic(args.saturation_deliveries, 0.0, 2.0, seed=1)
        result = await run_phase(stack, "saturation x1", 1, traffic)
        max_rate = max_throughput(result)
        saturation = summarize(result, 0.0) | {"max_sustainable_per_s": max_rate}
        _say(f"maximum sustainable throughput {max_rate:,.0f} deliveries/s (lost {result.lost})")
    rate = math.floor(max_rate / 2 / 10) * 10
    runs = []
    for n, instances in enumerate(args.instances, start=2):
        traffic = plan_traffic(int(rate * args.duration), rate, args.duration, seed=n)
        warm_up = plan_traffic(int(rate * args.warm_up), rate, args.warm_up, seed=100 + n) if args.warm_up else None
        runs.append(summarize(await run_phase(stack, f"x{instances}", instances, traffic, warm_up), rate))
        _say(f"x{instances}: " + ", ".join(f"{k} {v:,.0f} ms" for k, v in runs[-1]["latency_ms"].items()))
    return {
        "sender": stack.generator,
        "max_rate": max_rate,
        "rate": rate,
        "duration_s": args.duration,
        "warm_up_s": args.warm_up,
        "saturation": saturation,
        "runs": runs,
    }


def report(result: dict[str, Any]) -> None:
    header = ["instances", "rate (target)", "deliveries/s", "updates", "updates/s"]
    header += [f"p{p:g} ms" for p in PERCENTILES] + ["max ms", "lost", "duplicated"] + CPU_HEADER
    rows = []
    for r in result["runs"]:
        latency = r["latency_ms"]
        rows.append(
            [str(r["instances"]), f"{r['target_rate']:,.0f}", f"{r['deliveries_per_s']:,.0f}", f"{r['updates']:,}"]
            + [f"{r['updates_per_s']:,.0f}"]
            + [f"{latency[f'p{p:g}']:,.0f}" for p in PERCENTILES]
            + [f"{latency['max']:,.0f}", str(r["lost"]), str(r["duplicated"])]
            + _cpu_cells(r)
        )
    print()
    if result["saturation"] is not None:
        s = result["saturation"]
        print(
            f"saturation (1 instance, {result['sender']} sender): {s['deliveries']:,} deliveries sent at "
            f"{s['deliveries_per_s']:,.0f}/s, updates visible at {s['updates_per_s']:,.0f}/s; maximum sustainable "
            f"{result['max_rate']:,.0f} deliveries/s; lost {s['lost']}, duplicated {s['duplicated']}"
        )
        print()
        print(table(CPU_HEADER, [_cpu_cells(s)]))
        print()
    warm = f", after {result['warm_up_s']:g} s of warm-up traffic" if result["warm_up_s"] else ""
    print(
        f"latency runs at {result['rate']:,} deliveries/s (half the maximum), {result['duration_s']:.0f} s each{warm}:"
    )
    print()
    print(table(header, rows))
    for r in result["runs"]:
        print(
            f"\n{r['instances']} instance(s), where the time goes (each percentile on its own): receipt → the "
            "commit's produce (the update's CreateTime) "
            + ", ".join(f"{k} {v:,.0f}" for k, v in r["split_ms"]["to_produce"].items())
            + " ms; produce → visible "
            + ", ".join(f"{k} {v:,.0f}" for k, v in r["split_ms"]["after_produce"].items())
            + " ms"
        )
        if (first := r["warm_up_latency_ms"]) is not None:
            print(
                f"\nwarm-up ({r['instances']} fresh instance(s), {result['warm_up_s']:g} s, not in the table): "
                + ", ".join(f"{k} {v:,.0f} ms" for k, v in first.items())
            )
    chart = plot.lines(
        plot.IMAGES / "e2e-latency-cdf.png",
        f"End to end: gateway receipt → update visible (read_committed), {result['rate']:,}/s",
        "latency (ms)",
        "% of updates at or below",
        {
            f"{r['instances']} processor instance{'s' if r['instances'] > 1 else ''}": _xy(r["cdf"])
            for r in result["runs"]
        },
    )
    print(f"\nchart: {chart}")


CPU_HEADER = ["generator CPU ms/delivery", "CPU s gateway", "CPU s processors", "CPU s broker"]


def _cpu_cells(run: dict[str, Any]) -> list[str]:
    """The generator's CPU per delivery, then the CPU seconds the others spent while it sent ('-': unknown)."""
    generator = run["generator_cpu_ms_per_delivery"]
    cells = ["-" if generator is None else f"{generator:.2f}"]
    return cells + [
        "-" if run["cpu_s"][k] is None else f"{run['cpu_s'][k]:.1f}" for k in ("gateway", "processors", "broker")
    ]


def _xy(points: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    return [x for x, _ in points], [y for _, y in points]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of traffic per latency run")
    parser.add_argument("--instances", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2])
    parser.add_argument("--max-rate", type=float, default=None, help="maximum throughput (default: measured)")
    parser.add_argument("--saturation-deliveries", type=int, default=5_000)
    parser.add_argument(
        "--warm-up", type=float, default=5.0, help="seconds of uncounted traffic before each latency run (default 5)"
    )
    parser.add_argument(
        "--sender", choices=["paced", "simulator"], default="paced", help="load generator (default: bench.paced_sender)"
    )
    args = parser.parse_args()
    stop_on_sigterm()
    work = Path(tempfile.mkdtemp(prefix="pinwheel-e2e-"))
    broker: LocalKafka | None = None
    gateway: Service | None = None
    try:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            broker = LocalKafka(LocalKafkaSettings(port=free_port(NODE_PORT_SPAN), data_dir=work / "kafka"))
            bootstrap = broker.start()
        kafka = KafkaSettings(bootstrap_servers=bootstrap)
        secret = secrets.token_urlsafe(24)
        # The gateway needs no topic to start; each phase creates them (and its group) before its traffic.
        gateway, url, admin, cert = start_gateway(kafka, work, secret)
        asyncio.run(wait_ready([gateway], {"gateway": f"{admin}/readyz"}, cert, 60.0))
        stack = Stack(kafka, work, url, cert, secret, args.sender, gateway, broker)
        result = asyncio.run(run(args, kafka, stack))
    except KeyboardInterrupt:
        _say("interrupted: stopping what this bench started")
        sys.exit(130)
    finally:
        if gateway is not None:
            gateway.stop()
        if broker is not None:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(
        json.dumps(
            {k: v for k, v in result.items() if k != "runs"} | {"runs": [_no_cdf(r) for r in result["runs"]]}, indent=2
        )
    )
    report(result)


def _no_cdf(run: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in run.items() if k != "cdf"}


if __name__ == "__main__":
    main()
