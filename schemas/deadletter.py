"""The DeadLetter datum (pinwheel.DeadLetter) and its key, shared by the gateway and the processors."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

HeaderValue = str | bytes | None
Headers = Mapping[str, HeaderValue] | Iterable[tuple[str, HeaderValue]]


def dead_letter_key(event_id: str | None, raw: bytes) -> bytes:
    """event_id when known, else the sha256 hex of the raw bytes (architecture.md topic table)."""
    return (event_id or hashlib.sha256(raw).hexdigest()).encode()


def _header_list(headers: Headers) -> list[dict[str, Any]]:
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return [{"name": name, "value": value.encode() if isinstance(value, str) else value} for name, value in pairs]


def build_dead_letter(
    *,
    stage: Literal["gateway", "processor"],
    reason: str,
    error: str,
    raw: bytes,
    headers: Headers = (),
    event_id: str | None = None,
    event_type: str | None = None,
    failed_at: datetime | None = None,
    source_topic: str | None = None,
    source_partition: int | None = None,
    source_offset: int | None = None,
    source_key: bytes | None = None,
) -> dict[str, Any]:
    """The DeadLetter datum. `error` must hold no payload values (use PayloadError.detail)."""
    when = datetime.now(UTC) if failed_at is None else failed_at
    return {
        "stage": stage,
        "reason": reason,
        "error": error,
        "event_id": event_id,
        "event_type": event_type,
        "failed_at": when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC),
        "source_topic": source_topic,
        "source_partition": source_partition,
        "source_offset": source_offset,
        "source_key": source_key,
        "headers": _header_list(headers),
        "raw": bytes(raw),
    }
