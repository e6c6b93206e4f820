"""Delivery → account update end to end on a secured cluster, over SASL_SSL (SCRAM) and over mutual TLS.

The secured local broker (tests/secure_kafka.py) enforces ACLs with nothing allowed by default. The topics job,
the gateway and the processors each connect as their own principal, holding only the ACLs `operate.acls` prints
for it; the updates are then read by a downstream principal with Read on the updates topic alone, through an
independent client (librdkafka + plain fastavro: tests/downstream_reader.py), over SASL_SSL.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from common.offsets import start_at_end
from common.ports import free_port
from common.settings import KafkaSettings
from common.topics import TopicSettings, ensure_topics
from gateway.settings import GatewaySettings
from operate.acls import acls, acls_json
from processors.service import serve
from processors.settings import ProcessorSettings
from processors.topics import all_topics
from schemas.catalog import ACCOUNT_UPDATES_TOPIC, FAMILY_TOPICS
from simulator.ledger import read_ledger
from simulator.settings import SimulatorSettings
from simulator.simulate import plan_traffic, simulate
from simulator.verify import expectations
from tests.downstream_reader import read_updates
from tests.secure_kafka import SecureBroker
from tests.threaded_gateway import ThreadedServer

SECRET = "secure-e2e-secret-do-not-log"


def settings_of(env: dict[str, str]) -> KafkaSettings:
    return KafkaSettings(**{key.removeprefix("KAFKA_").lower(): value for key, value in env.items()})  # type: ignore[arg-type]


@pytest.mark.parametrize("listener", ["sasl_ssl", "mtls"])
async def test_delivery_to_account_update_on_a_secured_cluster(
    listener: str, secure_kafka: SecureBroker, tls_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    token = uuid.uuid4().hex[:8]
    app_id = f"secure-e2e-{token}"
    users = {component: f"svc-{component}-{token}" for component in ("topics", "gateway", "processors")}
    downstream = f"svc-downstream-{token}"
    for user in (*users.values(), downstream):
        secure_kafka.add_scram_user(user)  # (over mTLS the certificate's CN names the same principal)
    principals = {component: f"User:{user}" for component, user in users.items()}
    secure_kafka.grant(json.loads(acls_json(acls(tuple(users), principals, app_id))))
    secure_kafka.grant([
        {"restype": restype, "name": name, "resource_pattern_type": "LITERAL", "principal": f"User:{downstream}",
         "host": "*", "operation": "READ", "permission_type": "ALLOW"}
        for restype, name in (("TOPIC", ACCOUNT_UPDATES_TOPIC), ("GROUP", downstream))
    ])  # fmt: skip
    kafka = {component: settings_of(secure_kafka.env(listener, user)) for component, user in users.items()}

    await ensure_topics(kafka["topics"], all_topics(TopicSettings(processor_application_id=app_id)))
    await start_at_end(kafka["processors"], app_id, list(FAMILY_TOPICS.values()))
    cert, key = tls_pair
    gateway = ThreadedServer(
        GatewaySettings(
            host="127.0.0.1", port=free_port(), admin_port=0, tls_cert_file=cert, tls_key_file=key,
            secrets=[SECRET], spool_dir=tmp_path / "spool", publish_timeout_s=10.0, shutdown_timeout_s=10.0,
        ),  # type: ignore[call-arg, list-item]
        kafka["gateway"],
    ).start()  # fmt: skip
    stop = asyncio.Event()
    processor = asyncio.create_task(
        serve(
            ProcessorSettings(application_id=app_id, state_dir=tmp_path / "state", health_port=0),
            kafka["processors"],
            stop=stop,
        )
    )
    try:
        sim = SimulatorSettings(
            url=f"{gateway.url}/webhooks/pinwheel", ca_file=cert, accounts=6, seed=7, spread_s=2.0,
            pending_rate=0.3, unresolved_rate=0.0, duplicate_rate=0.2, ledger=tmp_path / "ledger.jsonl",
            progress=False,
        )  # fmt: skip
        started_at = datetime.now(UTC)
        run = await simulate(sim, secret=SECRET, events=plan_traffic(sim, started_at), started_at=started_at)
        assert run.result.accepted_deliveries == run.result.deliveries
        ledger = read_ledger(sim.ledger)
        expected = expectations(ledger)
        assert expected.updates
        reader = secure_kafka.confluent_config("sasl_ssl", downstream) | {"group.id": downstream}
        since_ms = int(started_at.timestamp() * 1000)
        seen = await asyncio.to_thread(read_updates, reader, set(ledger.events), expected.updates, 120, since_ms)
    finally:
        stop.set()
        await asyncio.wait_for(processor, 60)
        gateway.stop()
    assert set(seen) == set(expected.updates)
    assert all(count == 1 for count in seen.values()), seen
