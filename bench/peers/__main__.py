"""`make bench-peers`: the bench job on this project's processors, Quix Streams and faust-streaming.

    python -m bench.peers [--events 50000] [--rounds 3] [--systems pinwheel,quix[,faust]] [--peers-python PATH]

One private local broker (or KAFKA_BOOTSTRAP_SERVERS), the same simulated family records as
`bench.processor_bench` (duplicates, pending/final pairs, thousands of accounts), and per round, for each
system in turn (rounds alternate the systems): its pipeline run and its own exactly-once passthrough, each
in a fresh consumer group starting at the end of the family topics. As in `bench.processor_bench`, the
input is written in a transaction held open until the group has settled; the clock and the CPU count
(the process's own user + system time, every thread) start at its commit and stop when the group's
committed offsets cover it. Every system commits every 100 ms. Prints the median events per CPU second
of each, and fails (exit 1) unless every pipeline run produced the same distinct update ids.

The peers run in their own virtualenv (`make bench-peers` makes `.venv-peers` with the `[peers]` extra);
a peer that cannot be started is reported as such, with its error. faust-streaming runs only when named: at
20,000 events it committed 11 events per second (8,000 took it 17-24 s), so `--systems pinwheel,quix,faust
--events 8000` measures it.

50,000 events by default: the traffic is the first N deliveries of N/10 accounts, so a shorter run cuts more
account lifecycles short and its events are lighter on average; the mix settles by 50,000 (docs/benchmarks.md,
"The commit schedule, and the side-by-side sample").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench import plot
from bench.broker import run_with_broker
from bench.instances import Kind, process_cpu_seconds, provision, spawn
from bench.processor_bench import InputRecord, encode_inputs, hold_inputs, measure, run_instances
from bench.report import table
from common.offsets import start_at_end
from common.settings import KafkaSettings
from common.topics import TopicSpec, ensure_topics
from connector.run import Service
from processors.service import hot_path_compiled
from schemas import catalog
from schemas.codec import build_codec
from schemas.settings import SchemaSettings

ROOT = Path(__file__).resolve().parents[2]
PEERS = {"quix": "bench.peers.quix_job", "faust": "bench.peers.faust_job"}
NAMES = {"pinwheel": "this project's processors", "quix": "Quix Streams", "faust": "faust-streaming"}


def _say(message: str) -> None:
    print(f"[peers] {message}", flush=True)


@dataclass(frozen=True)
class Run:
    system: str
    mode: str  # pipeline | passthrough
    events: int
    seconds: float
    cpu_s: float
    update_ids: frozenset[str] = frozenset()

    @property
    def per_cpu_s(self) -> float:
        return self.events / self.cpu_s if self.cpu_s else 0.0


async def update_ends(kafka: KafkaSettings, partitions: int) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(**kafka.client_kwargs(), isolation_level="read_committed")
    await consumer.start()
    try:
        tps = [TopicPartition(catalog.ACCOUNT_UPDATES_TOPIC, p) for p in range(partitions)]
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


async def update_ids_since(kafka: KafkaSettings, start: dict[TopicPartition, int]) -> frozenset[str]:
    """Distinct update ids committed to the updates topic after `start`, read with a reader of our codec."""
    codec = build_codec(SchemaSettings())
    await codec.prepare()
    consumer = AIOKafkaConsumer(**kafka.client_kwargs(), isolation_level="read_committed")
    await consumer.start()
    ids: set[str] = set()
    try:
        consumer.assign(list(start))
        for tp, offset in start.items():
            consumer.seek(tp, offset)
        ends = await consumer.end_offsets(list(start))
        deadline = time.monotonic() + 120
        remaining = {tp for tp in start if ends[tp] > start[tp]}
        while remaining:
            if time.monotonic() > deadline:
                raise RuntimeError("could not read the updates to their end")
            for records in (await consumer.getmany(*remaining, timeout_ms=500)).values():
                for r in records:
                    if r.value is not None:
                        ids.add(str(codec.decode(catalog.ACCOUNT_UPDATES_TOPIC, r.value)["update_id"]))
            remaining = {tp for tp in remaining if await consumer.position(tp) < ends[tp]}
    finally:
        await consumer.stop()
    return frozenset(ids)


async def group_stable(kafka: KafkaSettings, group: str, timeout_s: float, service: Service) -> None:
    """Until the peer's consumer group is Stable with a member (then its tasks restore empty changelogs)."""
    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
    await admin.start()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if not service.alive():
                raise RuntimeError(f"exited with {service.process.returncode}")
            for response in await admin.describe_consumer_groups([group]):
                for described in response.groups:
                    state, members = described[2], described[5]
                    if state == "Stable" and members:
                        return
            await asyncio.sleep(0.5)
        raise RuntimeError(f"group {group} not stable after {timeout_s:.0f} s")
    finally:
        await admin.close()


