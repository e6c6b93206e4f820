"""A light load generator for the end-to-end bench: pre-built deliveries POSTed at an even rate.

    PACED_SENDER_SECRET=... python -m bench.paced_sender --traffic T --url U --ca-file C --ledger L \
        [--rate 0] [--connections 8] [--seed 1]

The simulator's httpx client costs a few milliseconds of CPU per delivery, which on a small machine makes the
load generator the bottleneck of the system it measures. This sender does only what a delivery needs: it reads
the events the simulator's traffic generator planned (`write_traffic` / `read_traffic`: same bodies, duplicates,
pending jobs and their finals), signs each attempt right before sending with the simulator's own header
function, and writes over a few keep-alive HTTP/1.1 connections on plain asyncio streams.

Deliveries go out in the order of their due times (so out-of-order arrival and duplicates stay as planned), at
`--rate` first attempts per second evenly spaced, or with `--rate 0` as fast as `--connections` requests in
flight allow; the due times' spacing itself is not kept. A 5xx or a network failure is retried on the
simulator's retry schedule compressed 100 times (the first retry after 0.14-0.28 s, at most 5). Every attempt
goes to a ledger in the simulator's format, so `verify` compares it as it does a simulator run; the `end`
record adds this process's CPU seconds spent sending (`cpu_s`, `cpu_ms_per_delivery`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import ssl
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import orjson

from connector.run import Service
from simulator.ledger import Attempt, LedgerWriter, Result
from simulator.retry import RetryPolicy, is_accepted, is_retryable, next_delay, retry_delays
from simulator.sender import signed_headers, ssl_context
from simulator.traffic import PlannedDelivery, PlannedEvent, planned_deliveries

SECRET_ENV: Final = "PACED_SENDER_SECRET"  # noqa: S105  # the variable's name, not a secret
TIMEOUT_S: Final = 15.0  # Pinwheel waits 15 s for an answer
POLICY: Final = RetryPolicy(time_scale=0.01)  # as the bench ran the simulator: 15 minutes of retries become 9 s
# The gateway's keep-alive timeout is a few seconds: a connection idle longer is reopened before use rather
# than written to and found closed, which would show up as a retry in the ledger.
MAX_IDLE_S: Final = 2.0


# -- the traffic file ------------------------------------------------------------------------------------


def write_traffic(path: Path, events: Sequence[PlannedEvent]) -> None:
    """The planned events as JSON lines, bodies byte-exact (the sender signs them as they are)."""
    with path.open("wb") as fh:
        for e in events:
            record = {
                "event_id": e.event_id,
                "event_type": e.event_type,
                "account_id": e.account_id,
                "job_id": e.job_id,
                "outcome": e.outcome,
                "occurred_at": e.occurred_at,
                "source": e.source,
                "body": e.body.decode(),
                "due_s": e.due_s,
                "headers": e.headers,
            }
            fh.write(orjson.dumps(record) + b"\n")


def read_traffic(path: Path) -> list[PlannedEvent]:
    with path.open("rb") as fh:
        return [_event(orjson.loads(line)) for line in fh if line.strip()]


def _event(r: Mapping[str, object]) -> PlannedEvent:
    return PlannedEvent(
        event_id=str(r["event_id"]),
        event_type=str(r["event_type"]),
        account_id=_opt(r["account_id"]),
        job_id=_opt(r["job_id"]),
        outcome=_opt(r["outcome"]),
        occurred_at=_opt(r["occurred_at"]),
        source="capture" if r["source"] == "capture" else "generated",
        body=str(r["body"]).encode(),
        due_s=tuple(_number(x) for x in _list(r["due_s"])),
        headers=tuple((str(h[0]), str(h[1])) for h in map(_list, _list(r["headers"]))),
    )


def _opt(value: object) -> str | None:
    return None if value is None else str(value)


def _list(value: object) -> list[object]:
    assert isinstance(value, list)
    return value


def _number(value: object) -> float:
    assert isinstance(value, int | float)
    return float(value)


# -- a minimal HTTP/1.1 client ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    path: str
    tls: ssl.SSLContext

    @classmethod
    def parse(cls, url: str, ca_file: Path | None) -> Target:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError("the webhook URL must be https://host[:port]/path")
        return cls(parts.hostname, parts.port or 443, parts.path or "/", ssl_context(ca_file))


class NetworkError(Exception):
    """A failed exchange; `kind` is the simulator's error name (connect_error, read_error, ...)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class Connection:
    """One keep-alive connection, (re)opened on demand; closed after any failure or a `Connection: close`."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.last_used = 0.0

    async def post(self, headers: Mapping[str, str], body: bytes) -> tuple[int, bytes]:
        """(status, response body); raises NetworkError."""
        try:
            async with asyncio.timeout(TIMEOUT_S):
                return await self._exchange(headers, body)
        except TimeoutError:
            self.close()
            raise NetworkError("timeout") from None

    async def _exchange(self, headers: Mapping[str, str], body: bytes) -> tuple[int, bytes]:
        if self.streams is not None and time.monotonic() - self.last_used > MAX_IDLE_S:
            self.close()
        if self.streams is None:
            try:
                self.streams = await asyncio.open_connection(
                    self.target.host, self.target.port, ssl=self.target.tls, server_hostname=self.target.host
                )
            except OSError:
                raise NetworkError("connect_error") from None
        reader, writer = self.streams
        try:
            writer.write(self._request(headers, body))
            await writer.drain()
            status, close, payload = await _read_response(reader)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            self.close()
            raise NetworkError("read_error") from None
        except ValueError:
            self.close()
            raise NetworkError("protocol_error") from None
        self.last_used = time.monotonic()
        if close:
            self.close()
        return status, payload

    def _request(self, headers: Mapping[str, str], body: bytes) -> bytes:
        t = self.target
        lines = [f"POST {t.path} HTTP/1.1", f"Host: {t.host}:{t.port}", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()  # no wait for the TLS close_notify: the connection is done with either way
            self.streams = None


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool, bytes]:
    """(status, whether the server closes the connection, body); only Content-Length bodies (the gateway's)."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    version, status, *_ = head[0].split(" ", 2)
    if not version.startswith("HTTP/1."):
        raise ValueError(f"not an HTTP/1.x status line: {head[0]!r}")
    fields = {name.strip().lower(): value.strip() for name, _, value in (h.partition(":") for h in head[1:] if h)}
    if "transfer-encoding" in fields:
        raise ValueError("chunked responses are not supported")
    body = await reader.readexactly(int(fields.get("content-length", "0")))
    return int(status), fields.get("connection", "").lower() == "close", body


def gateway_reason(body: bytes) -> str | None:
    """The gateway's short reason code (`family`, `other`, ...): verify expects no update for the others."""
    try:
        decoded = orjson.loads(body[:2048])
    except orjson.JSONDecodeError:
        return None
    reason = decoded.get("reason") if isinstance(decoded, dict) else None
    return reason if isinstance(reason, str) and len(reason) <= 64 else None


# -- pacing, retries and the ledger ----------------------------------------------------------------------


@dataclass(slots=True)
class Job:
    delivery: PlannedDelivery
    attempt: int = 1
    first_at: float = 0.0
    delays: list[float] | None = None  # the retry schedule, drawn at the first retry (most never need one)


@dataclass(slots=True)
class Sender:
    target: Target
    secret: bytes
    ledger: LedgerWriter
    seed: int
    queue: asyncio.Queue[Job] = field(default_factory=asyncio.Queue)
    results: Counter[str] = field(default_factory=Counter)
    attempts: int = 0
    outstanding: int = 0
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, planned: Sequence[PlannedDelivery], rate: float, connections: int) -> None:
        self.outstanding = len(planned)
        # A task group, so that a worker's unexpected error ends the run instead of leaving it waiting forever.
        async with asyncio.TaskGroup() as group:
            workers = [group.create_task(self._worker(Connection(self.target))) for _ in range(connections)]
            await self._pace(planned, rate)
            await self.finished.wait()
            for worker in workers:
                worker.cancel()

    async def _pace(self, planned: Sequence[PlannedDelivery], rate: float) -> None:
        """Releases the first attempts: at start + i/rate (no drift), or all at once with rate 0."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i, delivery in enumerate(planned):
            if rate > 0:
                wait = start + i / rate - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
            self.queue.put_nowait(Job(delivery))

    async def _worker(self, connection: Connection) -> None:
        try:
            while True:
                await self._attempt(connection, await self.queue.get())
        finally:
            connection.close()

    async def _attempt(self, connection: Connection, job: Job) -> None:
        loop = asyncio.get_running_loop()
        event = job.delivery.event
        if job.attempt == 1:
            job.first_at = loop.time()
        sent = time.time()
        headers = signed_headers(event, self.secret, int(sent))  # signed for this very attempt
        started = time.perf_counter()
        status: int | None = None
        error = reason = None
        try:
            status, body = await connection.post(headers, event.body)
            reason = gateway_reason(body)
        except NetworkError as exc:
            error = exc.kind
        latency_ms = (time.perf_counter() - started) * 1000
        result, delay = self._judge(job, status, error, loop.time())
        self.attempts += 1
        self.ledger.write(
            Attempt(
                event.event_id,
                event.event_type,
                event.account_id,
                job.delivery.number,
                job.attempt,
                _iso(sent),
                status,
                error,
                round(latency_ms, 3),
                result,
                reason,
                None if delay is None else round(delay, 4),
            ).record()
        )
        if delay is not None:
            job.attempt += 1
            loop.call_later(delay, self.queue.put_nowait, job)
            return
        self.results[result] += 1
        self.outstanding -= 1
        if self.outstanding == 0:
            self.finished.set()

    def _judge(self, job: Job, status: int | None, error: str | None, now: float) -> tuple[Result, float | None]:
        """The attempt's ledger result and, for a retry, the wait before the next attempt."""
        if is_accepted(status):
            return "accepted", None
        if not is_retryable(status, error):
            return "rejected", None
        if job.delays is None:
            # Seeded like the simulator's, so a replay retries on the same schedule.
            rng = random.Random(f"{self.seed}:{job.delivery.event.event_id}:{job.delivery.number}")
            job.delays = retry_delays(POLICY, rng)
        delay = next_delay(job.delays, job.attempt, now - job.first_at, POLICY)
        return ("retry", delay) if delay is not None else ("gave_up", None)


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def send(events: Sequence[PlannedEvent], args: argparse.Namespace, secret: bytes) -> bool:
    """Deliver every event and duplicate, ledger written; True when every delivery was accepted."""
    target = Target.parse(args.url, args.ca_file)
    planned = planned_deliveries(events)
    ledger = LedgerWriter(args.ledger)
    try:
        started = datetime.now(UTC)
        ledger.write(
            {
                "kind": "run",
                "run_id": uuid.uuid4().hex[:12],
                "started_at": started.isoformat(),
                "url": args.url,
                "seed": args.seed,
                "events": len(events),
                "deliveries": len(planned),
                "sender": "bench.paced_sender",
                "rate": args.rate,
                "connections": args.connections,
            }
        )
        for event in events:
            ledger.write(event.ledger_record())
        sender = Sender(target, secret, ledger, args.seed)
        cpu_before, began = cpu_seconds(), time.monotonic()
        await sender.run(planned, args.rate, args.connections)
        cpu_s, elapsed_s = cpu_seconds() - cpu_before, time.monotonic() - began
        summary = {
            "kind": "end",
            "finished_at": datetime.now(UTC).isoformat(),
            "deliveries": len(planned),
            "attempts": sender.attempts,
            **{f"{result}_deliveries": n for result, n in sorted(sender.results.items())},
            "elapsed_s": round(elapsed_s, 3),
            "cpu_s": round(cpu_s, 3),
            "cpu_ms_per_delivery": round(cpu_s * 1000 / max(1, len(planned)), 4),
        }
        ledger.write(summary)
    finally:
        ledger.close()
    print(orjson.dumps(summary).decode(), flush=True)
    return sender.results["accepted"] == len(planned)


def start(name: str, argv: Sequence[str], secret: str, log: Path) -> Service:
    """This module as a process of its own (the caller's CPU and event loop stay undisturbed)."""
    with log.open("ab") as fh:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.paced_sender", *argv],
            env={**os.environ, SECRET_ENV: secret},  # not on the command line, where `ps` would show it
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the caller only; it stops this process itself
        )
    return Service(name, process, log)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traffic", type=Path, required=True, help="events written by write_traffic")
    parser.add_argument("--url", required=True, help="the gateway's webhook endpoint (https)")
    parser.add_argument("--ca-file", type=Path, default=None, help="PEM certificate trusted for the gateway's TLS")
    parser.add_argument("--ledger", type=Path, required=True)
    parser.add_argument("--rate", type=float, default=0.0, help="first attempts per second (0: as fast as possible)")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections, one request each")
    parser.add_argument("--seed", type=int, default=1, help="seeds the retry jitter")
    args = parser.parse_args()
    secret = os.environ.get(SECRET_ENV, "")
    if not secret:
        parser.error(f"{SECRET_ENV} must hold the signing secret")
    ok = asyncio.run(send(read_traffic(args.traffic), args, secret.encode()))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
