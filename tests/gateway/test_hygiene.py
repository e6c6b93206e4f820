"""gateway/hygiene.py: the checks before the signature, in their order (content checks: test_settings.py; over
real HTTPS: test_https.py, test_abuse.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from gateway.hygiene import (
    BAD_CONTENT_LENGTH,
    BODY_TOO_LARGE,
    CLIENT_DISCONNECTED,
    UNSUPPORTED_MEDIA_TYPE,
    head_refusal,
    header_map,
    read_body,
)

JSON = {"content-type": "application/json"}


def test_the_length_is_judged_before_the_content_type() -> None:
    assert head_refusal({"content-length": "11"}, 10) == BODY_TOO_LARGE  # no content type either
    assert head_refusal({"content-length": "ten", **JSON}, 10) == BAD_CONTENT_LENGTH
    assert head_refusal({"content-length": "10", "content-type": "text/plain"}, 10) == UNSUPPORTED_MEDIA_TYPE
    assert head_refusal({"content-length": "10", **JSON}, 10) is None
    assert head_refusal(JSON, 10) is None  # chunked: counted while read


def test_the_first_of_repeated_headers_wins() -> None:
    scope = {"headers": [(b"content-type", b"application/json"), (b"content-type", b"text/plain")]}
    assert header_map(scope) == JSON


def receiving(*messages: dict[str, Any]) -> Any:
    pending: Iterator[dict[str, Any]] = iter(messages)

    async def receive() -> dict[str, Any]:
        return next(pending)

    return receive


async def test_the_body_is_read_up_to_the_cap_and_no_further() -> None:
    chunk = {"type": "http.request", "body": b"12345", "more_body": True}
    last = {"type": "http.request", "body": b"67890", "more_body": False}
    assert await read_body(receiving(chunk, last), 10) == b"1234567890"
    # past the cap: refused at once; the third message is never asked for
    assert await read_body(receiving(chunk, chunk), 9) == BODY_TOO_LARGE
    assert await read_body(receiving(chunk, {"type": "http.disconnect"}), 10) == CLIENT_DISCONNECTED
