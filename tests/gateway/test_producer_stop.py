"""What the gateway's stop does to its Kafka producer (`KafkaLink.close`), on a broker of this module's own.

With the broker up, what the producer holds is flushed: every pending send is acknowledged and in the topic.
With the broker gone, the stop ends within its timeout and leaves nothing of the producer running: no sender
retrying in the background that would deliver, once the broker is back, a record the gateway gave up on, and no
failed future that is logged as "Future exception was never retrieved" when it is collected.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import uuid
from pathlib import Path

import pytest

from common.settings import KafkaSettings
from common.topics import TopicSpec, ensure_topics
from connector.local_kafka import LocalKafka
from gateway.kafka_record import KafkaRecord
from gateway.metrics import GatewayMetrics
from gateway.producer import KafkaLink, send
from tests.gateway.gateway_helpers import gateway_settings
from tests.topic_reader import read_to_end

pytestmark = pytest.mark.kafka


async def new_link(broker: LocalKafka, tls_pair: tuple[Path, Path], tmp_path: Path, **settings: int) -> KafkaLink:
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap, request_timeout_ms=5000)
    link = KafkaLink.default(gateway_settings(tls_pair, tmp_path / "spool", **settings), kafka, GatewayMetrics())
    assert await link.connect(30.0)
    return link


async def new_topic(broker: LocalKafka) -> str:
    topic = f"gateway-stop-{uuid.uuid4().hex[:8]}"
    await ensure_topics(KafkaSettings(bootstrap_servers=broker.bootstrap), [TopicSpec(topic, partitions=1)])
    return topic


def record(topic: str, value: bytes) -> KafkaRecord:
    return KafkaRecord(topic=topic, key=b"k", value=value, headers=(), timestamp_ms=int(time.time() * 1000))


async def test_stop_flushes_the_pending_sends_when_the_broker_is_up(
    private_broker: LocalKafka, tls_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    topic = await new_topic(private_broker)
    link = await new_link(private_broker, tls_pair, tmp_path, linger_ms=1000)  # pending when the stop begins
    assert link.producer is not None
    acks = [await send(link.producer, record(topic, f"v{i}".encode())) for i in range(3)]
    assert not any(asyncio.ensure_future(ack).done() for ack in acks)
    await link.close(10.0)
    assert [(await ack).offset for ack in acks] == [0, 1, 2]
    assert [r.value for r in await read_to_end(private_broker.bootstrap, topic)] == [b"v0", b"v1", b"v2"]


async def test_stop_is_bounded_and_leaves_nothing_running_when_the_broker_is_gone(
    private_broker: LocalKafka, tls_pair: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncio")
    before = asyncio.all_tasks()
    topic = await new_topic(private_broker)
    link = await new_link(private_broker, tls_pair, tmp_path)
    assert link.producer is not None
    await (await send(link.producer, record(topic, b"acknowledged")))
    await asyncio.to_thread(private_broker.kill)
    given_up = asyncio.ensure_future(await send(link.producer, record(topic, b"given up")))

    started = time.monotonic()
    await link.close(2.0)
    stopped_in = time.monotonic() - started
    assert stopped_in < 2.0 + 5.0, stopped_in  # its timeout, and a bounded abandonment
    leftover = [t for t in asyncio.all_tasks() - before if not t.done()]
    assert not leftover, [t.get_coro() for t in leftover]
    assert given_up.done()
    assert given_up.exception() is not None  # the pending send failed, it was not left hanging
    seen = len(caplog.records)

    await asyncio.to_thread(private_broker.start)
    assert [r.value for r in await read_to_end(private_broker.bootstrap, topic)] == [b"acknowledged"]
    gc.collect()  # an unretrieved exception is reported when its future is collected
    await asyncio.sleep(0)
    # What an abandoned producer leaves behind would show here: a future's exception never retrieved (asyncio) or
    # a sender still at work (aiokafka.producer). Not the reader's own fetcher retrying on the restarted broker.
    errors = [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.records[seen:]
        if r.levelno >= logging.ERROR and (r.name == "asyncio" or r.name.startswith("aiokafka.producer"))
    ]
    assert not errors, errors
    print(f"\n[gateway stop] {stopped_in:.1f} s with the broker gone (timeout 2 s)")
