"""Request hygiene on the webhook route, before the signature is checked: cheapest and least revealing first.

1. Content-Length over the cap → 413 before a byte of the body is read; a Content-Length that is not a
   number → 400;
2. a content type that is not JSON → 415;
3. the body, counted while it streams (chunked bodies have no Content-Length) → 413 past the cap; a client
   that disconnects meanwhile → 400.

Every refusal closes the connection (an unread body must not be taken for the next request). Below the app, in
uvicorn's protocol (gateway/connections.py), are the checks that must act before a request exists: header
caps, read deadlines, the connection limit. The method (POST only) and the exact path (no slash redirect) are
the router's (gateway/app.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from starlette.types import Receive, Scope


@dataclass(frozen=True)
class Refusal:
    """A request refused before its signature is checked (answered `rejected`, the connection closed)."""

    status: int
    reason: str


BODY_TOO_LARGE = Refusal(413, "body_too_large")
BAD_CONTENT_LENGTH = Refusal(400, "bad_content_length")
UNSUPPORTED_MEDIA_TYPE = Refusal(415, "unsupported_media_type")
CLIENT_DISCONNECTED = Refusal(400, "client_disconnected")


def header_map(scope: Scope) -> dict[str, str]:
    """The request headers, decoded once: Starlette's Headers decodes and scans the raw list on every get,
    and a request reads six of them. ASGI names are lower-case; the first of repeated headers wins, as with
    Headers.get."""
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in reversed(scope["headers"])}


def content_type_ok(value: str | None) -> bool:
    """application/json or any +json type, with or without parameters (charset...)."""
    if not value:
        return False
    media = value.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def content_length_status(value: str | None, limit: int) -> str:
    """'ok', 'absent' (chunked: count while reading), 'too_large' or 'invalid'."""
    if value is None:
        return "absent"
    value = value.strip()
    if not value.isascii() or not value.isdigit():
        return "invalid"
    return "too_large" if int(value) > limit else "ok"


def head_refusal(headers: Mapping[str, str], max_body_bytes: int) -> Refusal | None:
    """Checks 1 and 2, on the headers alone (pure)."""
    length = content_length_status(headers.get("content-length"), max_body_bytes)
    if length == "too_large":
        return BODY_TOO_LARGE
    if length == "invalid":
        return BAD_CONTENT_LENGTH
    if not content_type_ok(headers.get("content-type")):
        return UNSUPPORTED_MEDIA_TYPE
    return None


async def read_body(receive: Receive, max_body_bytes: int) -> bytes | Refusal:
    """Check 3: the body, or a refusal as soon as it passes `max_body_bytes` (the rest is never read) or the
    client disconnects.

    Straight from the ASGI messages: Request.stream() is an async generator, and each one costs the
    event loop's async-generator bookkeeping (a WeakSet entry and a finalizer) per request.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return CLIENT_DISCONNECTED
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_body_bytes:
            return BODY_TOO_LARGE
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