async def run_peer(
    kafka: KafkaSettings,
    work: Path,
    system: str,
    mode: str,
    inputs: list[InputRecord],
    partitions: int,
    python: str,
    timeout_s: float = 600,
) -> Run:
    group = f"peers-{system}-{mode}-{uuid.uuid4().hex[:6]}"
    output = f"{group}-out"
    if mode == "passthrough":
        await ensure_topics(kafka, [TopicSpec(output, partitions)])
    await start_at_end(kafka, group, list(catalog.FAMILY_TOPICS.values()))
    held = await hold_inputs(kafka, inputs)
    argv = [python, "-m", PEERS[system], "--bootstrap", kafka.bootstrap_servers, "--group", group]
    argv += ["--state-dir", str(work / group), "--partitions", str(partitions)]
    if mode == "passthrough":
        argv += ["--passthrough", output]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    service = spawn(system, argv, env, work / f"{group}.log")
    try:
        try:
            await group_stable(kafka, group, 120, service)
            await asyncio.sleep(5)  # the tasks' (empty) changelogs restored, the fetchers started
            give_up = time.monotonic() + timeout_s

            def check() -> None:
                if not service.alive():
                    raise RuntimeError(f"exited with {service.process.returncode}")
                if time.monotonic() > give_up:
                    raise RuntimeError(f"not done after {timeout_s:.0f} s (see its log)")

            _say(f"{system} {mode}: group settled, releasing {held.count:,} records")
            seconds, cpu = await measure(
                kafka, group, held, lambda: process_cpu_seconds(service.process.pid), check, f"{system} {mode}"
            )
        except RuntimeError as exc:
            raise RuntimeError(f"{system} {mode}: {exc}\n{service.log_tail()}") from exc
    finally:
        service.stop(20)
        await held.close()
    return Run(system, mode, held.count, seconds, cpu)


async def one(
    kafka: KafkaSettings, work: Path, system: str, mode: str, inputs: list[InputRecord], partitions: int, python: str
) -> Run:
    before = await update_ends(kafka, partitions) if mode == "pipeline" else {}
    if system == "pinwheel":
        kind: Kind = "pipeline" if mode == "pipeline" else "passthrough"
        m = await run_instances(kafka, work, kind, 1, inputs, partitions)
        run = Run(system, mode, m.events, m.seconds, m.cpu_s)
    else:
        run = await run_peer(kafka, work, system, mode, inputs, partitions, python)
    if mode == "pipeline":
        run = Run(run.system, mode, run.events, run.seconds, run.cpu_s, await update_ids_since(kafka, before))
    _say(f"{system} {mode}: {run.per_cpu_s:,.0f} events per CPU s ({run.cpu_s:.1f} CPU s, {run.seconds:.1f} s)")
    return run


def pipeline_builds(peers_python: str) -> dict[str, str]:
    """How this process and the peers' interpreter import the shared pipeline: compiled (mypyc, setup.py) or
    its Python source. The comparison holds only when both run the same build of it."""
    probe = "import processors.pipeline as p; print('compiled' if not p.__file__.endswith('.py') else 'source')"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    peers = subprocess.run([peers_python, "-c", probe], env=env, capture_output=True, text=True, check=True)
    ours = "compiled" if hot_path_compiled() else "source"
    return {"ours": ours, "peers": peers.stdout.strip()}


