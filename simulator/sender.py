"""Delivering the planned traffic the way Pinwheel does (imperative shell around traffic/retry/ledger).

Each delivery waits for its due time, then POSTs the exact body over HTTPS with `x-timestamp` = the send
time of *that attempt* and `x-pinwheel-signature` computed for it (every retry is re-signed). A 5xx or a
network failure (timeout, refused or dropped connection) is retried on the RetryPolicy's schedule; any
other answer is final. Every attempt goes to the ledger; the secret never does.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson

from common.progress import ProgressBar
from simulator.ledger import Attempt, LedgerWriter, Result
from simulator.retry import RetryPolicy, is_accepted, is_retryable, next_delay, retry_delays
from simulator.traffic import PlannedDelivery, PlannedEvent, planned_deliveries


@dataclass(frozen=True, slots=True)
class SendOptions:
    url: str
    secret: bytes = field(repr=False)
    ca_file: Path | None = None
    rate: float = 0.0  # attempts per second, 0 = unlimited
    concurrency: int = 32
    timeout_s: float = 15.0
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    seed: int = 1

    def __post_init__(self) -> None:
        if not self.url.startswith("https://"):
            raise ValueError("the webhook URL must be https:// (Pinwheel only delivers over HTTPS)")
        if not self.secret:
            raise ValueError("a signing secret is required")


@dataclass(slots=True)
class SimulationResult:
    deliveries: int = 0
    attempts: int = 0
    accepted_deliveries: int = 0
    rejected_deliveries: int = 0  # a final non-2xx answer (4xx)
    gave_up_deliveries: int = 0  # retries exhausted (5xx / network failures)
    statuses: Counter[str] = field(default_factory=Counter)
    accepted_events: set[str] = field(default_factory=set)
    elapsed_s: float = 0.0


class RateLimiter:
    """At most `rate` acquisitions per second, evenly spaced (0 = unlimited)."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()
        self._clock = clock
        self._sleep = sleep

    async def acquire(self) -> None:
        if self.interval == 0.0:
            return
        async with self._lock:
            now = self._clock()
            wait = self._next - now
            self._next = max(now, self._next) + self.interval
        if wait > 0:
            await self._sleep(wait)


def classify_error(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connect_error"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "protocol_error"
    if isinstance(exc, httpx.ReadError):
        return "read_error"
    if isinstance(exc, httpx.WriteError):
        return "write_error"
    return "network_error"


def _reason(response: httpx.Response) -> str | None:
    """The gateway's short reason code (e.g. `family`, `bad_signature`), if the answer carries one."""
    try:
        body = orjson.loads(response.content[:2048])
    except orjson.JSONDecodeError:
        return None
    reason = body.get("reason") if isinstance(body, dict) else None
    return reason if isinstance(reason, str) and len(reason) <= 64 else None


def ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    if ca_file is None:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=str(ca_file))


def build_client(options: SendOptions) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=options.concurrency, max_keepalive_connections=options.concurrency)
    return httpx.AsyncClient(verify=ssl_context(options.ca_file), timeout=options.timeout_s, limits=limits)


def pinwheel_signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """`x-pinwheel-signature` as Pinwheel computes it: v2=hex(HMAC-SHA256(secret, "v2:" + timestamp + ":" + body)).

    Written from Pinwheel's documentation, not shared with the gateway: the simulator plays Pinwheel, so a
    gateway that drifted from the documented scheme is refused by its own tests (tests/simulator).
    """
    return "v2=" + hmac.new(secret, b"v2:%d:" % timestamp + body, hashlib.sha256).hexdigest()


def signed_headers(event: PlannedEvent, secret: bytes, timestamp: int) -> dict[str, str]:
    headers = dict(event.headers)
    headers["X-Timestamp"] = str(timestamp)
    headers["X-Pinwheel-Signature"] = pinwheel_signature(secret, timestamp, event.body)
    return headers


