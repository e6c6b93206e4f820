"""The whole pipeline in the Confluent wire format against a real schema registry (Apicurio).

Simulator → HTTPS gateway → broker → processors → outputs, checked two ways: the ledger comparison of
`verify`, and a downstream reader that shares nothing with our code, built only from confluent-kafka's
DeserializingConsumer + AvroDeserializer + SchemaRegistryClient, which must decode every output record.

The outage test stops the registry for 12 s under traffic and restarts it on the same port on empty
(in-memory) storage; a processor instance is replaced during the outage, so one starts while the
registry is down. Nothing may be lost, dead-lettered or duplicated, and both services recover alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from common.offsets import start_at_end
from common.ports import free_port
from common.settings import KafkaSettings
from common.topics import TopicSettings, ensure_topics
from connector.local_registry import LocalRegistry, local_registry_on_free_port
from gateway.settings import GatewaySettings
from gateway.tls import ensure_self_signed
from processors.logic.account_table import AccountState
from processors.logic.codec import ACCOUNT_STATE_SERDE
from processors.logic.stores import ACCOUNTS
from processors.pipeline import pipeline_task_state
from processors.service import serve
from processors.settings import ProcessorSettings
from processors.topics import all_topics
from processors.wire import account_state_of
from schemas.catalog import ACCOUNT_STATE_TOPIC, ACCOUNT_UPDATES_TOPIC, DEADLETTER_TOPIC, FAMILY_TOPICS
from schemas.codec import build_codec
from schemas.settings import SchemaSettings
from simulator.ledger import read_ledger
from simulator.settings import SimulatorSettings
from simulator.simulate import plan_traffic, simulate
from simulator.verify import UpdateCollector, base_event_id, compare, complete, expectations
from tests.health import wait_ready
from tests.schema_registry import Registry, downstream_deserializer, watermarks
from tests.simulator.sim_helpers import deliver_and_collect
from tests.threaded_gateway import ThreadedServer

pytestmark = [pytest.mark.kafka, pytest.mark.usefixtures("state_topic_recreated")]

SECRET = "registry-e2e-secret-do-not-log"
OUTPUTS = [ACCOUNT_UPDATES_TOPIC, ACCOUNT_STATE_TOPIC, DEADLETTER_TOPIC]
OUTAGE_S = 12.0  # the registry's outage: a dozen rechecks (registry_recheck_s=1) of the waiting processor


def confluent_read(
    bootstrap: str, registry_url: str, start: dict[tuple[str, int], int], end: dict[tuple[str, int], int]
) -> dict[str, list[dict[str, Any]]]:
    """Every committed record between `start` and `end`, decoded by Confluent's own deserializer."""
    from confluent_kafka import DeserializingConsumer, TopicPartition

    consumer = DeserializingConsumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"downstream-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "value.deserializer": downstream_deserializer(registry_url),
        }
    )
    wanted = {tp: offset for tp, offset in start.items() if end[tp] > offset}
    consumer.assign([TopicPartition(topic, partition, offset) for (topic, partition), offset in wanted.items()])
    decoded: dict[str, list[dict[str, Any]]] = {}
    done: set[tuple[str, int]] = set()
    deadline = time.monotonic() + 60
    try:
        while len(done) < len(wanted) and time.monotonic() < deadline:
            message = consumer.poll(0.5)  # raises on a record the deserializer cannot decode
            if message is None:
                # Transaction markers take offsets too: a partition is done once its position passes `end`.
                for tp in wanted.keys() - done:
                    position = consumer.position([TopicPartition(tp[0], tp[1])])[0].offset
                    if position >= end[tp]:
                        done.add(tp)
                continue
            tp = (message.topic(), message.partition())
            if message.offset() < end[tp]:
                decoded.setdefault(message.topic(), []).append(message.value())
            if message.offset() + 1 >= end[tp]:
                done.add(tp)
    finally:
        consumer.close()
    assert len(done) == len(wanted), "the downstream reader did not reach the end of every partition"
    return decoded


