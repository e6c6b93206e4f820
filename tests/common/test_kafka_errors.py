"""common/kafka_errors.py and common/kafka_wait.py: wait for an unreachable cluster, stop at once when it refuses us.

The classifier is fed the exceptions aiokafka raises (constructed as aiokafka builds them, or produced for real:
a closed port, a TLS server whose certificate does not verify, SASL spoken to a plaintext broker).
"""

from __future__ import annotations

import asyncio
import io
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import pytest
from aiokafka import errors
from aiokafka.conn import create_conn

from common.backoff import Backoff
from common.kafka_errors import KafkaMisconfigured, KafkaUnreachable, Kind, classify_kafka_error
from common.kafka_wait import bootstrap_hosts, probe, wait_for_kafka
from common.ports import free_port
from common.settings import KafkaSettings
from gateway.tls import ensure_self_signed

pytestmark = pytest.mark.own_topics  # every topic, group and transactional id it uses is its own (tests/conftest.py)


@pytest.mark.parametrize(
    "exc",
    [
        errors.KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1, <AddressFamily.AF_INET: 2>)]"),
        errors.NoBrokersAvailable(),
        errors.NodeNotReadyError("node 1"),
        errors.RequestTimedOutError(),
        errors.KafkaTimeoutError(),
        errors.GroupCoordinatorNotAvailableError(),
        errors.NotControllerError(),
        ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 1)"),
        TimeoutError(),
        OSError(113, "No route to host"),
        socket.gaierror(-2, "Name or service not known"),
        ssl.SSLEOFError(8, "EOF occurred in violation of protocol"),  # a handshake cut halfway: transient
    ],
)
def test_connection_failures_are_waited_for(exc: BaseException) -> None:
    verdict = classify_kafka_error(exc)
    assert verdict.kind is Kind.UNREACHABLE
    assert verdict.retry
    assert verdict.reason.startswith("kafka unreachable: ")


@pytest.mark.parametrize(
    ("exc", "names"),
    [
        (errors.SaslAuthenticationFailed("Authentication failed: Invalid username or password"), "KAFKA_SASL_PASSWORD"),
        (errors.AuthenticationFailedError(), "KAFKA_SASL_USERNAME"),
        (errors.UnsupportedSaslMechanismError("SCRAM-SHA-512 not enabled"), "KAFKA_SASL_MECHANISM"),
        (errors.TopicAuthorizationFailedError("pinwheel.account.v1"), "pinwheel.account.v1"),
        (errors.GroupAuthorizationFailedError("pinwheel-accounts"), "pinwheel-accounts"),
        (errors.TransactionalIdAuthorizationFailed(), "transactional id"),
        (errors.ClusterAuthorizationFailedError(), "cluster operation"),
    ],
)
def test_refusals_are_not_waited_for_and_name_what_to_check(exc: BaseException, names: str) -> None:
    verdict = classify_kafka_error(exc)
    assert verdict.kind is Kind.MISCONFIGURED
    assert not verdict.retry
    assert names in verdict.reason
    assert "\n" not in verdict.reason


def test_a_refusal_inside_a_connection_error_is_found() -> None:
    # aiokafka fails the requests pending on a connection closed for an auth failure with a
    # KafkaConnectionError whose cause is the refusal.
    refusal = errors.SaslAuthenticationFailed("Authentication failed during authentication due to invalid credentials")
    outer = errors.KafkaConnectionError("Connection at broker:9093 closed")
    outer.__cause__ = refusal
    assert classify_kafka_error(outer).kind is Kind.MISCONFIGURED


