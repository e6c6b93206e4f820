"""Over real HTTPS against the real broker: deliveries land in the right topics, refusals publish nothing."""

from __future__ import annotations

import json
import logging
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from gateway.settings import GatewaySettings
from schemas.catalog import DEADLETTER_TOPIC, FAMILY_TOPICS, Family, family_of
from schemas.codec import Codec
from tests.gateway.gateway_helpers import (
    OTHER_SECRET,
    SECRET,
    WEBHOOK_ID,
    TopicTail,
    event_body,
    header,
    signed_headers,
)
from tests.threaded_gateway import ThreadedServer

pytestmark = pytest.mark.kafka

CODEC = Codec()


def by_event_id(records: list[Any]) -> dict[str, Any]:
    return {(header(r, "event_id") or b"").decode(): r for r in records}


async def test_capture_lands_in_family_topics_with_keys_headers_and_decodes(
    start_gateway: Callable[..., ThreadedServer],
    https: httpx.AsyncClient,
    tail: TopicTail,
    capture: list[dict[str, Any]],
) -> None:
    server = start_gateway()
    sent: dict[str, dict[str, Any]] = {}
    for delivery in capture:
        body = delivery["body"].encode()
        # The captured headers, as sent, plus a fresh signature and timestamp for our test secret.
        headers = {k: v for k, v in delivery["headers"].items() if k.lower() != "x-timestamp"}
        headers |= {k: v for k, v in signed_headers(body).items() if k.startswith("X-")}
        response = await https.post(server.webhook_url, content=body, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "published"
        parsed = json.loads(body)
        sent[parsed["event_id"]] = {"body": body, "parsed": parsed, "headers": headers}

    records = by_event_id(await tail.collect(lambda rs: set(sent) <= set(by_event_id(rs))))
    assert set(sent) <= set(records)
    for event_id, item in sent.items():
        record = records[event_id]
        parsed = item["parsed"]
        assert record.topic == FAMILY_TOPICS[family_of(parsed["event"])]
        assert record.topic != FAMILY_TOPICS[Family.OTHER]
        assert record.key == parsed["payload"]["account_id"].encode()
        assert header(record, "event_type") == parsed["event"].encode()
        assert header(record, "webhook_id") == WEBHOOK_ID.encode()
        assert header(record, "pinwheel_version") == b"2023-11-22"
        assert header(record, "content_format") == CODEC.content_format.encode()
        value = CODEC.decode(record.topic, record.value)
        assert value["event_id"] == event_id
        assert value["raw_body"] == item["body"]  # byte-exact, re-verifiable
        assert int(value["sent_at"].timestamp()) == int(item["headers"]["X-Timestamp"])


async def test_documented_samples_land_where_the_catalog_says(
    start_gateway: Callable[..., ThreadedServer],
    https: httpx.AsyncClient,
    tail: TopicTail,
    doc_samples: list[str],
) -> None:
    server = start_gateway()
    assert len(doc_samples) >= 17
    expected: dict[str, str] = {}
    for text in doc_samples:
        # The docs reuse one event_id; give each sample its own so the records can be told apart.
        event_id = str(uuid.uuid4())
        body = text.replace("5a141122-4235-4fa1-bd76-0628573880b0", event_id).replace(
            "5a141122-4235-4fa1-bd76-0123456780b0", event_id
        )
        response = await https.post(server.webhook_url, content=body.encode(), headers=signed_headers(body.encode()))
        assert response.status_code == 200, response.text
        try:
            event_type = json.loads(body)["event"]
            expected[event_id] = FAMILY_TOPICS[family_of(event_type)]
        except json.JSONDecodeError:
            # paystubs.added and shifts.added carry a trailing comma in the docs (PINWHEEL-NOTES.md): a
            # correctly signed body that is not JSON is kept in the dead-letter topic, keyed by body hash.
            expected[event_id] = DEADLETTER_TOPIC
    assert sum(topic == DEADLETTER_TOPIC for topic in expected.values()) == 2

    def found(records: list[Any]) -> int:
        raw = {bytes(CODEC.decode(r.topic, r.value)["raw"]) for r in records if r.topic == DEADLETTER_TOPIC}
        return len(set(expected) & set(by_event_id(records))) + sum(
            any(eid.encode() in b for b in raw) for eid, t in expected.items() if t == DEADLETTER_TOPIC
        )

    records = await tail.collect(lambda rs: found(rs) >= len(expected))
    named = by_event_id(records)
    for event_id, topic in expected.items():
        if topic == DEADLETTER_TOPIC:
            dead = [
                CODEC.decode(r.topic, r.value)
                for r in records
                if r.topic == DEADLETTER_TOPIC and event_id.encode() in bytes(CODEC.decode(r.topic, r.value)["raw"])
            ]
            assert len(dead) == 1
            assert dead[0]["reason"] == "invalid_json"
            assert dead[0]["stage"] == "gateway"
        else:
            assert named[event_id].topic == topic
            assert CODEC.decode(topic, named[event_id].value)["event_id"] == event_id


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda h, b: ({k: v for k, v in h.items() if k != "X-Pinwheel-Signature"}, b), "missing_signature"),
        (lambda h, b: (h | {"X-Pinwheel-Signature": "v2=zz"}, b), "malformed_signature"),
        (lambda h, b: (h, b + b" "), "bad_signature"),
        (lambda h, b: (h | {"X-Timestamp": str(int(h["X-Timestamp"]) - 1)}, b), "bad_signature"),
        (lambda h, b: ({k: v for k, v in h.items() if k != "X-Timestamp"}, b), "missing_timestamp"),
        (lambda h, b: (h | {"X-Timestamp": "soon"}, b), "malformed_timestamp"),
    ],
)
async def test_refusals_over_https_publish_nothing(
    start_gateway: Callable[..., ThreadedServer],
    https: httpx.AsyncClient,
    tail: TopicTail,
    mutate: Callable[[dict[str, str], bytes], tuple[dict[str, str], bytes]],
    reason: str,
) -> None:
    server = start_gateway()
    event_id = str(uuid.uuid4())
    body = event_body("income.added", str(uuid.uuid4()), event_id=event_id)
    headers, sent_body = mutate(signed_headers(body), body)
    response = await https.post(server.webhook_url, content=sent_body, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"status": "unauthorized", "reason": reason}
    assert SECRET not in response.text
    # A signed sentinel after it: once it is in Kafka, the refused one would have been too.
    sentinel = event_body("income.added", str(uuid.uuid4()))
    assert (await https.post(server.webhook_url, content=sentinel, headers=signed_headers(sentinel))).status_code == 200
    sentinel_id = json.loads(sentinel)["event_id"]
    records = by_event_id(await tail.collect(lambda rs: sentinel_id in by_event_id(rs)))
    assert sentinel_id in records
    assert event_id not in records
    assert not any(event_id.encode() in bytes(r.value) for r in await tail.collect(lambda rs: True, 0.5))


