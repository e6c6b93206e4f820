"""The gateway and the schema registry: started while the registry is unreachable, it spools deliveries
(200 once durable, never a dead letter; test_registry_spool.py reads them back) and recovers by
itself; once its schemas are resolved, a registry outage does not change its answers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx

from schemas.settings import SchemaSettings
from tests.gateway.gateway_helpers import event_body, header, signed_headers
from tests.registry_proxy import CuttableProxy
from tests.schema_registry import Registry


async def _until_ready(https: httpx.AsyncClient, url: str) -> None:
    for _ in range(240):  # polled: readiness is an HTTP endpoint, there is nothing to await
        if (await https.get(f"{url}/readyz")).json()["schemas"] == "resolved":
            return
        await asyncio.sleep(0.25)
    raise AssertionError("schemas not resolved")


async def test_started_during_a_registry_outage_spools_then_recovers(
    schema_registry: Registry, start_gateway: Callable[..., Any], https: httpx.AsyncClient, tail: Any
) -> None:
    host, rest = schema_registry.url.split("//", 1)[1].split("/", 1)
    proxy = CuttableProxy(host.rsplit(":", 1)[0], int(host.rsplit(":", 1)[1]))
    proxy_url = f"http://127.0.0.1:{await proxy.start()}/{rest}"
    proxy.down()
    schema = SchemaSettings(registry_url=proxy_url, registry_retries=0, registry_retry_wait_ms=10)
    gateway = start_gateway(app_kwargs={"schema": schema})
    try:
        body = event_body("income.added", "5c1f6e1e-6f55-4c0c-9d3e-0d2f0d2b6a11")
        kept = await https.post(gateway.webhook_url, content=body, headers=signed_headers(body))
        assert (kept.status_code, kept.json()["status"]) == (200, "spooled")
        ready = await https.get(f"{gateway.admin_url}/readyz")
        assert (ready.status_code, ready.json()["schemas"]) == (200, "waiting_for_registry")

        proxy.up()
        await _until_ready(https, gateway.admin_url)
        accepted = await https.post(gateway.webhook_url, content=body, headers=signed_headers(body))
        assert accepted.status_code == 200, accepted.text

        # Schemas resolved: the registry going away again changes nothing for the gateway.
        proxy.down()
        again = event_body("income.added", "5c1f6e1e-6f55-4c0c-9d3e-0d2f0d2b6a11")
        during = await https.post(gateway.webhook_url, content=again, headers=signed_headers(again))
        assert during.status_code == 200, during.text
        ids = {json.loads(b)["event_id"].encode() for b in (body, again)}
        records = await tail.collect(lambda rs: {header(r, "event_id") for r in rs} >= ids, timeout_s=30)
        records = [r for r in records if header(r, "event_id") in ids]
        assert {header(r, "event_id") for r in records} == ids
        assert {header(r, "content_format") for r in records} == {b"confluent-avro"}
        assert all(r.value[0] == 0 for r in records)
        assert not [r for r in records if r.topic.startswith("pinwheel.deadletter")]
    finally:
        await proxy.stop()
