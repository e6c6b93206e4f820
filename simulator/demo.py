"""The demo half of `make run`: simulated traffic into a running gateway, the account updates shown as they
arrive, then the `verify` report (connector/run.py starts the broker and the services around it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Literal

import orjson

from common.progress import ProgressBar
from common.settings import KafkaSettings
from simulator.ledger import read_ledger
from simulator.settings import SimulatorSettings
from simulator.simulate import plan_traffic, print_result, simulate
from simulator.traffic import unresolved_pendings
from simulator.verify import (
    UpdateCollector,
    UpdateView,
    VerifyReport,
    compare,
    complete,
    expectations,
    format_report,
)


@dataclass(frozen=True)
class DemoOptions:
    """How the demo shows updates and how long it waits for them."""

    show: Literal["sample", "all", "none"]  # which updates are printed live
    show_per_s: int  # with show=sample, most update lines per second
    pending_timeout_s: float  # the processors' pending timeout: unresolved jobs time out after it
    settle_s: float  # extra wait for late updates after the last deadline
    say: Callable[[str], None] = print  # progress lines


class UpdateDisplay:
    """Prints account updates as they arrive: all, none, or at most `per_s` lines a second."""

    def __init__(self, mode: str, per_s: int, sink: IO[bytes]) -> None:
        self.mode = mode
        self.per_s = per_s
        self.sink = sink
        self.window = 0
        self.shown_in_window = 0
        self.hidden = 0
        self.count = 0
        self.bar: ProgressBar | None = None

    def __call__(self, update: UpdateView) -> None:
        self.count += 1
        self.sink.write(
            orjson.dumps(
                {
                    "update_id": update.update_id,
                    "account_id": update.account_id,
                    "change": update.change,
                    "event_type": update.event_type,
                    "job": update.job,
                    "outcome": update.outcome,
                    "time_to_resolve_ms": update.time_to_resolve_ms,
                }
            )
            + b"\n"
        )
        if self.mode == "none":
            return
        now = int(time.monotonic())
        if now != self.window:
            self.window, self.shown_in_window = now, 0
        if self.mode == "sample" and self.shown_in_window >= self.per_s and update.change != "job_timed_out":
            self.hidden += 1
            return
        self.shown_in_window += 1
        line = "  " + format_update(update)
        if self.bar is not None:
            self.bar.println(line)
        else:
            print(line, flush=True)


def format_update(update: UpdateView) -> str:
    job = update.job or update.event_type
    outcome = update.outcome or ""
    extra = f" after {update.time_to_resolve_ms / 1000:.1f}s" if update.time_to_resolve_ms is not None else ""
    return f"{update.account_id[:8]}  {update.change:<34} {job:<26} {outcome}{extra}".rstrip()


async def simulate_and_verify(
    sim: SimulatorSettings,
    kafka: KafkaSettings,
    options: DemoOptions,
    *,
    run_dir: Path,
    run_id: str,
    secret: str,
    started_wall: float,
) -> int:
    """Simulate `sim.accounts` accounts against the gateway at `sim.url`, show the account updates as they
    arrive (all of them go to `run_dir`/updates.jsonl), wait for the updates and the pending timeouts, print
    the `verify` report and a summary. 0 when nothing was lost or duplicated, else 1."""
    say = options.say
    base = datetime.now(UTC)
    events = plan_traffic(sim, base)
    run_ids = {e.event_id for e in events}
    unresolved = unresolved_pendings(events)
    total = sum(e.deliveries for e in events)
    say(
        f"simulating {sim.accounts} accounts (seed {sim.seed}): {len(events)} events, {total} deliveries "
        f"({total - len(events)} duplicates), the 12 real sandbox deliveries included, over ~{sim.spread_s:.0f}s"
    )
    say(
        f"{len(unresolved)} pending jobs will never be resolved: with the demo pending timeout of "
        f"{options.pending_timeout_s:.0f}s (PROCESSOR_PENDING_TIMEOUT_H={options.pending_timeout_s / 3600:.4f}) "
        "they become `job_timed_out` updates"
    )
    header = f"  {'account':<8}  {'change':<34} {'job':<26} outcome"
    print(header, flush=True)
    with (run_dir / "updates.jsonl").open("wb") as sink:
        display = UpdateDisplay(options.show, options.show_per_s, sink)
        collector = await UpdateCollector(kafka, run_ids, from_end=True, on_update=display).start()
        stop = asyncio.Event()

        async def follow() -> None:
            while not stop.is_set():
                await collector.poll(200)

        follower = asyncio.create_task(follow())
        try:
            bar = ProgressBar(total, "deliveries")
            display.bar = bar
            result = await simulate(sim, secret=secret, run_id=run_id, events=events, started_at=base, progress=bar)
            display.bar = None
            print_result(result)
            ledger = read_ledger(sim.ledger)
            expected = expectations(ledger)
            last_pending = max(
                (datetime.fromisoformat(e.occurred_at) for e in unresolved if e.occurred_at), default=base
            )
            due = last_pending + timedelta(seconds=options.pending_timeout_s + options.settle_s)
            deadline = time.monotonic() + max(options.settle_s, (due - datetime.now(UTC)).total_seconds())
            say(
                f"waiting for the processors: {len(expected.updates)} updates and {len(expected.timeouts)} "
                f"timeouts expected (the last timeout is due at {due - timedelta(seconds=options.settle_s):%H:%M:%S})"
            )
            settle_until: float | None = None
            last_report = time.monotonic()
            while time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                if settle_until is None and complete(ledger, collector.updates, expected):
                    settle_until = time.monotonic() + 3.0
                    say("every expected update is there; 3 s more to catch duplicates")
                if settle_until is not None and time.monotonic() >= settle_until:
                    break
                if time.monotonic() - last_report > 10:
                    last_report = time.monotonic()
                    say(f"... {len({u.update_id for u in collector.updates})} updates so far")
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await follower
            await collector.stop()
    if display.hidden:
        say(f"{display.hidden} of {display.count} updates not shown live; all are in {run_dir / 'updates.jsonl'}")
    report = compare(ledger, collector.updates, expected)
    print()
    print(format_report(report))
    print_summary(report, result.result.deliveries, len(result.events), sim.accounts, started_wall)
    return 0 if report.ok else 1


def print_summary(report: VerifyReport, deliveries: int, events: int, accounts: int, started_wall: float) -> None:
    print()
    print("summary")
    print(f"  accounts            {accounts} (+ the real capture's account)")
    print(f"  events / deliveries {events} / {deliveries} ({deliveries - events} duplicates injected)")
    print(f"  lost                {len(report.lost)}")
    print(f"  duplicated          {len(report.duplicated)}")
    print(f"  joined              {report.joined}")
    print(f"  timed out           {report.timed_out}")
    print(f"  wall time           {time.monotonic() - started_wall:.0f}s")
    print(f"  result              {'OK: 0 lost, 0 duplicated' if report.ok else 'FAILED'}", flush=True)
