"""Gateway benchmark: signed deliveries per second and latency over HTTPS, measured with wrk.

    python -m bench.gateway_bench [--connections 8,32,128] [--duration 10] [--threads 1] [--workers 1]
    python -m bench.gateway_bench --servers gateway --connections 32 --producer-records 0   # one change

Three servers, each a uvicorn process built by `gateway.server.build_config` (same TLS certificate,
worker count, event loop and HTTP parser), each loaded by wrk at every connection count:
1. `bare`: a FastAPI endpoint that reads the body and answers 200 (uvicorn + TLS + FastAPI ceiling);
2. `bare+kafka`: a FastAPI endpoint that awaits an aiokafka `send_and_wait` of the raw body with the
   gateway's producer settings (acks=all, idempotent): the ceiling of anything that answers after the ack;
3. `gateway`: the real gateway (verify, validate, Avro-encode, publish, answer after the ack), with its
   default settings (log level included).
Plus one line without HTTP: a bare aiokafka producer with the same settings, producing as fast as it can.

wrk cycles through many distinct, validly signed income.added deliveries (a Lua script written and
signed right before each run, so the timestamps are fresh). Kafka is `KAFKA_BOOTSTRAP_SERVERS` when set,
else a local broker started for the run. Any non-2xx answer or socket error fails the benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from bench import plot
from common.ports import free_port
from common.settings import KafkaSettings
from common.topics import TopicSpec, ensure_topics
from connector.local_kafka import NODE_PORT_SPAN, LocalKafka, LocalKafkaSettings
from gateway.producer import producer_options
from gateway.server import build_config, serve
from gateway.settings import GatewaySettings
from gateway.signature import sign
from gateway.tls import ensure_self_signed
from processors.topics import all_topics

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret"  # noqa: S105  # a throwaway test secret
ROUTE = "/webhooks/pinwheel"
RAW_TOPIC = "bench.gateway.raw"  # bare+kafka and the producer line write here, not to the family topics
WEBHOOK_ID = "420900d5-2ffb-4ad9-b2a6-38ef975f9b21"
PINWHEEL_VERSION = "2023-11-22"
OK = b'{"status":"ok"}'
SERVERS = {
    "bare": "bare FastAPI 200",
    "bare+kafka": "bare FastAPI + send_and_wait (acks=all)",
    "gateway": "gateway",
}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- the reference servers (run as `python -m bench.gateway_bench --serve KIND`) ---------------------


def reference_app(kind: str) -> FastAPI:
    """`bare` or `bare+kafka` (a module-level factory: uvicorn pickles it for several workers)."""
    if kind == "bare":
        app = FastAPI()

        @app.post(ROUTE)
        async def bare(request: Request) -> Response:
            await request.body()  # read the body, as the gateway must
            return Response(OK, media_type="application/json")

        return app

    producer: list[AIOKafkaProducer] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings = GatewaySettings()  # the same environment as the gateway
        producer.append(AIOKafkaProducer(**producer_options(settings, KafkaSettings())))
        await producer[0].start()
        try:
            yield
        finally:
            await producer[0].stop()

    app = FastAPI(lifespan=lifespan)

    @app.post(ROUTE)
    async def bare_kafka(request: Request) -> Response:
        await producer[0].send_and_wait(RAW_TOPIC, await request.body())
        return Response(OK, media_type="application/json")

    return app


def _serve_reference(kind: str) -> None:
    config = build_config(GatewaySettings())  # the gateway's options, from the env
    config.app = functools.partial(reference_app, kind)
    serve(config)


# -- load -----------------------------------------------------------------------------------------


def _bodies(count: int) -> list[bytes]:
    """income.added deliveries shaped like the sandbox capture (449 bytes), over 200 accounts."""
    accounts = [str(uuid.uuid4()) for _ in range(200)]
    out = []
    for i in range(count):
        payload: dict[str, object] = {
            "id": str(uuid.uuid4()),
            "name": "income",
            "timestamp": "2025-06-24T22:04:34.458089+00:00",
            "outcome": "success",
            "error_code": None,
            "error_type": None,
            "link_token_id": str(uuid.uuid4()),
            "params": {},
            "account_id": accounts[i % len(accounts)],
            "end_user_id": str(uuid.uuid4()),
        }
        body = {"event_id": str(uuid.uuid4()), "event": "income.added", "payload": payload}
        out.append(json.dumps(body).encode())  # Pinwheel's own separators
    return out


def _lua_string(data: bytes) -> str:
    return '"' + "".join(chr(b) if 32 <= b < 127 and b not in (34, 92) else f"\\{b:03d}" for b in data) + '"'


# Each wrk thread builds its requests once, starts at its own offset and cycles through them; done()
# prints the figures wrk does not (p99.9, error counts) as one JSON line.
_LUA_TEMPLATE = """
local deliveries = {
%(rows)s
}
local threads = 0
function setup(thread)
  thread:set("first", threads * 997)
  threads = threads + 1
