"""bench.paced_sender against a receiver that fails on purpose: retries, signatures, the ledger verify reads."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.paced_sender import read_traffic, send, write_traffic
from gateway.tls import ensure_self_signed
from simulator.ledger import read_ledger
from simulator.traffic import PlannedEvent, TrafficConfig, build_traffic, planned_deliveries
from tests.simulator.sim_helpers import FlakyReceiver

SECRET = b"paced-secret"


@pytest.fixture
def events() -> list[PlannedEvent]:
    config = TrafficConfig(accounts=3, seed=7, duplicate_rate=0.5, include_capture=False)
    return build_traffic(config, datetime.now(UTC))


def test_traffic_file_round_trip(tmp_path: Path, events: list[PlannedEvent]) -> None:
    write_traffic(tmp_path / "t.jsonl", events)
    assert read_traffic(tmp_path / "t.jsonl") == events


async def test_retries_and_ledger(tmp_path: Path, events: list[PlannedEvent]) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    ensure_self_signed(cert, key)
    # Events delivered once: the receiver counts attempts per event id, duplicates included.
    first, second, refused = [e.event_id for e in events if e.deliveries == 1][:3]
    plans = {first: ["500", "503", "ok"], second: ["drop", "ok"], refused: ["400"]}

    def action_for(event_id: str, attempt: int) -> str:
        steps = plans.get(event_id, ["ok"])
        return steps[min(attempt, len(steps)) - 1]

    receiver = await FlakyReceiver(action_for, SECRET, cert, key).start()
    ledger_path = tmp_path / "ledger.jsonl"
    args = argparse.Namespace(url=receiver.url, ca_file=cert, ledger=ledger_path, rate=0.0, connections=3, seed=1)
    try:
        ok = await send(events, args, SECRET)
    finally:
        await receiver.stop()

    assert not ok  # the 400 is final
    assert all(seen.signature_ok for seen in receiver.seen)
    assert [s.action for s in receiver.attempts(first)] == ["500", "503", "ok"]
    assert [s.action for s in receiver.attempts(second)] == ["drop", "ok"]
    ledger = read_ledger(ledger_path)
    assert set(ledger.events) == {e.event_id for e in events}
    assert [a.result for a in ledger.attempts if a.event_id == first] == ["retry", "retry", "accepted"]
    assert [a.result for a in ledger.attempts if a.event_id == refused] == ["rejected"]
    assert [a.error for a in ledger.attempts if a.event_id == second] == ["read_error", None]
    assert ledger.end is not None
    assert ledger.end["deliveries"] == len(planned_deliveries(events))
    assert ledger.end["accepted_deliveries"] == len(planned_deliveries(events)) - 1
    assert ledger.end["cpu_ms_per_delivery"] > 0
