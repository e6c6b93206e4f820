"""Fuzzing with hypothesis: >= 10,000 random or mutated requests against the app and a real producer.

Properties: never a 5xx (the designed 503 needs a full spool, which these runs never reach); a
request that is not correctly signed gets no 200 and publishes nothing; a correctly signed JSON
request gets 200 and exactly one record. Most requests go in-process (httpx.ASGITransport, the app's
lifespan and producer on their own event loop thread); a smaller batch goes over real HTTPS.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.settings import KafkaSettings
from gateway.app import create_app
from gateway.signature import sign
from schemas.catalog import DEADLETTER_TOPIC, KNOWN_EVENT_TYPES
from schemas.codec import Codec
from tests.gateway.gateway_helpers import SECRET, WEBHOOK_ID, TopicTail, gateway_settings, on_private_broker
from tests.threaded_gateway import ThreadedServer

pytestmark = [
    pytest.mark.kafka,
    # The app's producer (aiokafka picks nodes with `random`) runs on another thread while hypothesis
    # generates; hypothesis takes that for the strategy using `random`.
    pytest.mark.filterwarnings("ignore:Do not use the `random` module:hypothesis.errors.HypothesisDeprecationWarning"),
]


# It counts everything written to the gateway's topics: on the gateway tests' own broker (tests/gateway/conftest.py).
bootstrap, gateway_topics = on_private_broker()


T = TypeVar("T")
CODEC = Codec()
ROUTE = "/webhooks/pinwheel"
EVENT_TYPES = [*sorted(KNOWN_EVENT_TYPES), "", "account", "x" * 300, "ACCOUNT.ADDED"]


@dataclass
class Ledger:
    """What the fuzzer sent: the bodies answered 200 (each must be in Kafka exactly once)."""

    accepted: list[bytes] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)

    def note(self, status: int) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1


class LoopThread:
    """An event loop on a thread: the app (lifespan, producer) lives there; tests submit coroutines."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def in_process(
    bootstrap: str, gateway_topics: list[str], tls_pair: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[list[Request]], list[httpx.Response]]]:
    gs = gateway_settings(tls_pair, tmp_path_factory.mktemp("fuzz-spool"), max_body_bytes=64 * 1024, linger_ms=0)
    app = create_app(gs, KafkaSettings(bootstrap_servers=bootstrap))
    runner = LoopThread()
    lifespan = app.router.lifespan_context(app)
    runner.run(lifespan.__aenter__())
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://gateway.test")

    def post(batch: list[Request]) -> list[httpx.Response]:
        async def send() -> list[httpx.Response]:
            return list(
                await asyncio.gather(*(client.post(ROUTE, content=body, headers=headers) for body, headers, _ in batch))
            )

        return runner.run(send())

    try:
        yield post
    finally:
        runner.run(client.aclose())
        runner.run(lifespan.__aexit__(None, None, None))
        runner.close()


# -- strategies ---------------------------------------------------------------------------------

# Printable ASCII without surrounding blanks (an HTTP client refuses to send those).
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80).map(str.strip)


@st.composite
def bodies(draw: st.DrawFn, capture: list[dict[str, Any]]) -> bytes:
    kind = draw(st.sampled_from(["capture", "mutated", "json", "random"]))
    if kind == "random":
        return draw(st.binary(max_size=2048))
    if kind == "json":
        payload = draw(
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
                lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                max_leaves=12,
            )
        )
        body: dict[str, Any] = {
            "event_id": draw(st.uuids().map(str) | st.text(max_size=40)),
            "event": draw(st.sampled_from(EVENT_TYPES)),
            "payload": payload,
        }
        if draw(st.booleans()):
            body["payload"] = {
                "account_id": draw(st.uuids().map(str)),
                **(payload if isinstance(payload, dict) else {}),
            }
        return json.dumps(body).encode()
    base = draw(st.sampled_from(capture))["body"].encode()
    if kind == "capture":
        return base
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif data:
            del data[at]
    return bytes(data)