end
function init(args)
  requests = {}
  for i, d in ipairs(deliveries) do
    requests[i] = wrk.format("POST", "%(route)s", {
      ["Host"] = "%(host)s",
      ["Content-Type"] = "application/json",
      ["Pinwheel-Version"] = "%(version)s",
      ["X-Pinwheel-Webhook-Id"] = "%(webhook_id)s",
      ["X-Timestamp"] = "%(timestamp)s",
      ["X-Pinwheel-Signature"] = d[1],
    }, d[2])
  end
  index = (first or 0) %% #requests
end
function request()
  index = index %% #requests + 1
  return requests[index]
end
function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %%d, "duration_us": %%d, "non_2xx": %%d, "socket_errors": %%d, '
    .. '"p50_us": %%d, "p99_us": %%d, "p999_us": %%d}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
"""


def _lua_script(port: int, bodies: list[bytes]) -> str:
    """The wrk script, signed now: run it right away (the gateway accepts 300 s of clock distance)."""
    timestamp = str(int(time.time()))
    rows = ",\n".join(
        f"  {{{_lua_string(sign(SECRET.encode(), timestamp, b).encode())}, {_lua_string(b)}}}" for b in bodies
    )
    return _LUA_TEMPLATE % {
        "rows": rows,
        "route": ROUTE,
        "host": f"127.0.0.1:{port}",
        "version": PINWHEEL_VERSION,
        "webhook_id": WEBHOOK_ID,
        "timestamp": timestamp,
    }


@dataclass(frozen=True)
class Run:
    server: str
    connections: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    non_2xx: int
    socket_errors: int
    wrk_cpu: float  # share of one core over the run
    server_cpu: float
    server_cpu_s: float  # CPU seconds of the server over the run: its cost per request, whatever the contention
    kafka_cpu: float | None  # the local broker's JVM; None for an external cluster

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_us_per_request(self) -> float:
        return self.server_cpu_s / max(1, self.requests) * 1e6

    @property
    def failed(self) -> bool:
        return self.non_2xx > 0 or self.socket_errors > 0


def _tree_cpu_s(root: int | None) -> float:
    """CPU seconds of a live process and its live descendants (the uvicorn workers)."""
    if root is None:
        return 0.0
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        # After the command name: state, ppid, ..., utime and stime are fields 14 and 15 of stat(5).
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
    total, frontier = 0.0, [root]
    while frontier:
        pid = frontier.pop()
        total += stats.get(pid, (0, 0.0))[1]
        frontier.extend(child for child, (ppid, _) in stats.items() if ppid == pid)
    return total


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _wrk(
    server: str,
    port: int,
    server_pid: int,
    kafka_pid: int | None,
    script: Path,
    connections: int,
    args: argparse.Namespace,
) -> Run:
    script.write_text(_lua_script(port, _bodies_cache(args.bodies)))
    cmd = [
        "wrk", f"-t{args.threads}", f"-c{connections}", f"-d{args.duration}s", "--timeout", "10s",
        "-s", str(script), f"https://127.0.0.1:{port}{ROUTE}",
    ]  # fmt: skip
    wrk_before, server_before, kafka_before = _children_cpu_s(), _tree_cpu_s(server_pid), _tree_cpu_s(kafka_pid)
    started = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    wrk_cpu, server_cpu = _children_cpu_s() - wrk_before, _tree_cpu_s(server_pid) - server_before
    kafka_cpu = _tree_cpu_s(kafka_pid) - kafka_before if kafka_pid is not None else None
    lines = [line for line in out.stdout.splitlines() if line.startswith("WRK_RESULT ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
    figures = json.loads(lines[-1].removeprefix("WRK_RESULT "))
    return Run(
        server=server,
        connections=connections,
        requests=figures["requests"],
        seconds=figures["duration_us"] / 1e6,
        p50_ms=figures["p50_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
        p999_ms=figures["p999_us"] / 1000,
        non_2xx=figures["non_2xx"],
        socket_errors=figures["socket_errors"],
        wrk_cpu=wrk_cpu / wall,
        server_cpu=server_cpu / wall,
        server_cpu_s=server_cpu,
        kafka_cpu=kafka_cpu / wall if kafka_cpu is not None else None,
    )


@functools.cache
def _bodies_cache(count: int) -> list[bytes]:
    return _bodies(count)


def _progress(run: Run) -> None:
    kafka = f", kafka {run.kafka_cpu:.0%}" if run.kafka_cpu is not None else ""
    print(
        f"  {run.server:<10} c={run.connections:<4} {run.rps:8,.0f} req/s  p50 {run.p50_ms:6.1f}  "
        f"p99 {run.p99_ms:6.1f}  p99.9 {run.p999_ms:6.1f} ms  non-2xx {run.non_2xx}  "
        f"CPU: server {run.server_cpu:.0%} ({run.cpu_us_per_request:,.0f} µs/req), wrk {run.wrk_cpu:.0%}{kafka}",
        flush=True,
    )


# -- servers and broker -----------------------------------------------------------------------------


def _wait_port(port: int, process: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
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
def _server(cmd: list[str], env: dict[str, str], port: int, log: Path) -> Iterator[int]:
    with log.open("ab") as out:
        process = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_port(port, process)
        yield process.pid
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


@contextmanager
def _kafka(work: Path) -> Iterator[tuple[str, int | None]]:
    """The bootstrap servers, and the local broker's pid (to report its CPU) when it is ours."""
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if bootstrap:
        yield bootstrap, None
        return

    broker = LocalKafka(LocalKafkaSettings(port=free_port(NODE_PORT_SPAN), data_dir=work / "kafka"))
    broker.start()
    try:
        yield broker.bootstrap, broker.pid()
    finally:
        broker.stop()