async def test_stale_timestamp_wrong_secret_rotation_and_allow_list_over_https(
    start_gateway: Callable[..., ThreadedServer], https: httpx.AsyncClient
) -> None:
    server = start_gateway(secrets=[SECRET, OTHER_SECRET], allowed_webhook_ids=[WEBHOOK_ID])
    body = event_body("employment.added", str(uuid.uuid4()))
    url = server.webhook_url
    stale = signed_headers(body, timestamp=int(time.time()) - 301)
    assert (await https.post(url, content=body, headers=stale)).json()["reason"] == "stale_timestamp"
    wrong = signed_headers(body, "not-the-secret")
    assert (await https.post(url, content=body, headers=wrong)).json()["reason"] == "bad_signature"
    stranger = signed_headers(body, webhook_id="61788409-8314-4e89-9300-ae7b9d3ccff5")
    assert (await https.post(url, content=body, headers=stranger)).json()["reason"] == "unknown_webhook"
    for secret in (SECRET, OTHER_SECRET):  # rotation: both secrets are accepted at once
        fresh = event_body("employment.added", str(uuid.uuid4()))
        response = await https.post(url, content=fresh, headers=signed_headers(fresh, secret))
        assert response.status_code == 200, response.text
    # Header names in any case (HTTP/1.1 header names are case-insensitive).
    fresh = event_body("employment.added", str(uuid.uuid4()))
    shouted = {k.upper(): v for k, v in signed_headers(fresh).items()}
    assert (await https.post(url, content=fresh, headers=shouted)).status_code == 200


