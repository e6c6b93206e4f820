"""A gateway started while the schema registry is unreachable keeps every verified delivery.

Each is answered 200 once it is durable in the spool (never 503, never a dead letter for the outage);
when the registry answers again, every record reaches its topic exactly once, in order per account, in
the Confluent wire format. The registry is the real Apicurio behind a proxy that cuts it on the wire; the
records are read back with confluent-kafka's DeserializingConsumer + AvroDeserializer, which share no
code with the gateway.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from schemas.catalog import DEADLETTER_TOPIC, FAMILY_TOPICS, Family
from schemas.settings import SchemaSettings
from tests.gateway.gateway_helpers import event_body, signed_headers
from tests.registry_proxy import CuttableProxy
from tests.schema_registry import Registry, downstream_deserializer, watermarks

pytestmark = pytest.mark.kafka

ACCOUNTS = [str(uuid.uuid4()) for _ in range(3)]
# Event type → the topic of its job-shaped test body: typed families and `other`. (The dead-letter path is
# checked in test_records_registry.py: Confluent-format dead letters on the shared topic would stop
# the operator tool tests, which read that topic without a registry.)
EXPECTED_TOPIC = {
    "direct_deposit_switch.added": FAMILY_TOPICS[Family.DIRECT_DEPOSIT],
    "income.added": FAMILY_TOPICS[Family.INCOME_EMPLOYMENT],
    "employment.added": FAMILY_TOPICS[Family.INCOME_EMPLOYMENT],
    "paystubs.added": FAMILY_TOPICS[Family.PAYSTUBS],
    "shifts.added": FAMILY_TOPICS[Family.SHIFTS],
    "tax_forms.added": FAMILY_TOPICS[Family.OTHER],
}
TOPICS = sorted(set(FAMILY_TOPICS.values()) | {DEADLETTER_TOPIC})


def _read_confluent(
    bootstrap: str, registry_url: str, start: dict[tuple[str, int], int], end: dict[tuple[str, int], int]
) -> list[tuple[str, bytes | None, dict[str, Any]]]:
    """(topic, key, decoded value) of every record between the offsets, in partition order."""
    from confluent_kafka import DeserializingConsumer, TopicPartition

    consumer = DeserializingConsumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "value.deserializer": downstream_deserializer(registry_url),
        }
    )
    remaining = {tp: end[tp] - offset for tp, offset in start.items() if end[tp] > offset}
    consumer.assign([TopicPartition(topic, p, start[(topic, p)]) for topic, p in remaining])
    out = []
    deadline = time.monotonic() + 60
    try:
        while sum(remaining.values()) > 0 and time.monotonic() < deadline:
            message = consumer.poll(0.5)  # raises on a record the deserializer cannot decode
            if message is None:
                continue
            tp = (message.topic(), message.partition())
            if message.offset() < end[tp]:
                remaining[tp] -= 1
                out.append((message.topic(), message.key(), message.value()))
    finally:
        consumer.close()
    assert sum(remaining.values()) == 0, f"records not read: {remaining}"
    return out


async def _readyz(https: httpx.AsyncClient, url: str) -> dict[str, Any]:
    return dict((await https.get(f"{url}/readyz")).json())


async def test_deliveries_during_a_registry_outage_are_spooled_then_published_once_in_confluent_format(
    schema_registry: Registry,
    start_gateway: Callable[..., Any],
    https: httpx.AsyncClient,
    bootstrap: str,
    gateway_topics: list[str],
) -> None:
    host, rest = schema_registry.url.split("//", 1)[1].split("/", 1)
    proxy = CuttableProxy(host.rsplit(":", 1)[0], int(host.rsplit(":", 1)[1]))
    proxy_url = f"http://127.0.0.1:{await proxy.start()}/{rest}"
    proxy.down()
    start = await asyncio.to_thread(watermarks, bootstrap, TOPICS, end=True)
    schema = SchemaSettings(registry_url=proxy_url, registry_retries=0, registry_retry_wait_ms=10)
    gateway = start_gateway(app_kwargs={"schema": schema})
    try:
        sent: list[tuple[str, str, str]] = []  # (event_id, event type, account) in sending order
        for seq in range(3):
            for event in EXPECTED_TOPIC:
                for account in ACCOUNTS:
                    event_id = str(uuid.uuid4())
                    body = event_body(event, account, seq=seq, event_id=event_id)
                    response = await https.post(gateway.webhook_url, content=body, headers=signed_headers(body))
                    assert response.status_code == 200, response.text
                    assert response.json()["status"] == "spooled"
                    sent.append((event_id, event, account))
        during = await _readyz(https, gateway.admin_url)
        assert (during["status"], during["schemas"]) == ("ready", "waiting_for_registry")
        assert during["spool_records"] == len(sent)

        proxy.up()
        for _ in range(240):  # polled: readiness is an HTTP endpoint, there is nothing to await
            after = await _readyz(https, gateway.admin_url)
            if after["schemas"] == "resolved" and after["spool_records"] == 0 and not after["spooling"]:
                break
            await asyncio.sleep(0.25)
        else:
            raise AssertionError(f"spool not drained after the registry came back: {after}")
        end = await asyncio.to_thread(watermarks, bootstrap, TOPICS, end=True)
        records = await asyncio.to_thread(_read_confluent, bootstrap, schema_registry.url, start, end)
    finally:
        await proxy.stop()

    ours = {event_id for event_id, _, _ in sent}
    landed = [(topic, key, value) for topic, key, value in records if value.get("event_id") in ours]
    assert sorted(value["event_id"] for _, _, value in landed) == sorted(ours)  # each exactly once
    topic_of = {value["event_id"]: topic for topic, _, value in landed}
    assert {event_id: topic_of[event_id] for event_id, _, _ in sent} == {
        event_id: EXPECTED_TOPIC[event] for event_id, event, _ in sent
    }
    assert not [value for topic, _, value in landed if topic == DEADLETTER_TOPIC]  # the outage is no event's fault
    for topic in set(EXPECTED_TOPIC.values()):
        for account in ACCOUNTS:  # one account is one key, one partition: sending order kept
            in_topic = [value["event_id"] for t, key, value in landed if t == topic and key == account.encode()]
            expected = [e for e, event, a in sent if a == account and EXPECTED_TOPIC[event] == topic]
            assert in_topic == expected