class Sender:
    def __init__(
        self,
        options: SendOptions,
        client: httpx.AsyncClient,
        ledger: LedgerWriter | None,
        on_done: Callable[[PlannedDelivery, Result], None] | None = None,
    ) -> None:
        self.options = options
        self.client = client
        self.ledger = ledger
        self.on_done = on_done
        self.limiter = RateLimiter(options.rate)
        self.slots = asyncio.Semaphore(options.concurrency)
        self.result = SimulationResult()

    async def attempt(
        self, delivery: PlannedDelivery, number: int
    ) -> tuple[int | None, str | None, float, str | None, str]:
        """One POST: (status, network error, latency ms, gateway reason, send time)."""
        event = delivery.event
        async with self.slots:
            await self.limiter.acquire()
            sent = time.time()
            headers = signed_headers(event, self.options.secret, int(sent))
            started = time.perf_counter()
            try:
                response = await self.client.post(self.options.url, content=event.body, headers=headers)
            except httpx.TransportError as exc:
                latency = (time.perf_counter() - started) * 1000
                return None, classify_error(exc), latency, None, _iso(sent)
            latency = (time.perf_counter() - started) * 1000
            return response.status_code, None, latency, _reason(response), _iso(sent)

    async def deliver(self, delivery: PlannedDelivery, start: float) -> None:
        loop = asyncio.get_running_loop()
        wait = start + delivery.due_s - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        event = delivery.event
        policy = self.options.policy
        rng = random.Random(f"{self.options.seed}:{event.event_id}:{delivery.number}")
        delays = retry_delays(policy, rng)
        first = loop.time()
        number = 1
        while True:
            status, error, latency, reason, sent_at = await self.attempt(delivery, number)
            self.result.attempts += 1
            self.result.statuses[str(status) if status is not None else (error or "error")] += 1
            delay = None
            if is_accepted(status):
                result: Result = "accepted"
            elif is_retryable(status, error):
                delay = next_delay(delays, number, loop.time() - first, policy)
                result = "retry" if delay is not None else "gave_up"
            else:
                result = "rejected"
            if self.ledger is not None:
                self.ledger.write(
                    Attempt(
                        event.event_id,
                        event.event_type,
                        event.account_id,
                        delivery.number,
                        number,
                        sent_at,
                        status,
                        error,
                        round(latency, 3),
                        result,
                        reason,
                        None if delay is None else round(delay, 4),
                    ).record()
                )
            if result != "retry":
                break
            assert delay is not None
            await asyncio.sleep(delay)
            number += 1
        if result == "accepted":
            self.result.accepted_deliveries += 1
            self.result.accepted_events.add(event.event_id)
        elif result == "rejected":
            self.result.rejected_deliveries += 1
        else:
            self.result.gave_up_deliveries += 1
        if self.on_done is not None:
            self.on_done(delivery, result)

    async def run(self, events: Sequence[PlannedEvent]) -> SimulationResult:
        planned = planned_deliveries(events)
        self.result.deliveries = len(planned)
        start = asyncio.get_running_loop().time()
        began = time.monotonic()
        await asyncio.gather(*(self.deliver(d, start) for d in planned))
        self.result.elapsed_s = time.monotonic() - began
        return self.result


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")


async def send_all(
    events: Sequence[PlannedEvent],
    options: SendOptions,
    ledger: LedgerWriter | None = None,
    progress: ProgressBar | None = None,
    client: httpx.AsyncClient | None = None,
) -> SimulationResult:
    """Deliver every event (and duplicate) of `events`; returns the counts. Writes attempts to `ledger`."""
    counts: Counter[str] = Counter()

    def on_done(delivery: PlannedDelivery, result: Result) -> None:
        counts[result] += 1
        if progress is not None:
            failed = counts["rejected"] + counts["gave_up"]
            progress.update(1, f"ok={counts['accepted']} failed={failed}")

    own_client = client is None
    http = client if client is not None else build_client(options)
    try:
        return await Sender(options, http, ledger, on_done).run(events)
    finally:
        if own_client:
            await http.aclose()
