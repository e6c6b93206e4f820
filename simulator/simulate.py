"""`pinwheel-connector simulate`: build the traffic, deliver it, write the ledger, print a summary."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO

import httpx

from common.progress import ProgressBar
from simulator.ledger import LedgerWriter
from simulator.sender import SendOptions, SimulationResult, send_all
from simulator.settings import SimulatorSettings
from simulator.traffic import PlannedEvent, build_traffic, unresolved_pendings


@dataclass(frozen=True, slots=True)
class SimulationRun:
    run_id: str
    started_at: datetime
    events: list[PlannedEvent]
    result: SimulationResult


def send_options(settings: SimulatorSettings, secret: str) -> SendOptions:
    return SendOptions(
        url=settings.url,
        secret=secret.encode(),
        ca_file=settings.ca_file,
        rate=settings.rate,
        concurrency=settings.concurrency,
        timeout_s=settings.timeout_s,
        policy=settings.retry_policy(),
        seed=settings.seed,
    )


def plan_traffic(settings: SimulatorSettings, base_time: datetime) -> list[PlannedEvent]:
    return build_traffic(settings.traffic(), base_time)


async def simulate(
    settings: SimulatorSettings,
    *,
    secret: str | None = None,
    run_id: str | None = None,
    events: Sequence[PlannedEvent] | None = None,
    started_at: datetime | None = None,
    progress: ProgressBar | None = None,
    client: httpx.AsyncClient | None = None,
) -> SimulationRun:
    """Deliver a run (the planned `events`, or the settings' traffic) and write its ledger."""
    the_secret = secret if secret is not None else (settings.secret.get_secret_value() if settings.secret else "")
    options = send_options(settings, the_secret)  # validates URL and secret before anything is written
    started = started_at or datetime.now(UTC)
    run_id = run_id or uuid.uuid4().hex[:12]
    planned = list(events) if events is not None else plan_traffic(settings, started)
    ledger = LedgerWriter(settings.ledger)
    try:
        ledger.write(
            {
                "kind": "run",
                "run_id": run_id,
                "started_at": started.isoformat(),
                "url": settings.url,
                "seed": settings.seed,
                "accounts": settings.accounts,
                "events": len(planned),
                "deliveries": sum(e.deliveries for e in planned),
                "unresolved_pendings": len(unresolved_pendings(planned)),
                "time_scale": settings.time_scale,
                "webhook_id": settings.webhook_id,
            }
        )
        for event in planned:
            ledger.write(event.ledger_record())
        ledger.flush()
        total = sum(e.deliveries for e in planned)
        bar = progress if progress is not None else ProgressBar(total, "deliveries", enabled=settings.progress)
        result = await send_all(planned, options, ledger, bar, client)
        bar.close()
        ledger.write(
            {
                "kind": "end",
                "run_id": run_id,
                "finished_at": datetime.now(UTC).isoformat(),
                "deliveries": result.deliveries,
                "attempts": result.attempts,
                "accepted_deliveries": result.accepted_deliveries,
                "rejected_deliveries": result.rejected_deliveries,
                "gave_up_deliveries": result.gave_up_deliveries,
                "statuses": dict(result.statuses),
                "elapsed_s": round(result.elapsed_s, 3),
            }
        )
    finally:
        ledger.close()
    return SimulationRun(run_id, started, planned, result)


def print_result(run: SimulationRun, out: IO[str] | None = None) -> None:
    out = out or sys.stdout
    r = run.result
    events = len(run.events)
    accounts = len({e.account_id for e in run.events if e.account_id})
    duplicates = r.deliveries - events
    statuses = " ".join(f"{k}={v}" for k, v in sorted(r.statuses.items()))
    print(
        f"simulated run {run.run_id}: {accounts} accounts, {events} events, {r.deliveries} deliveries "
        f"({duplicates} duplicate), {r.attempts} attempts in {r.elapsed_s:.1f}s",
        file=out,
    )
    print(
        f"  accepted {r.accepted_deliveries}, rejected {r.rejected_deliveries}, gave up {r.gave_up_deliveries}; "
        f"statuses: {statuses}",
        file=out,
    )
