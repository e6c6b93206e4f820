"""A processor that meets a schema id it has not seen while the registry is unreachable.

The fault is injected where it happens: a TCP proxy in front of the real registry that refuses new
connections and cuts open ones. The record (written with a newer, compatible schema version) must be
neither dead-lettered nor skipped: the batch is put back, /readyz says why, and once the registry
answers again the record is processed and committed.
"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from fastavro import parse_schema, schemaless_writer

from common.offsets import start_at_end
from common.ports import free_port
from common.settings import KafkaSettings
from common.topics import TopicSettings, ensure_topics
from processors.service import serve
from processors.settings import ProcessorSettings
from processors.topics import all_topics
from schemas.catalog import FAMILY_TOPICS
from schemas.envelope import build_family_record
from schemas.settings import SchemaSettings
from schemas.store import load_store
from tests.health import wait_ready
from tests.registry_proxy import CuttableProxy
from tests.schema_registry import Registry

pytestmark = [pytest.mark.kafka, pytest.mark.usefixtures("state_topic_recreated")]

ACCOUNT_ADDED = Path(__file__).resolve().parent.parent / "fixtures" / "doc-samples" / "01-account.added.json"


def _evolved_record(registry_url: str) -> tuple[str, bytes, bytes]:
    """(topic, key, value): a family record written with a new compatible schema version (one more optional
    field), registered directly in the registry, so the processor has never seen its id."""
    body = json.loads(ACCOUNT_ADDED.read_text())
    body["event_id"] = str(uuid.uuid4())
    now = datetime.now(UTC)
    record = build_family_record(
        json.dumps(body).encode(), webhook_id="wh", pinwheel_version="v", sent_at=now, received_at=now
    )
    schema = json.loads(load_store().current("pinwheel.AccountEvent").text)
    schema["fields"].append(
        {"name": f"added_later_{uuid.uuid4().hex[:6]}", "type": ["null", "string"], "default": None}
    )
    response = httpx.post(
        f"{registry_url}/subjects/{record.topic}-value/versions",
        json={"schema": json.dumps(schema)},
        headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
    )
    assert response.status_code == 200, response.text  # BACKWARD-compatible: accepted
    out = io.BytesIO()
    out.write(b"\x00" + int(response.json()["id"]).to_bytes(4, "big"))
    schemaless_writer(out, parse_schema(schema), dict(record.value))
    return record.topic, record.key, out.getvalue()


async def _get(url: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(url)


async def _metrics(port: int) -> dict[str, float]:
    text = (await _get(f"http://127.0.0.1:{port}/metrics")).text
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


async def _until(predicate: object, timeout_s: float) -> None:
    """Poll an async predicate (an HTTP endpoint: nothing to await on) until true or the timeout."""
    for _ in range(int(timeout_s / 0.25)):
        if await predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.25)
    raise AssertionError("condition not reached in time")


async def test_unseen_schema_id_during_an_outage_puts_the_batch_back(
    schema_registry: Registry, bootstrap: str, tmp_path: Path
) -> None:
    host_port = schema_registry.url.split("//", 1)[1].split("/", 1)
    host, port = host_port[0].rsplit(":", 1)
    proxy = CuttableProxy(host, int(port))
    proxy_url = f"http://127.0.0.1:{await proxy.start()}/{host_port[1]}"
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    app_id = f"test-registry-retry-{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka, all_topics(TopicSettings(processor_application_id=app_id)))
    await start_at_end(kafka, app_id, list(FAMILY_TOPICS.values()))
    settings = ProcessorSettings(application_id=app_id, state_dir=tmp_path / "state", health_port=free_port())
    schema = SchemaSettings(registry_url=proxy_url, registry_retries=1, registry_retry_wait_ms=20)
    stop = asyncio.Event()
    processor = asyncio.create_task(serve(settings, kafka, schema, stop=stop))
    health = f"http://127.0.0.1:{settings.health_port}"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await wait_ready(settings.health_port, service=processor)
        topic, key, value = await asyncio.to_thread(_evolved_record, schema_registry.url)
        proxy.down()
        await producer.send_and_wait(topic, value, key=key)

        async def put_back() -> bool:
            return (await _metrics(settings.health_port)).get("processor_batch_retries_total", 0) >= 1

        await _until(put_back, 60)
        response = await _get(f"{health}/readyz")
        assert response.status_code == 503
        assert "schema" in response.json()["waiting_on"]
        metrics = await _metrics(settings.health_port)
        assert metrics["processor_waiting_on_dependency"] == 1
        assert not [name for name in metrics if name.startswith("processor_dead_letters_total")]
        committed_before = metrics.get("processor_records_committed_total", 0)

        proxy.up()

        async def committed() -> bool:
            return (await _metrics(settings.health_port)).get("processor_records_committed_total", 0) > committed_before

        await _until(committed, 90)
        await wait_ready(settings.health_port, service=processor)
        metrics = await _metrics(settings.health_port)
        assert metrics["processor_waiting_on_dependency"] == 0
        assert not [name for name in metrics if name.startswith("processor_dead_letters_total")]
    finally:
        stop.set()
        await asyncio.wait_for(processor, 60)
        await producer.stop()
        await proxy.stop()