async def _ensure_topics(bootstrap: str) -> None:
    raw = TopicSpec(RAW_TOPIC, partitions=6)
    await ensure_topics(KafkaSettings(bootstrap_servers=bootstrap), [*all_topics(), raw])


@dataclass(frozen=True)
class ProducerRun:
    records: int
    seconds: float
    cpu_s: float

    @property
    def rps(self) -> float:
        return self.records / self.seconds


async def _produce_alone(bootstrap: str, bodies: list[bytes], count: int) -> ProducerRun:
    """A bare producer with the gateway's settings, as fast as it can: every send queued, then all acks."""
    settings = GatewaySettings(secrets=SECRET)  # type: ignore[arg-type]  # only its producer defaults
    producer = AIOKafkaProducer(**producer_options(settings, KafkaSettings(bootstrap_servers=bootstrap)))
    await producer.start()
    try:
        for body in bodies[:100]:  # warm-up: connections, metadata, producer id
            await producer.send_and_wait(RAW_TOPIC, body)
        cpu, started = time.process_time(), time.perf_counter()
        acks = [await producer.send(RAW_TOPIC, bodies[i % len(bodies)]) for i in range(count)]
        await asyncio.gather(*acks)
        return ProducerRun(count, time.perf_counter() - started, time.process_time() - cpu)
    finally:
        await producer.stop()


# -- report ---------------------------------------------------------------------------------------