@dataclass
class Pipeline:
    kafka: KafkaSettings
    schema: SchemaSettings
    gateway: ThreadedServer
    app_id: str
    tmp: Path

    def processor_settings(self) -> ProcessorSettings:
        return ProcessorSettings(
            application_id=self.app_id, state_dir=self.tmp / "state", health_port=free_port(),
            punctuate_interval_ms=200, pending_timeout_h=5 / 3600, timeout_grace_s=0,
        )  # fmt: skip

    def sim(self, **overrides: Any) -> SimulatorSettings:
        settings: dict[str, Any] = dict(
            url=self.gateway.webhook_url, ca_file=self.gateway.settings.tls_cert_file, accounts=20, seed=12,
            spread_s=4.0, pending_rate=0.35, unresolved_rate=0.3, duplicate_rate=0.15, reorder_s=0.5,
            resolve_min_s=1.0, resolve_max_s=2.5, ledger=self.tmp / "ledger.jsonl", progress=False, time_scale=0.01,
        )  # fmt: skip
        return SimulatorSettings(**(settings | overrides))


@pytest.fixture
def outage_registry(tmp_path: Path) -> Iterator[LocalRegistry]:
    """A registry of this test alone (the outage test stops it), on free loopback ports."""
    registry = local_registry_on_free_port(tmp_path / "registry")
    registry.start()
    yield registry
    registry.stop()


