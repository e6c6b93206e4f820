"""Known-answer and refusal tests of gateway/signature.py (pure, no Kafka, no HTTP)."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.signature import Reason, Refused, Verified, parse_signatures, sign, verify

SECRET = b"test-secret"
ROTATED = b"rotated-secret"


def check(headers: dict[str, str], body: bytes, now: float, **kwargs: Any) -> Verified | Refused:
    return verify(headers, body, kwargs.pop("secrets", [SECRET]), now=now, tolerance_s=300, **kwargs)


def capture_headers(delivery: dict[str, Any], secret: bytes = SECRET) -> tuple[dict[str, str], bytes, int]:
    body = delivery["body"].encode()
    timestamp = int(delivery["headers"]["X-Timestamp"])
    return delivery["headers"] | {"X-Pinwheel-Signature": sign(secret, timestamp, body)}, body, timestamp


def test_known_answer() -> None:
    # Independently computed: hex(HMAC-SHA256(key, "v2:" + timestamp + ":" + body)), PINWHEEL-NOTES.md.
    expected = "v2=ce67891a1fb19e72462e6dd0863450d8740308425e615cc1c7480c9df872ee55"
    assert sign(SECRET, "1609205925", b'{"event": "account.added"}') == expected
    headers = {"x-pinwheel-signature": expected, "x-timestamp": "1609205925"}
    assert check(headers, b'{"event": "account.added"}', now=1609205925) == Verified(1609205925, None, 0)


def test_every_captured_delivery_resigned_is_accepted(capture: list[dict[str, Any]]) -> None:
    assert len(capture) == 12
    for delivery in capture:
        headers, body, timestamp = capture_headers(delivery)
        expected = hmac.new(SECRET, f"v2:{timestamp}:".encode() + body, hashlib.sha256).hexdigest()
        assert headers["X-Pinwheel-Signature"] == f"v2={expected}"
        result = check(headers, body, now=timestamp + 10)
        assert result == Verified(timestamp, "420900d5-2ffb-4ad9-b2a6-38ef975f9b21", 0)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda h, b: (h, b[:-1]),  # body cut
        lambda h, b: (h, b.replace(b"success", b"Success", 1) if b"success" in b else b + b" "),
        lambda h, b: (h, b + b"\n"),  # a trailing newline is a different body
        lambda h, b: (h | {"X-Timestamp": str(int(h["X-Timestamp"]) + 1)}, b),
        lambda h, b: (h | {"X-Pinwheel-Signature": h["X-Pinwheel-Signature"][:-1] + "0"}, b),
    ],
)
def test_tampering_is_a_bad_signature(capture: list[dict[str, Any]], tamper: Any) -> None:
    for delivery in capture:
        headers, body, timestamp = capture_headers(delivery)
        headers, body = tamper(headers, body)
        if headers["X-Pinwheel-Signature"] == capture_headers(delivery)[0]["X-Pinwheel-Signature"] and body == (
            delivery["body"].encode()
        ):
            continue
        assert check(headers, body, now=timestamp) == Refused(Reason.BAD_SIGNATURE)


def test_wrong_secret_and_rotation(capture: list[dict[str, Any]]) -> None:
    headers, body, timestamp = capture_headers(capture[0], ROTATED)
    assert check(headers, body, now=timestamp) == Refused(Reason.BAD_SIGNATURE)
    assert check(headers, body, now=timestamp, secrets=[SECRET, ROTATED]) == Verified(
        timestamp, headers["X-Pinwheel-Webhook-Id"], 1
    )
    old_headers, _, _ = capture_headers(capture[0], SECRET)
    assert isinstance(check(old_headers, body, now=timestamp, secrets=[SECRET, ROTATED]), Verified)
    assert check(old_headers, body, now=timestamp, secrets=[ROTATED]) == Refused(Reason.BAD_SIGNATURE)


def test_header_name_case_variants(capture: list[dict[str, Any]]) -> None:
    headers, body, timestamp = capture_headers(capture[1])
    for transform in (str.lower, str.upper, str.title):
        variant = {transform(k): v for k, v in headers.items()}
        assert isinstance(check(variant, body, now=timestamp), Verified)
    # The scheme name in the value too ("V2=" as some older docs print it).
    upper = headers | {"X-Pinwheel-Signature": headers["X-Pinwheel-Signature"].replace("v2=", "V2=").upper()}
    assert isinstance(check(upper, body, now=timestamp), Verified)


def test_timestamp_window(capture: list[dict[str, Any]]) -> None:
    headers, body, timestamp = capture_headers(capture[2])
    assert isinstance(check(headers, body, now=timestamp + 300), Verified)
    assert check(headers, body, now=timestamp + 301) == Refused(Reason.STALE_TIMESTAMP)
    assert check(headers, body, now=timestamp - 301) == Refused(Reason.STALE_TIMESTAMP)  # from the future
    # A captured delivery replayed today is stale even with a valid signature.
    assert check(headers, body, now=timestamp + 86_400 * 365) == Refused(Reason.STALE_TIMESTAMP)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"X-Pinwheel-Signature": None}, Reason.MISSING_SIGNATURE),
        ({"X-Pinwheel-Signature": "  "}, Reason.MISSING_SIGNATURE),
        ({"X-Pinwheel-Signature": "v1=" + "a" * 64}, Reason.MALFORMED_SIGNATURE),
        ({"X-Pinwheel-Signature": "v2=" + "g" * 64}, Reason.MALFORMED_SIGNATURE),
        ({"X-Pinwheel-Signature": "v2=abc"}, Reason.MALFORMED_SIGNATURE),
        ({"X-Pinwheel-Signature": "a" * 64}, Reason.MALFORMED_SIGNATURE),
        ({"X-Pinwheel-Signature": "v2=" + "a" * 64}, Reason.BAD_SIGNATURE),
        ({"X-Timestamp": None}, Reason.MISSING_TIMESTAMP),
        ({"X-Timestamp": "1750802674.5"}, Reason.MALFORMED_TIMESTAMP),
        ({"X-Timestamp": "-1750802674"}, Reason.MALFORMED_TIMESTAMP),
        ({"X-Timestamp": "١٢٣"}, Reason.MALFORMED_TIMESTAMP),  # Unicode digits are not epoch seconds
        ({"X-Timestamp": "9" * 40}, Reason.MALFORMED_TIMESTAMP),
    ],
)
def test_reason_codes(capture: list[dict[str, Any]], change: dict[str, str | None], reason: Reason) -> None:
    headers, body, timestamp = capture_headers(capture[0])
    for name, value in change.items():
        headers.pop(name)
        if value is not None:
            headers[name] = value
    assert check(headers, body, now=timestamp) == Refused(reason)


def test_webhook_allow_list(capture: list[dict[str, Any]]) -> None:
    headers, body, timestamp = capture_headers(capture[0])
    allowed = frozenset({"420900d5-2ffb-4ad9-b2a6-38ef975f9b21"})
    assert isinstance(check(headers, body, now=timestamp, allowed_webhook_ids=allowed), Verified)
    other = frozenset({"61788409-8314-4e89-9300-ae7b9d3ccff5"})
    assert check(headers, body, now=timestamp, allowed_webhook_ids=other) == Refused(Reason.UNKNOWN_WEBHOOK)
    headers.pop("X-Pinwheel-Webhook-Id")
    assert check(headers, body, now=timestamp, allowed_webhook_ids=allowed) == Refused(Reason.UNKNOWN_WEBHOOK)
    assert isinstance(check(headers, body, now=timestamp), Verified)  # no allow-list: id optional


def test_several_signatures_in_one_header(capture: list[dict[str, Any]]) -> None:
    headers, body, timestamp = capture_headers(capture[0])
    good = headers["X-Pinwheel-Signature"]
    headers["X-Pinwheel-Signature"] = f"v2={'0' * 64}, {good}"
    assert isinstance(check(headers, body, now=timestamp), Verified)
    assert parse_signatures("v2=" + "A" * 64) == ["a" * 64]
    assert parse_signatures("nonsense") is None


@given(body=st.binary(max_size=2048), secret=st.binary(min_size=1, max_size=64), ts=st.integers(0, 2**34))
def test_sign_verify_roundtrip_and_any_flip_fails(body: bytes, secret: bytes, ts: int) -> None:
    headers = {"x-pinwheel-signature": sign(secret, ts, body), "x-timestamp": str(ts)}
    assert isinstance(verify(headers, body, [secret], now=ts, tolerance_s=1), Verified)
    flipped = bytes([body[0] ^ 1]) + body[1:] if body else b"x"
    assert verify(headers, flipped, [secret], now=ts, tolerance_s=1) == Refused(Reason.BAD_SIGNATURE)


@given(headers=st.dictionaries(st.text(max_size=30), st.text(max_size=100), max_size=8), body=st.binary(max_size=256))
def test_arbitrary_headers_never_verify_or_raise(headers: dict[str, str], body: bytes) -> None:
    assert isinstance(verify(headers, body, [SECRET], now=1e9, tolerance_s=300), Refused)