@st.composite
def requests(draw: st.DrawFn, capture: list[dict[str, Any]]) -> tuple[bytes, dict[str, str], bool]:
    """(body, headers, correctly signed with JSON content type)."""
    body = draw(bodies(capture))
    now = int(time.time())
    ts_kind = draw(st.sampled_from(["now", "now", "now", "stale", "future", "garbage", "absent"]))
    timestamp = {
        "now": str(now),
        # A margin past the 300 s tolerance: the clock moves between drawing and checking.
        "stale": str(now - draw(st.integers(330, 10**9))),
        "future": str(now + draw(st.integers(330, 10**6))),
        "garbage": draw(header_text),
        "absent": None,
    }[ts_kind]
    sig_kind = draw(st.sampled_from(["valid", "valid", "valid", "wrong_secret", "other_body", "garbage", "absent"]))
    signature: str | None
    if sig_kind == "absent":
        signature = None
    elif sig_kind == "garbage":
        signature = draw(header_text | st.just("v2=") | st.text("0123456789abcdef", min_size=64, max_size=64))
    else:
        secret = b"another-secret" if sig_kind == "wrong_secret" else SECRET.encode()
        signed_body = body + b" " if sig_kind == "other_body" else body
        signed_ts = timestamp if timestamp is not None and timestamp.strip().isdigit() else str(now)
        signature = sign(secret, signed_ts.strip(), signed_body) if signed_ts.strip().isascii() else "v2=00"
    json_type = st.sampled_from(["application/json", "application/json; charset=utf-8", "APPLICATION/JSON"])
    other_type = st.sampled_from(["text/plain", "application/x-www-form-urlencoded", ""]) | header_text
    content_type = draw(other_type if draw(st.integers(0, 4)) == 0 else json_type)
    headers: dict[str, str] = {"Content-Type": content_type, "X-Pinwheel-Webhook-Id": WEBHOOK_ID}
    case = draw(st.sampled_from([str.lower, str.upper, str.title]))
    if signature is not None:
        headers[case("X-Pinwheel-Signature")] = signature
    if timestamp is not None:
        headers[case("X-Timestamp")] = timestamp
    valid = (
        sig_kind == "valid" and ts_kind == "now" and content_type.split(";")[0].strip().lower() == "application/json"
    )
    return body, headers, valid


Request = tuple[bytes, dict[str, str], bool]


def check_response(response: httpx.Response, valid: bool, ledger: Ledger, body: bytes) -> None:
    ledger.note(response.status_code)
    assert response.status_code < 500, response.text  # the designed 503 needs a full spool: not here
    if valid:
        assert response.status_code == 200, response.text
        ledger.accepted.append(body)
    else:
        assert response.status_code in (400, 401, 413, 415), response.text


def raw_bytes(record: Any) -> bytes:
    value = CODEC.decode(record.topic, record.value)
    return bytes(value["raw"] if record.topic == DEADLETTER_TOPIC else value["raw_body"])


async def assert_published_exactly(tail: TopicTail, ledger: Ledger) -> None:
    """Every accepted body is in Kafka once; nothing else arrived (so no unsigned request got in)."""
    expected = len(ledger.accepted)
    records = await tail.collect(lambda rs: len(rs) >= expected, timeout_s=60)
    records += await tail.collect(lambda rs: False, timeout_s=2)  # anything extra would show up now
    published = sorted(hashlib.sha256(raw_bytes(r)).hexdigest() for r in records)
    accepted = sorted(hashlib.sha256(b).hexdigest() for b in ledger.accepted)
    assert published == accepted


async def test_fuzz_in_process_10k(
    in_process: Callable[[list[Request]], list[httpx.Response]], tail: TopicTail, capture: list[dict[str, Any]]
) -> None:
    ledger = Ledger()

    # 1,000 examples of 10 concurrent requests each: 10,000 requests, and concurrency for free.
    @settings(max_examples=1_000, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(requests(capture), min_size=10, max_size=10))
    def fuzz(batch: list[Request]) -> None:
        for (body, _, valid), response in zip(batch, in_process(batch), strict=True):
            check_response(response, valid, ledger, body)

    await asyncio.to_thread(fuzz)
    total = sum(ledger.statuses.values())
    print(f"\n[fuzz in-process] requests={total} statuses={ledger.statuses}")
    assert total >= 10_000
    assert ledger.statuses.get(200, 0) > 1000  # the valid path is well exercised
    assert ledger.statuses.get(401, 0) > 1000
    await assert_published_exactly(tail, ledger)


async def test_fuzz_over_https(
    bootstrap: str,
    gateway_topics: list[str],
    tls_pair: tuple[Path, Path],
    tmp_path: Path,
    tail: TopicTail,
    capture: list[dict[str, Any]],
) -> None:
    server = ThreadedServer(gateway_settings(tls_pair, tmp_path / "spool"), bootstrap).start()
    ledger = Ledger()
    http = httpx.Client(verify=ssl.create_default_context(cafile=tls_pair[0]), timeout=30)
    try:

        @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(requests(capture))
        def fuzz(request: Request) -> None:
            body, headers, valid = request
            check_response(http.post(server.webhook_url, content=body, headers=headers), valid, ledger, body)

        await asyncio.to_thread(fuzz)
    finally:
        await asyncio.to_thread(http.close)
        server.stop()
    print(f"\n[fuzz https] requests={sum(ledger.statuses.values())} statuses={ledger.statuses}")
    await assert_published_exactly(tail, ledger)
