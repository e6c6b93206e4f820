"""Gateway benchmark: signed deliveries per second and latency over HTTPS, against a bare endpoint.

    python -m bench.gateway_bench [--requests 6000] [--concurrency 32] [--workers 1]

Runs, each as a uvicorn subprocess with the same TLS certificate and worker count:
1. `bare`: a FastAPI app whose POST returns 200 at once (the ceiling of uvicorn + TLS + FastAPI here);
2. `gateway`: the real gateway (verify, validate, Avro-encode, publish with acks=all, answer after the ack).
The load generator is a minimal keep-alive HTTP/1.1 client over TLS (one connection per concurrent
sender), lighter than a general-purpose client so the servers, not the client, are measured. Kafka is
`KAFKA_BOOTSTRAP_SERVERS` when set, else a local broker started for the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from gateway.signature import sign
from gateway.tls import ensure_self_signed

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret"  # noqa: S105  # a throwaway test secret
ROUTE = "/webhooks/pinwheel"

bare_app = FastAPI()


@bare_app.post(ROUTE)
async def _bare(request: Request) -> Response:
    await request.body()  # read the body, as the gateway must
    return Response(b'{"status":"ok"}', media_type="application/json")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bodies(count: int) -> list[bytes]:
    """Pinwheel-shaped income.added deliveries over 200 accounts."""
    accounts = [str(uuid.uuid4()) for _ in range(200)]
    out = []
    for i in range(count):
        payload: dict[str, object] = {
            "id": str(uuid.uuid4()),
            "name": "income",
            "timestamp": "2025-06-24T22:04:34.383896+00:00",
            "outcome": "success",
            "error_code": None,
            "error_type": None,
            "link_token_id": str(uuid.uuid4()),
            "params": {},
            "account_id": accounts[i % len(accounts)],
            "end_user_id": str(uuid.uuid4()),
        }
        out.append(json.dumps({"event_id": str(uuid.uuid4()), "event": "income.added", "payload": payload}).encode())
    return out


def _request(port: int, body: bytes) -> bytes:
    ts = int(time.time())
    head = (
        f"POST {ROUTE} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nPinwheel-Version: 2023-11-22\r\n"
        f"X-Pinwheel-Webhook-Id: 420900d5-2ffb-4ad9-b2a6-38ef975f9b21\r\nX-Timestamp: {ts}\r\n"
        f"X-Pinwheel-Signature: {sign(SECRET.encode(), ts, body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class Result:
    name: str
    requests: int
    seconds: float
    latencies: list[float]
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def _sender(port: int, context: ssl.SSLContext, requests: list[bytes], latencies: list[float]) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    errors = 0
    try:
        for raw in requests:
            started = time.perf_counter()
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if not head.startswith(b"HTTP/1.1 200"):
                errors += 1
    finally:
        writer.close()
    return errors


async def _load(name: str, port: int, cert: Path, bodies: list[bytes], concurrency: int) -> Result:
    context = ssl.create_default_context(cafile=str(cert))
    warmup = [_request(port, b) for b in bodies[: concurrency * 5]]
    await asyncio.gather(*(_sender(port, context, warmup[i::concurrency], []) for i in range(concurrency)))
    requests = [_request(port, b) for b in bodies[concurrency * 5 :]]
    latencies: list[float] = []
    started = time.perf_counter()
    errors = await asyncio.gather(
        *(_sender(port, context, requests[i::concurrency], latencies) for i in range(concurrency))
    )
    return Result(name, len(requests), time.perf_counter() - started, latencies, sum(errors))


def _wait_port(port: int, process: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                time.sleep(1.0)  # every worker up and its producer started
                return
        time.sleep(0.1)
    raise RuntimeError("server did not start")


@contextmanager
def _server(cmd: list[str], env: dict[str, str], port: int, log: Path) -> Iterator[None]:
    with log.open("ab") as out:
        process = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_port(port, process)
        yield
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


@contextmanager
def _kafka(work: Path) -> Iterator[str]:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if bootstrap:
        yield bootstrap
        return
    from connector.local_kafka import LocalKafka
    from connector.settings import LocalKafkaSettings

    broker = LocalKafka(LocalKafkaSettings(port=_free_port(), data_dir=work / "kafka"))
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway_bench", description=__doc__)
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)

    from connector.settings import KafkaSettings
    from connector.topics import all_topics, ensure_topics

    work = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    cert, key = work / "bench.crt", work / "bench.key"
    ensure_self_signed(cert, key)
    bodies = _bodies(args.requests + args.concurrency * 5)
    results: list[Result] = []
    try:
        with _kafka(work) as bootstrap:
            asyncio.run(ensure_topics(KafkaSettings(bootstrap_servers=bootstrap), all_topics()))
            base_env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
            base_env["PYTHONPATH"] = str(ROOT)
            port = _free_port()
            bare = [
                sys.executable, "-m", "uvicorn", "bench.gateway_bench:bare_app", "--host", "127.0.0.1",
                "--port", str(port), "--ssl-certfile", str(cert), "--ssl-keyfile", str(key),
                "--workers", str(args.workers), "--no-access-log", "--log-level", "warning",
            ]  # fmt: skip
            with _server(bare, base_env, port, work / "bare.log"):
                results.append(asyncio.run(_load("bare FastAPI 200", port, cert, bodies, args.concurrency)))
            port = _free_port()
            env = base_env | {
                "GATEWAY_HOST": "127.0.0.1",
                "GATEWAY_PORT": str(port),
                "GATEWAY_TLS_CERT_FILE": str(cert),
                "GATEWAY_TLS_KEY_FILE": str(key),
                "GATEWAY_SECRETS": SECRET,
                "GATEWAY_SPOOL_DIR": str(work / "spool"),
                "GATEWAY_WORKERS": str(args.workers),
                "GATEWAY_LOG_LEVEL": "WARNING",
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            }
            with _server([sys.executable, "-m", "gateway"], env, port, work / "gateway.log"):
                results.append(
                    asyncio.run(_load("gateway (verify+Avro+acks=all)", port, cert, bodies, args.concurrency))
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nGateway benchmark: {args.requests} signed income.added deliveries over HTTPS (TLS 1.3, keep-alive),")
    print(f"concurrency {args.concurrency}, {args.workers} uvicorn worker(s), {os.cpu_count()} CPUs\n")
    print("| server | req/s | p50 ms | p99 ms | non-200 |")
    print("| --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r.name} | {r.rps:,.0f} | {r.pct(0.50):.1f} | {r.pct(0.99):.1f} | {r.errors} |")
    bare_result, gateway_result = results
    print(f"\nratio gateway/bare throughput: {gateway_result.rps / bare_result.rps:.2f}")
    print(f"mean gateway latency: {statistics.fmean(gateway_result.latencies) * 1000:.1f} ms")
    return 1 if any(r.errors for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
