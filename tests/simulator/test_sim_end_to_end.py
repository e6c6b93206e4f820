"""Simulator → real HTTPS gateway → real broker → processors → verify: nothing lost, nothing duplicated.

The gateway (uvicorn, TLS) and the processors run in-process on the session broker; the processors get
their own application id, started at the end of the family topics (as `make run` does), and a 5-second
pending timeout so unresolved pendings time out within the test.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from threaded_gateway import ThreadedServer

from connector.run import start_at_end
from connector.settings import KafkaSettings
from connector.topics import TopicSettings, all_topics, ensure_topics
from gateway.settings import GatewaySettings
from gateway.tls import ensure_self_signed
from processors.runtime.settings import ProcessorSettings
from processors.service import serve
from schemas.catalog import FAMILY_TOPICS
from simulator.ledger import read_ledger
from simulator.settings import SimulatorSettings
from simulator.simulate import plan, simulate
from simulator.traffic import unresolved_pendings
from simulator.verify import UpdateCollector, compare, complete, expectations, verify_ledger

pytestmark = pytest.mark.kafka

SECRET = "e2e-secret-do-not-log"
PENDING_TIMEOUT_S = 5.0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def gateway(bootstrap: str, tmp_path: Path) -> Iterator[ThreadedServer]:
    cert, key = tmp_path / "gw.crt", tmp_path / "gw.key"
    ensure_self_signed(cert, key)
    settings = GatewaySettings(
        host="127.0.0.1", port=_free_port(), tls_cert_file=cert, tls_key_file=key, secrets=[SECRET],  # type: ignore[list-item]
        spool_dir=tmp_path / "spool", publish_timeout_s=5.0, shutdown_timeout_s=10.0,
    )  # fmt: skip
    gw = ThreadedServer(settings, bootstrap).start()
    yield gw
    gw.stop()


async def test_twenty_accounts_nothing_lost_nothing_duplicated(
    bootstrap: str, gateway: ThreadedServer, tmp_path: Path
) -> None:
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    app_id = f"test-sim-e2e-{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka, all_topics(TopicSettings(processor_application_id=app_id)))
    await start_at_end(kafka, app_id, list(FAMILY_TOPICS.values()))

    processor_settings = ProcessorSettings(
        application_id=app_id, state_dir=tmp_path / "state", health_port=0, punctuate_interval_ms=200,
        pending_timeout_h=PENDING_TIMEOUT_S / 3600, timeout_grace_s=0,
    )  # fmt: skip
    stop = asyncio.Event()
    processor = asyncio.create_task(serve(processor_settings, kafka, stop=stop))

    sim = SimulatorSettings(
        url=f"https://127.0.0.1:{gateway.settings.port}/webhooks/pinwheel", ca_file=gateway.settings.tls_cert_file,
        accounts=20, seed=11, spread_s=4.0, pending_rate=0.35, unresolved_rate=0.3, duplicate_rate=0.15,
        reorder_s=0.5, resolve_min_s=1.0, resolve_max_s=2.5, ledger=tmp_path / "ledger.jsonl", progress=False,
    )  # fmt: skip
    base = datetime.now(UTC)
    events = plan(sim, base)
    assert unresolved_pendings(events), "the run must exercise timeouts"
    assert sum(e.deliveries for e in events) > len(events), "the run must contain duplicate deliveries"
    collector = await UpdateCollector(kafka, {e.event_id for e in events}, from_end=True).start()
    try:
        await asyncio.sleep(3)  # the processor joins its group and restores (empty) state
        run = await simulate(sim, secret=SECRET, events=events, started_at=base)
        assert run.result.accepted_deliveries == run.result.deliveries
        ledger = read_ledger(sim.ledger)
        expected = expectations(ledger)
        await collector.run_until(lambda: complete(ledger, collector.updates, expected), time.monotonic() + 60)
    finally:
        await collector.stop()
        stop.set()
        await asyncio.wait_for(processor, 60)

    report = compare(ledger, collector.updates, expected)
    assert report.ok, report.as_dict()
    assert (len(report.lost), len(report.duplicated), len(report.unexpected)) == (0, 0, 0)
    assert report.timed_out >= len(unresolved_pendings(events)) > 0
    assert report.joined > 0
    assert report.expected_updates == len([e for e in events if e.account_id])
    # the CLI path (read from the beginning, filtered by the ledger's start time) agrees
    again = await verify_ledger(ledger, kafka, wait_s=20)
    assert again.ok
    assert again.found == report.found
    assert SECRET not in sim.ledger.read_text()
