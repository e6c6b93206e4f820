"""Per-event cost of the pure logic: ``python -m bench.logic_bench [events]``.

A realistic mix on 2,000 accounts: account.added, job events (one in ten goes through pending first),
paystubs/shifts batches with ids, monitoring updates, 2 % duplicate deliveries. Reports µs/event for building
``Event`` values (the adapter's share), for ``process`` on object stores (a store with a decoded-value cache),
and on byte stores that encode on every put and decode on every get (the worst case without a cache).
Times are CPU time of this process (time.process_time), so a busy machine inflates them less.
"""

from __future__ import annotations

import argparse
import random
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

from processors.logic.config import LogicConfig
from processors.logic.events import event_from_payload
from processors.logic.processor import AccountProcessor
from processors.logic.stores import in_memory_stores
from processors.logic.timeutil import to_us
from schemas import catalog

_JOBS = ("direct_deposit_switch.added", "income.added", "employment.added", "identity.added")


def _payloads(count: int, seed: int = 7) -> Iterator[tuple[str, str, dict[str, Any], int]]:
    rng = random.Random(seed)
    t0 = datetime(2025, 6, 24, tzinfo=UTC)
    accounts = [f"{n:08d}-0000-4000-8000-000000000000" for n in range(2000)]
    for n in range(count):
        now = t0 + timedelta(milliseconds=n * 10)
        account = rng.choice(accounts)
        base: dict[str, Any] = {"account_id": account, "end_user_id": "u-" + account[:8]}
        roll = rng.random()
        if roll < 0.05:
            event_type = "account.added"
            base.update(platform_name="Workday", connected=True, monitoring_status="active")
            base["created_at"] = now.isoformat()
        elif roll < 0.08:
            event_type = "account.monitoring_status.updated"
            base.update(current_monitoring_status="degraded", updated_at=now.isoformat())
        else:
            event_type = rng.choice((*_JOBS, "paystubs.added", "shifts.added"))
            finals = (catalog.SUCCESS, catalog.SUCCESS, catalog.ERROR)
            outcome = catalog.PENDING if rng.random() < 0.1 else rng.choice(finals)
            base.update(
                id=str(uuid.UUID(int=n)), name=event_type.split(".")[0], timestamp=now.isoformat(), outcome=outcome
            )
            base.update(error_code=None, error_type=None, params={"count": 3, "sync_status": "in_progress"})
            if event_type.endswith("s.added"):
                base["added"] = [{"id": f"{n}-{i}"} for i in range(3)]
                base["deleted"] = []
        yield f"evt-{n}", event_type, base, to_us(now)
        if rng.random() < 0.02:
            yield f"evt-{n}", event_type, base, to_us(now + timedelta(seconds=30))


def _run(count: int, serialized: bool, batch: int = 500) -> tuple[int, float, float]:
    """Like the runtime: decode a poll batch, process it, drop it (keeps the heap production-sized)."""
    processor = AccountProcessor(LogicConfig(), in_memory_stores(serialized=serialized))
    rows = _payloads(count)
    n = build = work = 0.0
    while chunk := list(islice(rows, batch)):
        start = time.process_time()
        events = [
            event_from_payload(event_id=i, event_type=t, payload=p, received_at_us=r, sent_at_us=r)
            for i, t, p, r in chunk
        ]
        built = time.process_time()
        for event in events:
            processor.process(event)
        work += time.process_time() - built
        build += built - start
        n += len(events)
    return int(n), build, work


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.logic_bench", description=__doc__.splitlines()[0])
    parser.add_argument("events", nargs="?", type=int, default=100_000, help="events per run (default 100000)")
    count = parser.parse_args(argv).events
    for serialized in (False, True):
        n, build, work = min((_run(count, serialized) for _ in range(3)), key=lambda r: r[2])
        label = "byte stores" if serialized else "object stores"
        print(
            f"{label:13}: {n} events; event_from_payload {build / n * 1e6:5.2f} µs/event; "
            f"process {work / n * 1e6:5.2f} µs/event ({n / work:,.0f} events/s)"
        )


if __name__ == "__main__":
    main()
