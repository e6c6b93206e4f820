"""The whole pipeline, live, for tests that deliver webhooks over HTTPS and look at what reached Kafka.

The real gateway (uvicorn, TLS, `tests.threaded_gateway`) and the processors (`processors.service.serve`, their own
application id, started at the end of the family topics as `make run` does) on the session broker. `post` signs and
sends a body as Pinwheel does; `collect` reads what the pipeline wrote since the start (family topics, updates,
dead letters), decoded by the connector's codec.

A module of the tests package (`tests.live_pipeline`), shared by the refresh-job and the provenance tests.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from common.offsets import start_at_end
from common.ports import free_port
from common.settings import KafkaSettings
from common.topics import TopicSettings, ensure_topics
from gateway.settings import GatewaySettings
from gateway.signature import sign
from gateway.tls import ensure_self_signed
from processors.service import serve
from processors.settings import ProcessorSettings
from processors.topics import all_topics
from schemas.catalog import ACCOUNT_UPDATES_TOPIC, DEADLETTER_TOPIC, FAMILY_TOPICS
from schemas.codec import Codec, DecodeError
from tests.health import wait_ready
from tests.threaded_gateway import ThreadedServer

SECRET = "live-secret-7b1e-do-not-log"
WEBHOOK_ID = "420900d5-2ffb-4ad9-b2a6-38ef975f9b21"
TOPICS = [*FAMILY_TOPICS.values(), ACCOUNT_UPDATES_TOPIC, DEADLETTER_TOPIC]


@dataclass(frozen=True)
class Written:
    """One record the pipeline wrote, decoded."""

    topic: str
    partition: int
    offset: int
    key: str | None
    headers: dict[str, str]
    value: dict[str, Any]

    @property
    def event_id(self) -> str | None:
        return self.headers.get("event_id")


@dataclass
class Live:
    kafka: KafkaSettings
    gateway: ThreadedServer
    app_id: str
    http: httpx.AsyncClient
    consumer: AIOKafkaConsumer
    codec: Codec
    written: list[Written]

    async def post(self, body: bytes, *, secret: str = SECRET, timestamp: int | None = None) -> int:
        """Deliver `body` signed with `secret`, as Pinwheel does; the HTTP status."""
        ts = int(time.time()) if timestamp is None else timestamp
        headers = {
            "Content-Type": "application/json",
            "Pinwheel-Version": "2023-11-22",
            "X-Timestamp": str(ts),
            "X-Pinwheel-Signature": sign(secret.encode(), ts, body),
            "X-Pinwheel-Webhook-Id": WEBHOOK_ID,
        }
        response = await self.http.post(self.gateway.webhook_url, content=body, headers=headers)
        return response.status_code

    async def collect(self, done: Callable[[list[Written]], bool], timeout_s: float = 60.0) -> list[Written]:
        """Every record written since the start, once `done(records)` holds (or the timeout passed)."""
        deadline = time.monotonic() + timeout_s
        while not done(self.written) and time.monotonic() < deadline:
            batch = await self.consumer.getmany(timeout_ms=300, max_records=5000)
            for tp in sorted(batch, key=lambda t: (t.topic, t.partition)):
                for r in batch[tp]:
                    headers = {name: value.decode(errors="replace") for name, value in r.headers or ()}
                    try:
                        value = self.codec.decode(r.topic, r.value or b"")
                    except DecodeError:  # another test's record in a format this codec cannot read
                        continue
                    key = None if r.key is None else r.key.decode(errors="replace")
                    self.written.append(Written(r.topic, r.partition, r.offset, key, headers, value))
        return self.written


@asynccontextmanager
async def live_pipeline(bootstrap: str, tmp_path: Path) -> AsyncIterator[Live]:
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    app_id = f"test-live-{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka, all_topics(TopicSettings(processor_application_id=app_id)))
    await start_at_end(kafka, app_id, list(FAMILY_TOPICS.values()))
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed")
    await consumer.start()
    await consumer._client.force_metadata_update()
    tps = [TopicPartition(t, p) for t in TOPICS for p in sorted(consumer.partitions_for_topic(t) or ())]
    consumer.assign(tps)
    for tp, offset in (await consumer.end_offsets(tps)).items():
        consumer.seek(tp, offset)

    cert, key = tmp_path / "gw.crt", tmp_path / "gw.key"
    ensure_self_signed(cert, key)
    settings = GatewaySettings(
        host="127.0.0.1", port=free_port(), tls_cert_file=cert, tls_key_file=key, secrets=[SECRET],  # type: ignore[list-item]
        spool_dir=tmp_path / "spool", publish_timeout_s=5.0, shutdown_timeout_s=10.0, admin_port=free_port(),
    )  # fmt: skip
    gateway = ThreadedServer(settings, bootstrap).start()
    processor_settings = ProcessorSettings(
        application_id=app_id, state_dir=tmp_path / "state", health_port=free_port(), punctuate_interval_ms=200
    )
    stop = asyncio.Event()
    processor = asyncio.create_task(serve(processor_settings, kafka, stop=stop))
    http = httpx.AsyncClient(verify=ssl.create_default_context(cafile=cert), timeout=20.0)
    try:
        await wait_ready(processor_settings.health_port, service=processor)  # joined its group, restored its state
        yield Live(kafka, gateway, app_id, http, consumer, Codec(), [])
    finally:
        await http.aclose()
        stop.set()
        await asyncio.wait_for(processor, 60)
        gateway.stop()
        await consumer.stop()
