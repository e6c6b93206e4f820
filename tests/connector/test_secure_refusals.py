"""The user's own secured Kafka, as an operator meets it: the right credentials work over SASL_SSL, mutual TLS
and OAUTHBEARER; a wrong password, an untrusted CA, a certificate for another host and an expired client
certificate each end a command at once with one line naming the cause, exit 2, no traceback, no secret.

Run as an operator runs them (a subprocess of `pinwheel-connector`) against the secured local broker
(tests/secure_kafka.py: StandardAuthorizer, no ACL means denied).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from confluent_kafka.admin import AclOperation

from common.kafka_auth import OAuthClientCredentials
from common.ports import free_port
from common.settings import KafkaSettings
from tests.secure_kafka import SecureBroker

ROOT = Path(__file__).resolve().parents[2]


def run_cli(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KAFKA_", "PROCESSOR_", "SCHEMA_", "TOPICS_", "GATEWAY_"))
    }
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "connector.cli", *argv],
        cwd=cwd, env={**clean, "PYTHONPATH": str(ROOT), **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return result, time.monotonic() - started


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "Unclosed" not in result.stderr, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


def settings_of(env: dict[str, str]) -> KafkaSettings:
    return KafkaSettings(**{key.removeprefix("KAFKA_").lower(): value for key, value in env.items()})  # type: ignore[arg-type]


def test_the_topics_job_creates_and_checks_every_topic_over_sasl_ssl(
    secure_kafka: SecureBroker, tmp_path: Path
) -> None:
    env = secure_kafka.env("sasl_ssl") | {"PROCESSOR_APPLICATION_ID": "secure-topics-job"}
    created, _ = run_cli(["topics", "create", "--timeout", "60"], env, tmp_path)
    assert created.returncode == 0, created.stderr[-3000:]
    checked, _ = run_cli(["topics", "check", "--timeout", "60"], env, tmp_path)
    assert checked.returncode == 0, checked.stderr[-3000:]
    assert "pinwheel.account_updates.v1" in checked.stdout
    password = secure_kafka.password_file(secure_kafka.admin_user).read_text().strip()
    assert password not in created.stdout + created.stderr + checked.stdout + checked.stderr


REFUSALS = ["wrong password", "untrusted CA", "hostname mismatch", "expired client certificate"]


def refused_env(case: str, broker: SecureBroker, tmp_path: Path) -> dict[str, str]:
    if case == "wrong password":
        wrong = tmp_path / "wrong-password"
        wrong.write_text("not-the-password-s3cret")
        return broker.env("sasl_ssl") | {"KAFKA_SASL_PASSWORD_FILE": str(wrong)}
    if case == "untrusted CA":
        return broker.env("sasl_ssl") | {"KAFKA_SSL_CA_FILE": str(broker.other_ca_file)}
    if case == "hostname mismatch":
        assert broker.mismatch_bootstrap is not None
        return broker.env("sasl_ssl") | {"KAFKA_BOOTSTRAP_SERVERS": broker.mismatch_bootstrap}
    cert, key = broker.client_cert(broker.admin_user, expired=True)
    return broker.env("mtls") | {"KAFKA_SSL_CERT_FILE": str(cert), "KAFKA_SSL_KEY_FILE": str(key)}


EXPECTED = {
    "wrong password": "authentication failed (SASL)",
    "untrusted CA": "TLS certificate verification failed",
    "hostname mismatch": "TLS certificate verification failed",
    "expired client certificate": "TLS handshake refused",
}


@pytest.mark.parametrize("case", REFUSALS)
def test_a_refusal_ends_a_command_at_once_with_one_line(case: str, secure_kafka: SecureBroker, tmp_path: Path) -> None:
    result, elapsed = run_cli(
        ["topics", "check", "--timeout", "60"], refused_env(case, secure_kafka, tmp_path), tmp_path
    )
    assert result.returncode == 2, result.stderr[-3000:]
    line = one_line(result)
    assert line.startswith("topics: kafka: "), line
    assert EXPECTED[case] in line, line
    assert "s3cret" not in result.stderr
    assert elapsed < 30  # at once: not the 60 s a cluster that does not answer is given


@pytest.mark.parametrize("case", REFUSALS)
def test_a_refusal_ends_the_processor_with_one_json_line(case: str, secure_kafka: SecureBroker, tmp_path: Path) -> None:
    env = refused_env(case, secure_kafka, tmp_path) | {
        "PROCESSOR_STATE_DIR": str(tmp_path / "state"), "PROCESSOR_HEALTH_PORT": "0",
    }  # fmt: skip
    result, elapsed = run_cli(["processor"], env, tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "Unclosed" not in result.stderr
    assert EXPECTED[case] in result.stderr, result.stderr[-3000:]
    assert "s3cret" not in result.stderr
    assert elapsed < 60


@pytest.mark.parametrize("case", REFUSALS)
def test_a_refusal_stops_the_gateway_before_it_serves(
    case: str, secure_kafka: SecureBroker, tls_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    """Spooling would only hide a refusal (every delivery 200, none ever in Kafka): the gateway exits 2."""
    cert, key = tls_pair
    env = refused_env(case, secure_kafka, tmp_path) | {
        "GATEWAY_SECRETS": "gateway-test-secret", "GATEWAY_TLS_CERT_FILE": str(cert), "GATEWAY_TLS_KEY_FILE": str(key),
        "GATEWAY_SPOOL_DIR": str(tmp_path / "spool"), "GATEWAY_PORT": str(free_port()), "GATEWAY_ADMIN_PORT": "0",
    }  # fmt: skip
    result, elapsed = run_cli(["gateway"], env, tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    line = one_line(result)
    assert line.startswith("gateway: kafka: "), line
    assert EXPECTED[case] in line, line
    assert elapsed < 30


async def round_trip(kafka: KafkaSettings, topic: str) -> list[bytes]:
    """Produce three records and read them back with our settings' clients (the connection under test)."""
    producer = AIOKafkaProducer(**kafka.client_kwargs(), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for i in range(3):
            await producer.send_and_wait(topic, f"record-{i}".encode())
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, **kafka.client_kwargs(), auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    values: list[bytes] = []
    try:
        while len(values) < 3:
            batch = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 30)
            values.extend(record.value for records in batch.values() for record in records if record.value)
    finally:
        await consumer.stop()
    return values


