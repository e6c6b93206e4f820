"""Pinwheel webhook signature verification: pure, on the raw request bytes, before any parsing.

    x-pinwheel-signature: v2=hex(HMAC-SHA256(secret, b"v2:" + x-timestamp + b":" + raw body))

Several secrets may be active at once (rotation). Failures carry a reason code for the 401 answer
and the logs; neither ever contains secret material or the body.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

SIGNATURE_HEADER = "x-pinwheel-signature"
TIMESTAMP_HEADER = "x-timestamp"
WEBHOOK_ID_HEADER = "x-pinwheel-webhook-id"
VERSION_HEADER = "pinwheel-version"

_HEX = frozenset("0123456789abcdefABCDEF")
_MAX_TIMESTAMP_DIGITS = 12  # epoch seconds fit in 11 digits until the year 5138


class Reason(StrEnum):
    MISSING_SIGNATURE = "missing_signature"
    MALFORMED_SIGNATURE = "malformed_signature"
    BAD_SIGNATURE = "bad_signature"
    MISSING_TIMESTAMP = "missing_timestamp"
    MALFORMED_TIMESTAMP = "malformed_timestamp"
    STALE_TIMESTAMP = "stale_timestamp"
    UNKNOWN_WEBHOOK = "unknown_webhook"


@dataclass(frozen=True)
class Verified:
    timestamp: int  # x-timestamp, epoch seconds
    webhook_id: str | None
    secret_index: int  # which configured secret matched (rotation telemetry; not the secret)


@dataclass(frozen=True)
class Refused:
    reason: Reason


def sign(secret: bytes, timestamp: str | int, body: bytes) -> str:
    """The x-pinwheel-signature header value for `body` sent at `timestamp`."""
    return "v2=" + _digest(secret, str(timestamp).encode("ascii"), body)


def _digest(secret: bytes, timestamp: bytes, body: bytes) -> str:
    mac = hmac.new(secret, b"v2:" + timestamp + b":", hashlib.sha256)
    mac.update(body)  # no copy of a large body
    return mac.hexdigest()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    # Header names are case-insensitive; plain dicts (tests, tools) may carry any case.
    for key, candidate in headers.items():
        if key.lower() == name:
            return candidate
    return None


def parse_signatures(value: str) -> list[str] | None:
    """The v2 digests of a header value (lower-case hex), or None when there is no well-formed one.

    Tolerates several comma/space separated entries, as signature headers often carry during a rollout.
    """
    digests = []
    for part in value.replace(",", " ").split():
        scheme, sep, digest = part.partition("=")
        if sep and scheme.strip().lower() == "v2" and len(digest) == 64 and set(digest) <= _HEX:
            digests.append(digest.lower())
    return digests or None


def verify(
    headers: Mapping[str, str],
    body: bytes,
    secrets: Sequence[bytes],
    *,
    now: float,
    tolerance_s: float,
    allowed_webhook_ids: frozenset[str] = frozenset(),
) -> Verified | Refused:
    """Check the signature, the timestamp window and the optional webhook-id allow-list."""
    signature = _header(headers, SIGNATURE_HEADER)
    if signature is None or not signature.strip():
        return Refused(Reason.MISSING_SIGNATURE)
    digests = parse_signatures(signature)
    if digests is None:
        return Refused(Reason.MALFORMED_SIGNATURE)
    raw_timestamp = _header(headers, TIMESTAMP_HEADER)
    if raw_timestamp is None or not raw_timestamp.strip():
        return Refused(Reason.MISSING_TIMESTAMP)
    raw_timestamp = raw_timestamp.strip()
    if not (raw_timestamp.isascii() and raw_timestamp.isdigit()) or len(raw_timestamp) > _MAX_TIMESTAMP_DIGITS:
        return Refused(Reason.MALFORMED_TIMESTAMP)
    timestamp = int(raw_timestamp)
    # Both directions: a timestamp far in the future is as suspicious as an old one (replay).
    if abs(now - timestamp) > tolerance_s:
        return Refused(Reason.STALE_TIMESTAMP)
    webhook_id = _header(headers, WEBHOOK_ID_HEADER)
    if allowed_webhook_ids and (webhook_id is None or webhook_id.strip() not in allowed_webhook_ids):
        return Refused(Reason.UNKNOWN_WEBHOOK)
    # The digest covers the timestamp exactly as sent (the stripped form is what Pinwheel signs).
    matched = -1
    for index, secret in enumerate(secrets):
        expected = _digest(secret, raw_timestamp.encode("ascii"), body)
        for digest in digests:
            # compare_digest on every pair: no early exit that would time which one matched
            if hmac.compare_digest(expected, digest) and matched < 0:
                matched = index
    if matched < 0:
        return Refused(Reason.BAD_SIGNATURE)
    return Verified(timestamp, webhook_id.strip() if webhook_id else None, matched)
