"""The secured local broker is what a managed cluster is: TLS only, SCRAM/PLAIN/mTLS/OAuth principals, ACLs enforced.

Both an independent client (confluent-kafka, librdkafka) and ours (aiokafka) prove each way in, so a failure of
our services against it is ours, not the broker's.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from connector.cli import secure_start_lines
from tests.secure_kafka import SecureBroker


def _topic(broker: SecureBroker, base: str) -> str:
    name = f"test-{base}-{uuid.uuid4().hex[:8]}"
    for future in broker.admin_client().create_topics([NewTopic(name, 1, 1)]).values():
        future.result(timeout=30)
    return name


def _confluent_round_trip(config: dict[str, str], topic: str, expect: int = 3) -> list[bytes]:
    """Produce 3 records and read the topic's `expect` records with `config`; raises KafkaException on any error."""
    producer = Producer(config | {"acks": "all", "message.timeout.ms": "10000"})
    delivered: list[Any] = []
    for i in range(3):
        producer.produce(topic, f"v{i}".encode(), on_delivery=lambda err, msg: delivered.append(err or msg))
    producer.flush(30)
    if failed := [d for d in delivered if isinstance(d, KafkaError)]:
        raise KafkaException(failed[0])
    consumer = Consumer(config | {"group.id": f"g-{uuid.uuid4().hex[:6]}", "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    values: list[bytes] = []
    try:
        for _ in range(60):
            message = consumer.poll(0.5)
            if message is None:
                if len(values) >= expect:
                    break
                continue
            if message.error():
                raise KafkaException(message.error())
            values.append(message.value())
    finally:
        consumer.close()
    return values


def test_no_plaintext_listener_and_acls_enforced(secure_kafka: SecureBroker) -> None:
    properties = (secure_kafka.local.data_dir / "server.properties").read_text()
    listeners = re.search(r"^listeners=(.*)$", properties, re.M)
    protocols = re.search(r"^listener.security.protocol.map=(.*)$", properties, re.M)
    assert listeners
    assert protocols
    assert "PLAINTEXT" not in protocols.group(1)
    assert {name.split("://")[0] for name in listeners.group(1).split(",")} == {
        "SASL_SSL", "MTLS", "OAUTH", "MISMATCH", "CONTROLLER",
    }  # fmt: skip
    assert "allow.everyone.if.no.acl.found=false" in properties
    assert (secure_kafka.local.data_dir / "server.properties").stat().st_mode & 0o777 == 0o600
    assert secure_kafka.admin_password_file.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
def test_admin_round_trip_over_sasl_ssl_with_confluent_kafka(secure_kafka: SecureBroker, mechanism: Any) -> None:
    topic = _topic(secure_kafka, "sasl")
    config = secure_kafka.confluent_config("sasl_ssl", mechanism=mechanism)
    assert sorted(_confluent_round_trip(config, topic)) == [b"v0", b"v1", b"v2"]


async def test_admin_round_trip_over_sasl_ssl_with_aiokafka(secure_kafka: SecureBroker) -> None:
    topic = _topic(secure_kafka, "sasl-aio")
    producer = AIOKafkaProducer(**secure_kafka.aiokafka_kwargs("sasl_ssl"), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, **secure_kafka.aiokafka_kwargs("sasl_ssl"), auto_offset_reset="earliest")
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=10_000, max_records=1)
    finally:
        await consumer.stop()
    assert [r.value for records in batch.values() for r in records] == [b"hello"]


async def test_a_user_without_acls_is_refused_the_topic(secure_kafka: SecureBroker) -> None:
    topic = _topic(secure_kafka, "denied")
    secure_kafka.add_scram_user("nobody")
    producer = AIOKafkaProducer(**secure_kafka.aiokafka_kwargs("sasl_ssl", "nobody"), request_timeout_ms=10_000)
    await producer.start()  # authenticated: only the topic is refused
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await producer.send_and_wait(topic, b"x")
    finally:
        await producer.stop()


def test_a_client_certificate_is_the_principal_of_its_cn(secure_kafka: SecureBroker) -> None:
    """CN=gateway over mTLS is User:gateway: refused before the ACL, allowed after, as the SCRAM user gateway."""
    topic = _topic(secure_kafka, "mtls")
    config = secure_kafka.confluent_config("mtls", "gateway")
    with pytest.raises(KafkaException) as refused:
        _confluent_round_trip(config, topic)
    assert refused.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    secure_kafka.allow_topic("User:gateway", topic, AclOperation.WRITE, AclOperation.READ, AclOperation.DESCRIBE)
    _allow_groups(secure_kafka, "User:gateway")
    assert sorted(_confluent_round_trip(config, topic)) == [b"v0", b"v1", b"v2"]
    secure_kafka.add_scram_user("gateway")  # the same principal over SCRAM: the same ACLs
    scram = secure_kafka.confluent_config("sasl_ssl", "gateway")
    assert len(_confluent_round_trip(scram, topic, expect=6)) == 6  # its consumer group is new: all six records


def _allow_groups(broker: SecureBroker, principal: str) -> None:
    binding = AclBinding(
        ResourceType.GROUP, "g-", ResourcePatternType.PREFIXED, principal, "*", AclOperation.READ,
        AclPermissionType.ALLOW,
    )  # fmt: skip
    for future in broker.admin_client().create_acls([binding]).values():
        future.result(timeout=30)
    found = broker.admin_client().describe_acls(
        AclBindingFilter(ResourceType.GROUP, "g-", ResourcePatternType.PREFIXED, principal, None, AclOperation.ANY,
                         AclPermissionType.ANY)
    ).result(timeout=30)  # fmt: skip
    assert [b.principal for b in found] == [principal]


async def test_aiokafka_over_mtls_as_the_super_user_certificate(secure_kafka: SecureBroker) -> None:
    topic = _topic(secure_kafka, "mtls-aio")
    producer = AIOKafkaProducer(**secure_kafka.aiokafka_kwargs("mtls", "admin"), acks="all")
    await producer.start()
    try:
        metadata = await producer.send_and_wait(topic, b"by-certificate")
    finally:
        await producer.stop()
    assert metadata.offset == 0


def test_oauthbearer_with_a_token_from_the_local_endpoint(secure_kafka: SecureBroker) -> None:
    """librdkafka's OIDC client-credentials flow: a JWT from the token endpoint, principal User:<client id>."""
    assert secure_kafka.oidc is not None
    assert secure_kafka.oauth_client_id is not None
    topic = _topic(secure_kafka, "oauth")
    secure_kafka.allow_topic(f"User:{secure_kafka.oauth_client_id}", topic, AclOperation.WRITE, AclOperation.READ)
    _allow_groups(secure_kafka, f"User:{secure_kafka.oauth_client_id}")
    before = len(secure_kafka.oidc.tokens_of(secure_kafka.oauth_client_id))
    assert sorted(_confluent_round_trip(secure_kafka.confluent_config("oauth"), topic)) == [b"v0", b"v1", b"v2"]
    assert len(secure_kafka.oidc.tokens_of(secure_kafka.oauth_client_id)) > before


async def test_oauthbearer_with_aiokafka(secure_kafka: SecureBroker) -> None:
    assert secure_kafka.oidc is not None
    secure_kafka.add_oauth_client("svc-aio")
    topic = _topic(secure_kafka, "oauth-aio")
    secure_kafka.allow_topic("User:svc-aio", topic, AclOperation.WRITE)
    producer = AIOKafkaProducer(**secure_kafka.aiokafka_kwargs("oauth", "svc-aio"), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"by-token")
    finally:
        await producer.stop()
    assert secure_kafka.oidc.tokens_of("svc-aio")


async def test_a_wrong_secret_gets_no_token(secure_kafka: SecureBroker, tmp_path: Path) -> None:
    wrong = tmp_path / "secret"
    wrong.write_text("not-the-secret")
    kwargs = secure_kafka.aiokafka_kwargs("oauth")
    kwargs["sasl_oauth_token_provider"].secret_file = wrong
    producer = AIOKafkaProducer(**kwargs)
    with pytest.raises(Exception, match="401"):
        await producer.start()
    await producer.stop()


async def _refused(kwargs: dict[str, Any]) -> None:
    producer = AIOKafkaProducer(**kwargs, request_timeout_ms=5000)
    try:
        with pytest.raises(KafkaConnectionError):
            await asyncio.wait_for(producer.start(), 30)
    finally:
        await producer.stop()


async def test_tls_refusals(secure_kafka: SecureBroker) -> None:
    """An untrusting client, an expired or untrusted client certificate, a broker named for another host."""
    untrusting = secure_kafka.aiokafka_kwargs("sasl_ssl") | {
        "ssl_context": ssl.create_default_context(cafile=str(secure_kafka.other_ca_file))
    }
    await _refused(untrusting)
    for cert, key in (secure_kafka.client_cert("gateway", expired=True), secure_kafka.untrusted_client_cert("admin")):
        context = ssl.create_default_context(cafile=str(secure_kafka.ca_file))
        context.load_cert_chain(str(cert), str(key))
        await _refused(secure_kafka.aiokafka_kwargs("mtls") | {"ssl_context": context})
    assert secure_kafka.mismatch_bootstrap is not None
    await _refused(secure_kafka.aiokafka_kwargs("sasl_ssl") | {"bootstrap_servers": secure_kafka.mismatch_bootstrap})
    # The same listener without hostname verification answers: the refusal above was the host name's.
    lax = ssl.create_default_context(cafile=str(secure_kafka.ca_file))
    lax.check_hostname = False
    kwargs = secure_kafka.aiokafka_kwargs("sasl_ssl") | {"bootstrap_servers": secure_kafka.mismatch_bootstrap}
    producer = AIOKafkaProducer(**kwargs | {"ssl_context": lax})
    try:
        await asyncio.wait_for(producer.start(), 30)
    finally:
        await producer.stop()


def test_wrong_password_is_refused(secure_kafka: SecureBroker) -> None:
    config = secure_kafka.confluent_config("sasl_ssl") | {"sasl.password": "wrong"}
    errors: list[KafkaError] = []
    producer = Producer(config | {"error_cb": errors.append})
    for _ in range(40):
        producer.poll(0.25)
        if any(e.code() == KafkaError._AUTHENTICATION for e in errors):
            break
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors


def test_kafka_start_secure_prints_files_and_exports_never_the_password(secure_kafka: SecureBroker) -> None:
    lines = secure_start_lines(secure_kafka.local)
    exports = dict(line.removeprefix("export ").split("=", 1) for line in lines if line.startswith("export "))
    assert exports == secure_kafka.env("sasl_ssl")  # the same contract as the services' settings
    assert secure_kafka.admin_password_file.read_text().strip() not in "\n".join(lines)
    commented = [line.split("export ", 1)[1] for line in lines if line.startswith("#   export ")]
    assert dict(line.split("=", 1) for line in commented) == secure_kafka.env("mtls", "admin")