@pytest.fixture
async def pipeline_for(bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    gateways: list[ThreadedServer] = []

    async def make(registry_url: str) -> Pipeline:
        monkeypatch.setenv("SCHEMA_REGISTRY_URL", registry_url)  # verify's reader, as a user runs it
        kafka = KafkaSettings(bootstrap_servers=bootstrap)
        schema = SchemaSettings(registry_url=registry_url, registry_recheck_s=1.0, registry_retry_wait_ms=50)
        app_id = f"test-registry-{uuid.uuid4().hex[:8]}"
        await ensure_topics(kafka, all_topics(TopicSettings(processor_application_id=app_id)))
        await start_at_end(kafka, app_id, list(FAMILY_TOPICS.values()))
        cert, key = tmp_path / "gw.crt", tmp_path / "gw.key"
        ensure_self_signed(cert, key)
        settings = GatewaySettings(
            host="127.0.0.1", port=free_port(), tls_cert_file=cert, tls_key_file=key, secrets=[SECRET],  # type: ignore[list-item]
            spool_dir=tmp_path / "spool", publish_timeout_s=5.0, shutdown_timeout_s=10.0, admin_port=free_port(),
        )  # fmt: skip
        gateway = ThreadedServer(settings, bootstrap, schema=schema)
        await asyncio.to_thread(gateway.start)
        gateways.append(gateway)
        return Pipeline(kafka, schema, gateway, app_id, tmp_path)

    yield make
    for gateway in gateways:
        await asyncio.to_thread(gateway.stop)


def _our_updates(decoded: dict[str, list[dict[str, Any]]], events: list[Any]) -> int:
    """Distinct update ids of this run among the decoded account updates (as verify counts them)."""
    ids = {e.event_id for e in events}
    return len({u["update_id"] for u in decoded.get(ACCOUNT_UPDATES_TOPIC, []) if base_event_id(u["update_id"]) in ids})


async def _readyz(port: int) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/readyz")
        return response.status_code, response.json()


async def _waiting_on_registry(port: int, service: asyncio.Task[None], timeout_s: float) -> tuple[int, dict[str, Any]]:
    """/readyz of a processor started while the registry is down, polled until it says what it waits on (its
    health server comes up first, then its wait); fails at once should the processor end instead."""
    deadline = time.monotonic() + timeout_s
    answer: tuple[int, dict[str, Any]] = (0, {})
    while time.monotonic() < deadline:
        assert not service.done(), "the processor ended while the registry was down"
        with contextlib.suppress(httpx.HTTPError):
            answer = await _readyz(port)
            if answer[0] == 503 and answer[1].get("waiting_on"):
                return answer
        await asyncio.sleep(0.2)
    return answer


async def _metric(port: int, name: str) -> float:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
    return values[0] if values else 0.0


async def test_confluent_format_end_to_end(schema_registry: Registry, pipeline_for: Any, bootstrap: str) -> None:
    pipe: Pipeline = await pipeline_for(schema_registry.url)
    start = await asyncio.to_thread(watermarks, bootstrap, OUTPUTS, end=True)
    settings = pipe.processor_settings()
    stop = asyncio.Event()
    processor = asyncio.create_task(serve(settings, pipe.kafka, pipe.schema, stop=stop))
    sim = pipe.sim()
    base = datetime.now(UTC)
    events = plan_traffic(sim, base)
    seen = await deliver_and_collect(
        pipe.kafka, sim, events, base, secret=SECRET, processor=processor, health_port=settings.health_port, stop=stop
    )
    assert seen.run.result.accepted_deliveries == seen.run.result.deliveries
    report = compare(seen.ledger, seen.updates, seen.expected)
    assert report.ok, report.as_dict()

    end = await asyncio.to_thread(watermarks, bootstrap, OUTPUTS, end=True)
    decoded = await asyncio.to_thread(confluent_read, bootstrap, schema_registry.url, start, end)
    assert _our_updates(decoded, events) == report.found > 0
    ids = {e.event_id for e in events}
    assert decoded.get(ACCOUNT_STATE_TOPIC)
    assert not decoded.get(DEADLETTER_TOPIC)

    # A new machine (an empty state directory) restores the accounts store from the state topic, whose records
    # are Confluent-framed: a fresh codec fetches their writer schemas from the registry. Its store then holds, for
    # each account of this run, what the account's latest state record says.
    restored = settings.model_copy(update={"state_dir": pipe.tmp / "state-b", "health_port": free_port()})
    stop_b = asyncio.Event()
    processor_b = asyncio.create_task(serve(restored, pipe.kafka, pipe.schema, stop=stop_b))
    try:
        await wait_ready(restored.health_port, service=processor_b)
    finally:
        stop_b.set()
        await asyncio.wait_for(processor_b, 60)
    accounts = {u["account_id"] for u in decoded[ACCOUNT_UPDATES_TOPIC] if base_event_id(u["update_id"]) in ids}
    latest = await _latest_states(bootstrap, pipe.schema, {str(a).encode() for a in accounts}, start, end)
    assert latest.keys() == {str(a).encode() for a in accounts}
    for key, (partition, expected) in latest.items():
        state = pipeline_task_state(restored.state_dir / pipe.app_id / str(partition), pipe.app_id, partition)
        try:
            raw = state.get(ACCOUNTS, key)
        finally:
            state.close()
        assert raw is not None, key
        assert ACCOUNT_STATE_SERDE.from_bytes(raw) == expected


async def _latest_states(
    bootstrap: str,
    schema: SchemaSettings,
    keys: set[bytes],
    start: dict[tuple[str, int], int],
    end: dict[tuple[str, int], int],
) -> dict[bytes, tuple[int, AccountState]]:
    """The partition and the state of the latest committed state record of each of `keys` between `start` and
    `end`, decoded by a codec of our own (the registry's writer schemas) and read back as the restore does."""
    codec = build_codec(schema)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
    await consumer.start()
    latest: dict[bytes, tuple[int, AccountState]] = {}
    try:
        tps = {TopicPartition(t, p): offset for (t, p), offset in start.items() if t == ACCOUNT_STATE_TOPIC}
        consumer.assign(list(tps))
        for tp, offset in tps.items():
            consumer.seek(tp, offset)
        remaining = {tp for tp in tps if end[(tp.topic, tp.partition)] > tps[tp]}
        while remaining:
            for tp, records in (await consumer.getmany(*remaining, timeout_ms=500)).items():
                for r in records:
                    if r.key in keys and r.offset < end[(tp.topic, tp.partition)]:
                        datum = await codec.decode_resolved(ACCOUNT_STATE_TOPIC, r.value)
                        latest[r.key] = (tp.partition, account_state_of(datum))
            remaining = {tp for tp in remaining if await consumer.position(tp) < end[(tp.topic, tp.partition)]}
    finally:
        await consumer.stop()
        await codec.close()
    return latest


async def test_registry_outage_loses_misfiles_and_duplicates_nothing(
    outage_registry: LocalRegistry, pipeline_for: Any, bootstrap: str
) -> None:
    registry = outage_registry
    pipe: Pipeline = await pipeline_for(registry.url)
    start = await asyncio.to_thread(watermarks, bootstrap, OUTPUTS, end=True)
    first = pipe.processor_settings()
    stop_first = asyncio.Event()
    processor = asyncio.create_task(serve(first, pipe.kafka, pipe.schema, stop=stop_first))
    # Traffic over ~24 s, with retries as Pinwheel makes them (scaled down): the outage falls in the middle.
    sim = pipe.sim(accounts=60, spread_s=24.0, seed=21)
    base = datetime.now(UTC)
    events = plan_traffic(sim, base)
    collector = await UpdateCollector(pipe.kafka, {e.event_id for e in events}, from_end=True).start()
    second = pipe.processor_settings()
    stop_second = asyncio.Event()
    replacement = None
    try:
        await wait_ready(first.health_port, service=processor)
        traffic = asyncio.create_task(simulate(sim, secret=SECRET, events=events, started_at=base))
        await asyncio.sleep(4)

        await asyncio.to_thread(registry.stop)
        outage_started = time.monotonic()
        # A processor instance replaced while the registry is down: the new one must wait, not crash.
        stop_first.set()
        await asyncio.wait_for(processor, 60)
        stopped_s = time.monotonic() - outage_started
        replacement = asyncio.create_task(serve(second, pipe.kafka, pipe.schema, stop=stop_second))
        status, body = await _waiting_on_registry(second.health_port, replacement, timeout_s=30)
        assert status == 503, body
        assert "registry" in str(body.get("waiting_on", "")).lower() or "Connect" in str(body.get("waiting_on"))
        assert await _metric(second.health_port, "processor_waiting_on_dependency") == 1
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage_started)))
        assert not replacement.done(), "the replacement processor must wait for the registry, not end"

        restarting = time.monotonic()
        await asyncio.to_thread(registry.start)  # same port, empty storage
        restarted = time.monotonic()
        outage_s = restarted - outage_started
        for _ in range(300):  # polled: readiness is an HTTP endpoint, there is nothing to await
            if (await _readyz(second.health_port))[0] == 200:
                break
            await asyncio.sleep(0.2)
        recovered_s = time.monotonic() - restarted
        run = await asyncio.wait_for(traffic, 300)
        ledger = read_ledger(sim.ledger)
        expected = expectations(ledger)
        await collector.run_until(lambda: complete(ledger, collector.updates, expected), time.monotonic() + 90)
        status, body = await _readyz(second.health_port)
        assert status == 200, body
        assert await _metric(second.health_port, "processor_waiting_on_dependency") == 0
    finally:
        await collector.stop()
        stop_first.set()
        stop_second.set()
        if not processor.done():
            await asyncio.wait_for(processor, 60)
        if replacement is not None:
            await asyncio.wait_for(replacement, 60)

    assert run.result.accepted_deliveries == run.result.deliveries
    # The gateway never refused a delivery (no 4xx/5xx answer; a dropped connection on this busy machine may be).
    assert not [status for status in run.result.statuses if status[0] in "45"], run.result.statuses
    report = compare(ledger, collector.updates, expected)
    assert report.ok, report.as_dict()
    assert (len(report.lost), len(report.duplicated), len(report.unexpected)) == (0, 0, 0)
    print(
        f"\n[outage] registry down {outage_s:.1f}s (first processor stopped in {stopped_s:.1f}s, registry"
        f" restart {restarted - restarting:.1f}s); replacement processor ready {recovered_s:.1f}s after the restart;"
        f" {run.result.deliveries} deliveries, statuses {dict(run.result.statuses)}; updates found {report.found},"
        f" lost {len(report.lost)}, duplicated {len(report.duplicated)}",
        file=sys.stderr,
    )
    # Both services registered our subjects again on the new (empty) registry.
    subjects = set(await asyncio.to_thread(lambda: httpx.get(f"{registry.url}/subjects").json()))
    assert {f"{topic}-value" for topic in [*FAMILY_TOPICS.values(), *OUTPUTS]} <= subjects
    # Every output record, before, during and after the outage, decodes with Confluent's deserializer
    # against the restarted registry; none is a dead letter.
    end = await asyncio.to_thread(watermarks, bootstrap, OUTPUTS, end=True)
    decoded = await asyncio.to_thread(confluent_read, bootstrap, registry.url, start, end)
    assert not decoded.get(DEADLETTER_TOPIC)
    assert _our_updates(decoded, events) == report.found > 0
