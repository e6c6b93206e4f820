"""`pinwheel-connector spool status` while the real gateway runs with Kafka unreachable (so it spools):
the figures match the gateway's own /readyz, and the gateway keeps accepting meanwhile (no lock taken)."""

from __future__ import annotations

import json
import os
import ssl
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from common.ports import free_port
from tests.gateway.gateway_helpers import event_body, signed_headers
from tests.operate.ops_helpers import App


async def test_spool_status_while_the_gateway_spools(
    app: App, start_gateway: Any, tls_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    started = time.time()
    gateway = start_gateway(bootstrap=f"127.0.0.1:{free_port()}", spool_dir=spool_dir)  # no broker there
    async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=tls_pair[0]), timeout=30) as http:

        async def deliver(n: int) -> None:
            for _ in range(n):
                body = event_body("employment.added", str(uuid.uuid4()))
                response = await http.post(gateway.webhook_url, content=body, headers=signed_headers(body))
                assert response.status_code == 200
                assert response.json()["status"] == "spooled"

        await deliver(7)
        status = json.loads(await app.cli("spool", "status", "--json", "--dir", str(spool_dir)))
        ready = (await http.get(gateway.admin_url + "/readyz")).json()
        assert status["records"] == ready["spool_records"] == 7
        assert status["bytes"] == ready["spool_bytes"]
        [worker] = status["workers"]
        assert worker["holder_pid"] == os.getpid()  # the gateway (in this process) holds it, we did not
        assert 0 <= status["oldest_age_s"] <= time.time() - started + 1
        assert started * 1000 - 1 <= worker["oldest_received_ms"] <= time.time() * 1000

        metrics = {
            sample.name: sample.value
            for family in text_string_to_metric_families((await http.get(gateway.admin_url + "/metrics")).text)
            for sample in family.samples
        }
        assert metrics["gateway_spool_records"] == 7
        age = metrics["gateway_spool_oldest_age_seconds"]
        assert status["oldest_age_s"] <= age <= time.time() - started + 1
        assert metrics["gateway_ready"] == 1
        assert metrics["gateway_kafka_up"] == 0

        await deliver(2)  # still accepting: the status command took no lock
        table = await app.cli("spool", "status", "--dir", str(spool_dir))
        row = next(line.split() for line in table.splitlines() if line.startswith("worker-0"))
        assert row[1] == "9"
        assert row[4:] == ["pid", str(os.getpid())]
    gateway.stop()
    after = json.loads(await app.cli("spool", "status", "--json", "--dir", str(spool_dir)))
    assert after["records"] == 9  # stopped with Kafka down: the events stay spooled
    assert after["workers"][0]["holder_pid"] is None