async def test_hygiene_size_cap_content_type_other_and_dead_letter(
    start_gateway: Callable[..., ThreadedServer], https: httpx.AsyncClient, tail: TopicTail
) -> None:
    server = start_gateway(max_body_bytes=4096)
    url = server.webhook_url
    big = b'{"event_id": "x", "pad": "' + b"a" * 5000 + b'"}'
    response = await https.post(url, content=big, headers=signed_headers(big))
    assert response.status_code == 413  # Content-Length over the cap: refused before reading

    async def chunked() -> Any:
        # The last chunk crosses the 4096-byte cap: the client has sent everything by the time the gateway
        # answers and closes (with more to send, the close can reach it as a reset before the 413).
        for _ in range(5):
            yield b"a" * 1000

    # No Content-Length (chunked): counted while streaming.
    response = await https.post(
        url, content=chunked(), headers=signed_headers(b"") | {"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["reason"] == "body_too_large"

    small = event_body("income.added", str(uuid.uuid4()))
    response = await https.post(url, content=small, headers=signed_headers(small, content_type="text/plain"))
    assert response.status_code == 415
    response = await https.post(
        url, content=small, headers=signed_headers(small, content_type="application/json; charset=utf-8")
    )
    assert response.status_code == 200

    other_id, dead_id = str(uuid.uuid4()), str(uuid.uuid4())
    other = json.dumps(
        {
            "event_id": other_id,
            "event": "company_connect.status.updated",
            "payload": {"company_connection_id": "cc-1"},
        }
    ).encode()
    invalid = json.dumps({"event_id": dead_id, "event": "income.added", "payload": {"outcome": 7}}).encode()
    not_json = b'{"event_id": "' + str(uuid.uuid4()).encode() + b'", "event": '
    for body in (other, invalid, not_json):
        response = await https.post(url, content=body, headers=signed_headers(body))
        assert response.status_code == 200, response.text

    def dead_letters(records: list[Any]) -> list[dict[str, Any]]:
        return [CODEC.decode(r.topic, r.value) for r in records if r.topic == DEADLETTER_TOPIC]

    records = await tail.collect(
        lambda rs: (
            other_id in by_event_id(rs)
            and any(bytes(d["raw"]) == not_json for d in dead_letters(rs))
            and dead_id in by_event_id(rs)
        )
    )
    named = by_event_id(records)
    assert named[other_id].topic == FAMILY_TOPICS[Family.OTHER]
    assert named[other_id].key == b"cc-1"
    assert named[dead_id].topic == DEADLETTER_TOPIC
    assert named[dead_id].key == dead_id.encode()
    reasons = {d["reason"] for d in dead_letters(records) if bytes(d["raw"]) in (invalid, not_json)}
    assert reasons == {"invalid_payload", "invalid_json"}
    # The dead letter says what failed (paths, error types), never the payload values.
    detail = next(d for d in dead_letters(records) if bytes(d["raw"]) == invalid)
    assert "payload.outcome" in detail["error"]
    assert "7" not in detail["error"].replace("payload", "")


async def test_health_and_metrics(start_gateway: Callable[..., ThreadedServer], https: httpx.AsyncClient) -> None:
    server = start_gateway()
    live = await https.get(server.url + "/livez")
    assert (live.status_code, live.json()) == (200, {"status": "alive"})  # no uptime on the internet-facing port
    # The internet-facing port serves the webhook and /livez only: readiness details and metrics are not
    # anybody's business there.
    for path in ("/readyz", "/metrics"):
        hidden = await https.get(server.url + path)
        assert hidden.status_code == 404, (path, hidden.text)
        assert "gateway_" not in hidden.text
        assert "spool" not in hidden.text
    ready = await https.get(server.admin_url + "/readyz")
    assert ready.status_code == 200
    assert (ready.json()["status"], ready.json()["reasons"]) == ("ready", [])
    assert ready.json()["kafka"] == "up"
    assert ready.json()["spool_records"] == 0
    body = event_body("income.added", str(uuid.uuid4()))
    assert (await https.post(server.webhook_url, content=body, headers=signed_headers(body))).status_code == 200
    await https.post(server.webhook_url, content=body, headers=signed_headers(body, "wrong"))
    metrics = await https.get(server.admin_url + "/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'gateway_requests_total{outcome="published",reason="family"} 1.0' in metrics.text
    assert 'gateway_requests_total{outcome="unauthorized",reason="bad_signature"} 1.0' in metrics.text
    assert 'gateway_publish_latency_seconds_count{path="kafka"} 1.0' in metrics.text
    assert "gateway_spool_records 0.0" in metrics.text
    assert "gateway_ready 1.0" in metrics.text
    # Only those two on the admin listener: no webhook there, no slash redirect.
    assert (await https.post(server.admin_url + server.settings.route, content=body)).status_code == 404
    assert (await https.get(server.admin_url + "/readyz/", follow_redirects=False)).status_code == 404


async def test_admin_listener_is_on_loopback_by_default(
    start_gateway: Callable[..., ThreadedServer], https: httpx.AsyncClient
) -> None:
    assert GatewaySettings.model_fields["admin_host"].default == "127.0.0.1"
    server = start_gateway(host="0.0.0.0")  # the webhook port on every interface, as in a container
    assert server.settings.admin_host == "127.0.0.1"
    assert server.admin_address() == ("127.0.0.1", server.settings.admin_port)
    outside = _non_loopback_address()
    if outside is not None:  # another interface of this host: the webhook port listens there, the admin does not
        socket.create_connection((outside, server.settings.port), timeout=2).close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((outside, server.settings.admin_port), timeout=2).close()
    assert (await https.get(server.admin_url + "/readyz")).status_code == 200


def _non_loopback_address() -> str | None:
    """An IPv4 address of this host that is not loopback (the one a default route would leave by), if any."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent, the kernel picks the source address
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") or address == "0.0.0.0" else address


async def test_logs_hold_no_secret_and_no_body(
    start_gateway: Callable[..., ThreadedServer],
    https: httpx.AsyncClient,
    capture: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from common.logs import JsonFormatter

    formatter = JsonFormatter()
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(formatter.format(record))

    handler = Collect()
    gateway_logger = logging.getLogger("gateway")
    gateway_logger.addHandler(handler)
    gateway_logger.setLevel(logging.DEBUG)
    try:
        server = start_gateway(secrets=[SECRET, OTHER_SECRET])
        bodies = [d["body"].encode() for d in capture]
        bad = b'{"event_id": "e-1", "event": "income.added", "payload": {"account_id": "ssn-123-45-6789"}}'
        for body in [*bodies, bad, b"{not json"]:
            await https.post(server.webhook_url, content=body, headers=signed_headers(body))
            await https.post(server.webhook_url, content=body, headers=signed_headers(body, "nope"))
        await https.aclose()  # no idle keep-alive connection for the graceful shutdown to wait for
        server.stop()  # the shutdown lines are part of the log under test
    finally:
        gateway_logger.removeHandler(handler)
    text = "\n".join(lines)
    requests = [json.loads(line) for line in lines if json.loads(line)["message"] == "webhook"]
    assert len(requests) == 2 * (len(bodies) + 2)
    assert {"event_id", "event_type", "outcome", "reason", "latency_ms", "status"} <= set(requests[0])
    for secret in (SECRET, OTHER_SECRET):
        assert secret not in text
    assert "ssn-123-45-6789" not in text
    for delivery in capture:
        payload = json.loads(delivery["body"])["payload"]
        for value in payload.values():
            if isinstance(value, str) and len(value) > 8 and any(c.isdigit() for c in value):
                assert value not in text  # payroll data (ids, timestamps, account ids...) stays out


async def test_full_spool_is_the_designed_503(
    start_gateway: Callable[..., ThreadedServer], https: httpx.AsyncClient
) -> None:
    # Kafka unreachable from the start (nothing listens on port 1; a random free port could be taken by
    # another test's broker meanwhile): everything goes to a 1 MiB spool until it is full.
    server = start_gateway(bootstrap="127.0.0.1:1", spool_max_bytes=1024 * 1024, max_body_bytes=256 * 1024)
    statuses = []
    for _ in range(6):
        body = json.dumps(
            {"event_id": str(uuid.uuid4()), "event": "bill.added", "payload": {"note": "x" * 150_000}}
        ).encode()
        response = await https.post(server.webhook_url, content=body, headers=signed_headers(body))
        statuses.append(response.status_code)
        if response.status_code == 503:
            assert response.headers["Retry-After"] == str(server.settings.retry_after_s)
            assert response.json()["reason"] == "spool_full"
    assert statuses[0] == 200
    assert statuses[-1] == 503
    ready = await https.get(server.admin_url + "/readyz")
    assert ready.status_code == 503
    assert ready.json()["reasons"] == ["spool full: GATEWAY_SPOOL_MAX_BYTES reached"]
    assert ready.json()["kafka"] == "down"
    assert ready.json()["spool_records"] == statuses.count(200)


async def test_a_record_the_broker_refuses_is_never_acknowledged(
    start_gateway: Callable[..., ThreadedServer], https: httpx.AsyncClient
) -> None:
    # The family topics take 4 MiB records (schemas.topics); a gateway configured for bodies past that
    # (and a producer allowed to send them) meets the broker's refusal: ~6 MB once encoded.
    server = start_gateway(max_body_bytes=8 * 2**20, max_request_bytes=16 * 2**20)
    body = json.dumps(
        {"event_id": str(uuid.uuid4()), "event": "bill.added", "payload": {"n": "x" * 3_000_000}}
    ).encode()
    response = await https.post(server.webhook_url, content=body, headers=signed_headers(body))
    assert response.status_code == 503
    assert response.json()["reason"] == "producer_error"
    assert "Retry-After" in response.headers
    ready = (await https.get(server.admin_url + "/readyz")).json()
    assert ready["spool_records"] == 0  # not parked in the spool, where it would block the drain
    small = event_body("income.added", str(uuid.uuid4()))
    assert (await https.post(server.webhook_url, content=small, headers=signed_headers(small))).status_code == 200


async def test_trailing_slash_is_a_404_never_a_redirect_to_the_host_header(
    start_gateway: Callable[..., ThreadedServer], https: httpx.AsyncClient
) -> None:
    server = start_gateway()
    body = event_body("income.added", str(uuid.uuid4()))
    for path in (server.settings.route + "/", "/livez/", "/readyz/"):
        method = "POST" if path.startswith(server.settings.route) else "GET"
        response = await https.request(
            method,
            server.url + path,
            content=body if method == "POST" else None,
            headers=signed_headers(body) | {"Host": "attacker.example"},
            follow_redirects=False,
        )
        assert response.status_code == 404, (path, response.status_code, response.headers)
        assert "location" not in response.headers
    response = await https.post(server.webhook_url, content=body, headers=signed_headers(body))
    assert response.status_code == 200  # the exact route still serves
