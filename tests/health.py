"""A service's readiness, asked rather than slept for: tests that need a processor (or a gateway) running poll its
/readyz until it answers 200, with a deadline and a failure that says what it last answered."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

POLL_S = 0.1


async def wait_ready(port: int, *, service: asyncio.Task[Any] | None = None, timeout_s: float = 60.0) -> None:
    """Return once http://127.0.0.1:`port`/readyz answers 200. Fails after `timeout_s`, or as soon as `service` (the
    task running the service, if given) ends, with the last answer (or connection error) in the message."""
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    async with httpx.AsyncClient(timeout=5.0) as client:
        while True:
            if service is not None and service.done():
                error = None if service.cancelled() else service.exception()
                raise AssertionError(f"the service on port {port} ended before it was ready: {error!r}")
            try:
                response = await client.get(f"http://127.0.0.1:{port}/readyz")
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text[:300]}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            if time.monotonic() >= deadline:
                raise AssertionError(f"port {port}: /readyz not 200 after {timeout_s:.0f} s; last answer: {last}")
            await asyncio.sleep(POLL_S)