async def bench(args: argparse.Namespace, bootstrap: str, work: Path) -> dict[str, object]:
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    builds = pipeline_builds(args.peers_python) if set(args.systems) - {"pinwheel"} else {}
    if builds:
        _say(f"the shared pipeline: {builds['ours']} here, {builds['peers']} in the peers' Python")
        if builds["ours"] != builds["peers"]:
            raise SystemExit("the peers would run another build of the shared pipeline: not the same logic")
    await provision(kafka, f"peers-setup-{uuid.uuid4().hex[:6]}", args.partitions)
    _say(f"encoding {args.events:,} simulated deliveries as family records")
    inputs = await encode_inputs(args.events)
    runs: list[Run] = []
    failed: dict[str, str] = {}
    for round_ in range(1, args.rounds + 1):
        for system in args.systems:
            for mode in ("pipeline", "passthrough"):
                if system in failed:
                    continue
                _say(f"round {round_}: {system} {mode}")
                try:
                    runs.append(await one(kafka, work, system, mode, inputs, args.partitions, args.peers_python))
                except RuntimeError as exc:
                    if system == "pinwheel":
                        raise
                    failed[system] = str(exc)
                    _say(f"{system} could not run: {exc}")
    return {"events": args.events, "runs": runs, "failed": failed}


def report(result: dict[str, object]) -> int:
    runs: list[Run] = result["runs"]  # type: ignore[assignment]
    failed: dict[str, str] = result["failed"]  # type: ignore[assignment]
    rows, medians = [], {}
    systems = list(dict.fromkeys(r.system for r in runs))
    for system in systems:
        pipeline = [r.per_cpu_s for r in runs if r.system == system and r.mode == "pipeline"]
        passthrough = [r.per_cpu_s for r in runs if r.system == system and r.mode == "passthrough"]
        medians[system] = statistics.median(pipeline) if pipeline else 0.0
        rows.append(
            [
                NAMES[system],
                f"{medians[system]:,.0f}",
                f"{statistics.median(passthrough):,.0f}" if passthrough else "",
                ", ".join(f"{v:,.0f}" for v in pipeline),
            ]
        )
    for system, error in failed.items():
        rows.append([NAMES[system], "could not run", "", error.splitlines()[0][:200]])
    print()
    print(
        table(
            ["system", "events per CPU second (median)", "its own EOS passthrough (median)", "rounds"],
            rows,
        )
    )
    ours = medians.get("pinwheel", 0.0)
    for system in systems:
        if system != "pinwheel" and medians[system] and ours:
            print(f"{NAMES['pinwheel']} / {NAMES[system]}: {ours / medians[system]:.2f}x")
    if medians:
        chart = plot.bars(
            plot.IMAGES / "peers-cpu.png",
            f"The bench job, exactly-once: events per CPU second ({result['events']:,} events, median)",
            "events / CPU s",
            {NAMES[system]: value for system, value in medians.items()},
        )
        print(f"chart: {chart}")
    pipeline_runs = [r for r in runs if r.mode == "pipeline"]
    reference = pipeline_runs[0].update_ids if pipeline_runs else frozenset()
    differing = [r for r in pipeline_runs if r.update_ids != reference]
    print(f"distinct update ids per pipeline run: {sorted({len(r.update_ids) for r in pipeline_runs})}")
    for r in differing:
        print(
            f"DIFFERENT OUTPUT: {r.system}: {len(r.update_ids - reference)} ids not in the reference, "
            f"{len(reference - r.update_ids)} missing"
        )
    print(json.dumps([{**r.__dict__, "update_ids": len(r.update_ids)} for r in runs]))
    return 1 if differing or not reference else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--systems", type=lambda s: s.split(","), default=["pinwheel", "quix"])
    parser.add_argument("--peers-python", default=str(ROOT / ".venv-peers" / "bin" / "python"))
    args = parser.parse_args()
    result = run_with_broker("pinwheel-peers-", _say, lambda bootstrap, work: bench(args, bootstrap, work))
    sys.exit(report(result))


if __name__ == "__main__":
    main()
