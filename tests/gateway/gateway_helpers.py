"""Helpers shared by the gateway tests (plain module, imported through tests/gateway/conftest.py's path)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from gateway.signature import sign

SECRET = "whsec-test-3f1c9a7e-do-not-log"
OTHER_SECRET = "whsec-rotated-8d2b6f04-do-not-log"
WEBHOOK_ID = "420900d5-2ffb-4ad9-b2a6-38ef975f9b21"
VERSION = "2023-11-22"


def signed_headers(
    body: bytes,
    secret: str = SECRET,
    *,
    timestamp: int | None = None,
    webhook_id: str | None = WEBHOOK_ID,
    content_type: str = "application/json",
) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    headers = {
        "Content-Type": content_type,
        "Pinwheel-Version": VERSION,
        "X-Timestamp": str(ts),
        "X-Pinwheel-Signature": sign(secret.encode(), ts, body),
        "User-Agent": "python-requests/2.31.0",
    }
    if webhook_id is not None:
        headers["X-Pinwheel-Webhook-Id"] = webhook_id
    return headers


def event_body(event: str, account_id: str, seq: int = 0, event_id: str | None = None, **extra: Any) -> bytes:
    """A Pinwheel-style body (json.dumps separators, key order event_id, event, payload)."""
    import json

    payload = {
        "id": str(uuid.uuid4()),
        "account_id": account_id,
        "link_token_id": str(uuid.uuid4()),
        "name": "income",
        "timestamp": "2025-06-24T22:04:34.383896+00:00",
        "outcome": "success",
        "error_code": None,
        "error_type": None,
        "params": {"seq": seq},
        "end_user_id": str(uuid.uuid4()),
        **extra,
    }
    return json.dumps({"event_id": event_id or str(uuid.uuid4()), "event": event, "payload": payload}).encode()


def header(record: Any, name: str) -> bytes | None:
    for key, value in record.headers or ():
        if key == name:
            return bytes(value)
    return None
