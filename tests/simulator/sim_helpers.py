"""Helpers of the simulator tests: a run through the real pipeline, observed as `verify` does; a misbehaving
HTTPS webhook receiver (a real TLS server on asyncio)."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import orjson

from common.settings import KafkaSettings
from gateway.signature import Verified, verify
from simulator.ledger import Ledger, read_ledger
from simulator.settings import SimulatorSettings
from simulator.simulate import SimulationRun, simulate
from simulator.traffic import PlannedEvent
from simulator.verify import Expectations, UpdateCollector, UpdateView, complete, expectations
from tests.health import wait_ready


@dataclass
class Observed:
    """A simulated run and the account updates of it that the processors committed."""

    run: SimulationRun
    ledger: Ledger
    expected: Expectations
    updates: list[UpdateView]


async def deliver_and_collect(
    kafka: KafkaSettings,
    sim: SimulatorSettings,
    events: Sequence[PlannedEvent],
    started_at: datetime,
    *,
    secret: str,
    processor: asyncio.Task[None],
    health_port: int,
    stop: asyncio.Event,
    wait_s: float = 60.0,
) -> Observed:
    """Once the processor (its health endpoints on `health_port`) is ready, deliver `events` to the gateway as
    Pinwheel would, then read this run's updates until every expected one is committed (or `wait_s` passed); the
    processor is stopped in every case."""
    collector = await UpdateCollector(kafka, {e.event_id for e in events}, from_end=True).start()
    try:
        await wait_ready(health_port, service=processor)  # joined its group, restored its (empty) state
        run = await simulate(sim, secret=secret, events=events, started_at=started_at)
        ledger = read_ledger(sim.ledger)
        expected = expectations(ledger)
        await collector.run_until(lambda: complete(ledger, collector.updates, expected), time.monotonic() + wait_s)
    finally:
        await collector.stop()
        stop.set()
        await asyncio.wait_for(processor, 60)
    return Observed(run, ledger, expected, collector.updates)


# What the server does with one request: "ok" (200), "<status>" (e.g. "503"), "slow" (answer after
# SLOW_S), "drop" (close the connection without an answer).
Action = str
SLOW_S = 1.5


@dataclass
class Seen:
    event_id: str
    attempt: int  # 1-based, per event_id
    at: float  # monotonic receive time
    x_timestamp: int
    signature_ok: bool
    action: Action


@dataclass
class FlakyReceiver:
    action_for: Callable[[str, int], Action]
    secret: bytes
    cert: Path
    key: Path
    seen: list[Seen] = field(default_factory=list)
    _server: asyncio.Server | None = None
    port: int = 0

    async def start(self) -> FlakyReceiver:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/webhooks/pinwheel"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def attempts(self, event_id: str) -> list[Seen]:
        return [s for s in self.seen if s.event_id == event_id]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                event_id = str(orjson.loads(body)["event_id"])
                attempt = len(self.attempts(event_id)) + 1
                action = self.action_for(event_id, attempt)
                ts = int(headers.get("x-timestamp", "0"))
                verdict = verify(headers, body, [self.secret], now=ts, tolerance_s=5)
                self.seen.append(Seen(event_id, attempt, time.monotonic(), ts, isinstance(verdict, Verified), action))
                if action == "drop":
                    writer.transport.abort()
                    return
                if action == "slow":
                    await asyncio.sleep(SLOW_S)
                    action = "ok"
                status = 200 if action == "ok" else int(action)
                answer = orjson.dumps({"status": "published" if status == 200 else "unavailable", "reason": "family"})
                head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(answer)}\r\n\r\n"
                writer.write(head.encode() + answer)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            return
        finally:
            writer.close()
