"""Simulator → real HTTPS gateway → real broker → processors → verify: nothing lost, nothing duplicated.

The gateway (uvicorn, TLS) and the processors run in-process on the session broker; the processors get
their own application id, started at the end of the family topics (as `make run` does), and a 5-second
pending timeout so unresolved pendings time out within the test.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from common.offsets import start_at_end
from common.ports import free_port
from common.settings import KafkaSettings
from common.topics import TopicSettings, ensure_topics
from gateway.settings import GatewaySettings
from gateway.tls import ensure_self_signed
from processors.service import serve
from processors.settings import ProcessorSettings
from processors.topics import all_topics
from schemas.catalog import ACCOUNT_UPDATES_TOPIC, FAMILY_TOPICS
from schemas.codec import build_codec
from schemas.settings import SchemaSettings
from simulator.ledger import Ledger, read_ledger
from simulator.settings import SimulatorSettings
from simulator.simulate import plan_traffic
from simulator.traffic import unresolved_pendings
from simulator.verify import base_event_id, compare, verify_ledger
from tests.simulator.sim_helpers import deliver_and_collect
from tests.threaded_gateway import ThreadedServer

pytestmark = pytest.mark.kafka

SECRET = "e2e-secret-do-not-log"
PENDING_TIMEOUT_S = 5.0


@pytest.fixture
def gateway(bootstrap: str, tmp_path: Path) -> Iterator[ThreadedServer]:
    cert, key = tmp_path / "gw.crt", tmp_path / "gw.key"
    ensure_self_signed(cert, key)
    settings = GatewaySettings(
        host="127.0.0.1", port=free_port(), tls_cert_file=cert, tls_key_file=key, secrets=[SECRET],  # type: ignore[list-item]
        spool_dir=tmp_path / "spool", publish_timeout_s=5.0, shutdown_timeout_s=10.0, admin_port=free_port(),
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
        application_id=app_id, state_dir=tmp_path / "state", health_port=free_port(1), punctuate_interval_ms=200,
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
    events = plan_traffic(sim, base)
    assert unresolved_pendings(events), "the run must exercise timeouts"
    assert sum(e.deliveries for e in events) > len(events), "the run must contain duplicate deliveries"
    health_port = processor_settings.health_port
    seen = await deliver_and_collect(
        kafka, sim, events, base, secret=SECRET, processor=processor, health_port=health_port, stop=stop
    )
    assert seen.run.result.accepted_deliveries == seen.run.result.deliveries
    ledger, expected = seen.ledger, seen.expected

    report = compare(ledger, seen.updates, expected)
    assert report.ok, report.as_dict()
    assert (len(report.lost), len(report.duplicated), len(report.unexpected)) == (0, 0, 0)
    assert report.timed_out >= len(unresolved_pendings(events)) > 0
    assert report.joined > 0
    assert report.expected_updates == len([e for e in events if e.account_id])
    # the CLI path (read from the beginning, filtered by the ledger's start time) agrees
    again = await verify_ledger(ledger, kafka, wait_s=0)  # everything is committed: no wait, but read to the end
    assert again.ok
    assert again.found == report.found
    assert SECRET not in sim.ledger.read_text()

    # Faults planted as an outside tester would, which verify must see (and one it must not count).
    started = datetime.fromisoformat(ledger.run["started_at"])
    aborted_id, duplicated_id = await plant_duplicates(bootstrap, expected.updates, started)
    lost_id = str(uuid.uuid4())
    planted_ledger = tmp_path / "planted.jsonl"
    planted_ledger.write_text(sim.ledger.read_text() + planted_loss(lost_id, ledger))
    planted = await verify_ledger(read_ledger(planted_ledger), kafka, wait_s=3)
    assert planted.duplicated == (duplicated_id,)  # the committed copy; the aborted one is never read
    assert planted.lost == (lost_id,)
    assert not planted.ok
    assert aborted_id not in planted.duplicated


async def plant_duplicates(bootstrap: str, update_ids: frozenset[str], since: datetime) -> tuple[str, str]:
    """Copies of two of the run's account updates: one inside an aborted transaction, one committed.

    The records are found with a plain consumer and the processors' codec (not verify's reader).
    """
    codec = build_codec(SchemaSettings())
    run_events = {base_event_id(u) for u in update_ids}
    consumer = AIOKafkaConsumer(
        ACCOUNT_UPDATES_TOPIC, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
        isolation_level="read_committed",
    )  # fmt: skip
    await consumer.start()
    picked: list[tuple[str, ConsumerRecord[bytes, bytes]]] = []
    try:
        while len(picked) < 2:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for r in records:
                    # Other tests' updates share the topic, some in a format this codec cannot read (Confluent
                    # framing, no registry here): the event_id header and the record time say whose it is.
                    trigger = dict(r.headers or ()).get("event_id", b"").decode(errors="replace")
                    if trigger not in run_events or r.timestamp < since.timestamp() * 1000:
                        continue  # the run's sandbox deliveries keep their ids in every run: time tells
                    datum = codec.decode(ACCOUNT_UPDATES_TOPIC, r.value)
                    update_id, received = datum["update_id"], datum["trigger"]["received_at"]
                    if update_id in update_ids and received >= since and len(picked) < 2:  # this run's
                        picked.append((update_id, r))
    finally:
        await consumer.stop()
    (aborted_id, aborted), (committed_id, committed) = picked
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"plant-{uuid.uuid4().hex}")
    await producer.start()
    try:
        await producer.begin_transaction()
        await producer.send_and_wait(ACCOUNT_UPDATES_TOPIC, aborted.value, key=aborted.key)
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send_and_wait(ACCOUNT_UPDATES_TOPIC, committed.value, key=committed.key)
    finally:
        await producer.stop()
    return aborted_id, committed_id


def planted_loss(event_id: str, ledger: Ledger) -> str:
    """Ledger lines of an event the gateway accepted (200) but that never reached Kafka."""
    account = next(info.account_id for info in ledger.events.values() if info.account_id)
    event = {"kind": "event", "event_id": event_id, "event_type": "account.added", "account_id": account,
             "job_id": None, "outcome": None, "occurred_at": None, "source": "planted", "deliveries": 1}  # fmt: skip
    attempt = {"kind": "attempt", "event_id": event_id, "event_type": "account.added", "account_id": account,
               "delivery": 1, "attempt": 1, "sent_at": datetime.now(UTC).isoformat(), "status": 200, "error": None,
               "latency_ms": 1.0, "result": "accepted", "reason": "family"}  # fmt: skip
    return json.dumps(event) + "\n" + json.dumps(attempt) + "\n"