def test_anything_else_is_not_about_kafka() -> None:
    assert classify_kafka_error(KeyError("x")).kind is Kind.OTHER
    assert classify_kafka_error(IsADirectoryError(21, "Is a directory")).kind is Kind.OTHER  # an OSError, not Kafka
    assert classify_kafka_error(errors.InvalidTopicError()).kind is Kind.OTHER


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[int]:
    """A TLS listener with a self-signed certificate nobody trusts: the port."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    ensure_self_signed(cert, key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = await asyncio.start_server(lambda reader, writer: writer.close(), "127.0.0.1", 0, ssl=context)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def test_a_certificate_that_does_not_verify_is_a_misconfiguration(tls_server: int) -> None:
    # What aiokafka's connection raises (a client's bootstrap only logs it): the ssl module's own error.
    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        await create_conn("127.0.0.1", tls_server, security_protocol="SSL", ssl_context=ssl.create_default_context())
    verdict = classify_kafka_error(caught.value)
    assert verdict.kind is Kind.MISCONFIGURED
    assert "certificate verification failed (self-signed certificate)" in verdict.reason


async def test_sasl_spoken_to_a_plaintext_listener_is_a_misconfiguration(bootstrap: str) -> None:
    kafka = KafkaSettings(
        bootstrap_servers=bootstrap,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username="someone",
        sasl_password="not-logged",
    )
    started = time.monotonic()
    with pytest.raises(KafkaMisconfigured) as caught:
        await wait_for_kafka(kafka, timeout_s=30)
    assert time.monotonic() - started < 10  # at once, not after the timeout
    assert str(caught.value).startswith("kafka: SASL handshake refused")
    assert "not-logged" not in str(caught.value)


def test_bootstrap_hosts() -> None:
    assert bootstrap_hosts("a:1,[::1]:9092, b:2") == [("a", 1), ("::1", 9092), ("b", 2)]


def test_backoff_doubles_up_to_its_cap_with_jitter() -> None:
    backoff = Backoff(base_s=0.5, cap_s=4.0)
    delays = [backoff.next_delay() for _ in range(8)]
    for delay, ceiling in zip(delays, [0.5, 1, 2, 4, 4, 4, 4, 4], strict=True):
        assert ceiling / 2 <= delay <= ceiling


@pytest.fixture
def warnings() -> Iterator[io.StringIO]:
    from common import logs

    logger = logging.getLogger("common")
    saved = logger.handlers[:], logger.level, logger.propagate
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger.handlers, logger.level, logger.propagate = [handler], logging.INFO, False
    yield stream
    logger.handlers, logger.level, logger.propagate = saved


async def test_a_closed_port_is_waited_for_until_the_timeout(warnings: io.StringIO) -> None:
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    seen: list[str] = []
    started = time.monotonic()
    with pytest.raises(KafkaUnreachable) as caught:
        await wait_for_kafka(
            kafka,
            timeout_s=1.5,
            on_wait=lambda verdict: seen.append(verdict.reason),
            log_every_s=0.6,
            backoff=Backoff(base_s=0.1, cap_s=0.2),
        )
    elapsed = time.monotonic() - started
    assert 1.5 <= elapsed < 3
    line = str(caught.value)
    assert line.startswith(f"kafka: no answer from {kafka.bootstrap_servers} within 1.5 s")
    assert "ConnectionRefusedError" in line
    assert len(seen) >= 5
    assert all(reason.startswith("kafka unreachable: ConnectionRefusedError") for reason in seen)
    logged = [orjson.loads(text) for text in warnings.getvalue().splitlines()]
    # one line per attempt, at most one per 0.6 s: the held-back attempts are counted on the next line
    assert 2 <= len(logged) <= 4 < len(seen)
    assert all(entry["message"] == "waiting for kafka" for entry in logged)
    assert any(int(entry.get("suppressed", 0)) > 0 for entry in logged)  # type: ignore[call-overload]


async def test_the_wait_ends_when_the_broker_answers(bootstrap: str) -> None:
    assert await wait_for_kafka(KafkaSettings(bootstrap_servers=bootstrap), timeout_s=10)
    await probe(KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()},{bootstrap}"))  # any one will do


async def test_the_wait_ends_when_asked_to_stop() -> None:
    stop = asyncio.Event()
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    asyncio.get_running_loop().call_later(0.3, stop.set)
    assert not await wait_for_kafka(kafka, timeout_s=None, stop=stop, backoff=Backoff(base_s=5, cap_s=5))