async def make_topic(broker: SecureBroker, name: str, principal: str) -> str:
    """`name`, which `principal` may write, read and describe."""
    admin = AIOKafkaAdminClient(**settings_of(broker.env("sasl_ssl")).client_kwargs())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1)])
    finally:
        await admin.close()
    broker.allow_topic(principal, name, AclOperation.WRITE, AclOperation.READ, AclOperation.DESCRIBE)
    return name


@pytest.mark.parametrize("listener", ["sasl_ssl", "mtls", "oauth"])
async def test_our_clients_speak_each_listener(listener: str, secure_kafka: SecureBroker) -> None:
    """SCRAM over TLS, a client certificate, an OIDC token: the same KafkaSettings path every service takes."""
    user = f"svc-{listener.replace('_', '-')}-{time.monotonic_ns()}"
    if listener == "sasl_ssl":
        secure_kafka.add_scram_user(user)
    elif listener == "oauth":
        secure_kafka.add_oauth_client(user)
    topic = await make_topic(secure_kafka, f"test-secure-{listener}-{time.monotonic_ns()}", f"User:{user}")
    kafka = settings_of(secure_kafka.env(listener, user))
    assert await round_trip(kafka, topic) == [b"record-0", b"record-1", b"record-2"]


async def test_the_oauth_token_is_shared_and_fetched_again_before_it_expires(secure_kafka: SecureBroker) -> None:
    """One token for every connection of the process; after 80 % of its lifetime (an injected clock) a new one,
    which the broker's OIDC validator accepts."""
    assert secure_kafka.oidc is not None
    client = f"oauth-refresh-{time.monotonic_ns()}"
    secure_kafka.add_oauth_client(client)
    topic = await make_topic(secure_kafka, f"test-secure-refresh-{time.monotonic_ns()}", f"User:{client}")
    kafka = settings_of(secure_kafka.env("oauth", client))
    now = [0.0]
    provider = OAuthClientCredentials(kafka.oauth_config(), clock=lambda: now[0])
    kwargs = kafka.client_kwargs() | {"sasl_oauth_token_provider": provider}
    for _ in range(2):  # two clients, several connections each
        producer = AIOKafkaProducer(**kwargs)
        await producer.start()
        await producer.send_and_wait(topic, b"x")
        await producer.stop()
    assert provider.fetches == 1
    assert len(secure_kafka.oidc.tokens_of(client)) == 1
    now[0] += 0.81 * secure_kafka.oidc.lifetime_s
    producer = AIOKafkaProducer(**kwargs)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"y")
    finally:
        await producer.stop()
    assert provider.fetches == 2
    assert len(secure_kafka.oidc.tokens_of(client)) == 2