def _report(runs: list[Run], alone: ProducerRun | None, args: argparse.Namespace) -> None:
    print(
        f"\nGateway benchmark: wrk -t{args.threads} -d{args.duration}s over HTTPS (TLS 1.3, keep-alive), "
        f"{args.bodies} distinct signed income.added deliveries (449 B), {args.workers} uvicorn worker(s), "
        f"{os.cpu_count()} CPUs\n"
    )
    print(
        "| connections | server | req/s | p50 ms | p99 ms | p99.9 ms | non-2xx "
        "| server CPU | server CPU µs/req | wrk CPU | Kafka CPU |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in sorted(runs, key=lambda r: (r.connections, list(SERVERS).index(r.server))):
        kafka = f"{r.kafka_cpu:.0%}" if r.kafka_cpu is not None else "—"
        print(
            f"| {r.connections} | {SERVERS[r.server]} | {r.rps:,.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | "
            f"{r.p999_ms:.1f} | {r.non_2xx + r.socket_errors} | {r.server_cpu:.0%} | {r.cpu_us_per_request:,.0f} | "
            f"{r.wrk_cpu:.0%} | {kafka} |"
        )
    if set(SERVERS) <= set(args.servers):
        print("\n| connections | gateway / bare | gateway / bare+kafka |")
        print("| --- | --- | --- |")
        by_key = {(r.server, r.connections): r.rps for r in runs}
        for c in args.connections:
            gateway = by_key[("gateway", c)]
            print(f"| {c} | {gateway / by_key[('bare', c)]:.2f} | {gateway / by_key[('bare+kafka', c)]:.2f} |")
    if alone is not None:
        print(
            f"\nbare aiokafka producer alone (no HTTP, same settings, acks=all): {alone.records:,} records in "
            f"{alone.seconds:.2f} s = **{alone.rps:,.0f} records/s**, {alone.cpu_s / alone.seconds:.0%} of a core"
        )


def _plot(runs: list[Run], args: argparse.Namespace) -> None:
    def series(value: str) -> dict[str, tuple[list[float], list[float]]]:
        out: dict[str, tuple[list[float], list[float]]] = {}
        for kind, label in SERVERS.items():  # every server ran (checked by the caller)
            mine = sorted((r for r in runs if r.server == kind), key=lambda r: r.connections)
            out[label] = ([r.connections for r in mine], [getattr(r, value) for r in mine])
        return out

    where = f"{args.workers} uvicorn worker(s), TLS, wrk -t{args.threads}"
    middle = sorted(args.connections)[len(args.connections) // 2]
    drawn = [
        plot.lines(
            plot.IMAGES / "gateway-throughput.png",
            f"Signed deliveries per second ({where})",
            "concurrent connections",
            "requests/s",
            series("rps"),
        ),
        plot.lines(
            plot.IMAGES / "gateway-p99.png",
            f"p99 latency ({where})",
            "concurrent connections",
            "p99 ms (log)",
            series("p99_ms"),
            log_y=True,
        ),
        plot.bars(
            plot.IMAGES / "gateway-cpu.png",
            f"Server CPU per request at {middle} connections ({where})",
            "µs of server CPU per request",
            {r.server: r.cpu_us_per_request for r in runs if r.connections == middle},
        ),
    ]
    print("\ncharts: " + ", ".join(str(p.relative_to(ROOT)) for p in drawn))


# -- main -----------------------------------------------------------------------------------------


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway_bench", description=__doc__)
    parser.add_argument("--connections", type=lambda s: [int(c) for c in s.split(",")], default=[8, 32, 128])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers of every server")
    parser.add_argument("--bodies", type=int, default=2000, help="distinct signed deliveries wrk cycles through")
    parser.add_argument(
        "--servers",
        type=lambda s: s.split(","),
        default=list(SERVERS),
        help="comma-separated subset of bare,bare+kafka,gateway (profiling one change at a time)",
    )
    parser.add_argument("--producer-records", type=int, default=50_000, help="0 skips the producer line")
    parser.add_argument("--no-plots", action="store_true", help="leave docs/img/ alone")
    parser.add_argument("--serve", choices=["bare", "bare+kafka"], help=argparse.SUPPRESS)  # a server subprocess
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.serve:
        _serve_reference(args.serve)
        return 0
    if shutil.which("wrk") is None:
        print("gateway_bench: wrk not found; install it with `apt-get install wrk`", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    cert, key = work / "bench.crt", work / "bench.key"
    ensure_self_signed(cert, key)
    runs: list[Run] = []
    try:
        with _kafka(work) as (bootstrap, kafka_pid):
            asyncio.run(_ensure_topics(bootstrap))
            env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")} | {
                "PYTHONPATH": str(ROOT),
                "GATEWAY_HOST": "127.0.0.1",
                "GATEWAY_TLS_CERT_FILE": str(cert),
                "GATEWAY_TLS_KEY_FILE": str(key),
                "GATEWAY_SECRETS": SECRET,
                "GATEWAY_SPOOL_DIR": str(work / "spool"),
                "GATEWAY_WORKERS": str(args.workers),
                "GATEWAY_ADMIN_PORT": str(free_port()),  # /readyz, /metrics: not the default, which may be taken
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            }
            for kind in args.servers:
                port = free_port()
                cmd = [sys.executable, "-m", "gateway"]
                if kind != "gateway":
                    cmd = [sys.executable, "-m", "bench.gateway_bench", "--serve", kind]
                print(f"{SERVERS[kind]}:", flush=True)
                with _server(cmd, env | {"GATEWAY_PORT": str(port)}, port, work / f"{kind}.log") as pid:
                    warm = argparse.Namespace(**{**vars(args), "duration": 3})
                    _wrk(kind, port, pid, kafka_pid, work / "load.lua", max(args.connections), warm)  # not counted
                    for connections in args.connections:
                        runs.append(_wrk(kind, port, pid, kafka_pid, work / "load.lua", connections, args))
                        _progress(runs[-1])
            alone = None
            if args.producer_records:
                print("bare aiokafka producer, no HTTP:", flush=True)
                alone = asyncio.run(_produce_alone(bootstrap, _bodies_cache(args.bodies), args.producer_records))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    _report(runs, alone, args)
    if not args.no_plots and set(SERVERS) <= set(args.servers):
        _plot(runs, args)
    failed = [r for r in runs if r.failed]
    for r in failed:
        print(
            f"FAILED: {SERVERS[r.server]} at {r.connections} connections: {r.non_2xx} non-2xx answers, "
            f"{r.socket_errors} socket errors",
            file=sys.stderr,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
