"""Helpers shared by the gateway tests (`from tests.gateway.gateway_helpers import ...`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from common.ports import free_port
from connector.local_kafka import LocalKafka
from gateway.settings import GatewaySettings
from gateway.signature import sign
from schemas.catalog import GATEWAY_TOPICS

SECRET = "whsec-test-3f1c9a7e-do-not-log"
OTHER_SECRET = "whsec-rotated-8d2b6f04-do-not-log"
WEBHOOK_ID = "420900d5-2ffb-4ad9-b2a6-38ef975f9b21"
VERSION = "2023-11-22"
ROOT = Path(__file__).resolve().parents[2]


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


def gateway_settings(tls_pair: tuple[Path, Path], spool_dir: Path, **overrides: Any) -> GatewaySettings:
    cert, key = tls_pair
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": free_port(),
        "admin_port": free_port(),
        "tls_cert_file": cert,
        "tls_key_file": key,
        "secrets": [SECRET],
        "spool_dir": spool_dir,
        "publish_timeout_s": 5.0,
        "shutdown_timeout_s": 10.0,
    }
    values.update(overrides)
    return GatewaySettings(**values)


class TopicTail:
    """Reads what was written to some topics after it was created (end offsets taken at start)."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self.start_offsets: dict[TopicPartition, int] = {}

    async def start(self) -> TopicTail:
        await self.consumer.start()
        partitions = [
            TopicPartition(topic, p)
            for topic in self.topics
            for p in sorted(self.consumer.partitions_for_topic(topic) or await self._partitions(topic))
        ]
        self.consumer.assign(partitions)
        self.start_offsets = await self.consumer.end_offsets(partitions)
        for tp, offset in self.start_offsets.items():
            self.consumer.seek(tp, offset)
        return self

    async def _partitions(self, topic: str) -> set[int]:
        await self.consumer._client.force_metadata_update()
        return self.consumer.partitions_for_topic(topic) or set()

    async def collect(self, done: Callable[[list[Any]], bool], timeout_s: float = 30.0) -> list[Any]:
        """Records read so far (in per-partition order) once `done(records)` or the timeout."""
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batch = await self.consumer.getmany(timeout_ms=500, max_records=5000)
            for tp in sorted(batch, key=lambda t: (t.topic, t.partition)):
                records.extend(batch[tp])
            if done(records):
                break
        return records

    async def stop(self) -> None:
        await self.consumer.stop()


class RawConnection:
    """A minimal keep-alive HTTP/1.1 client over TLS: far cheaper per request than a general client, so load
    tests measure the gateway rather than the client. Reconnects when the server closed the connection."""

    def __init__(self, host: str, port: int, context: Any) -> None:
        self.host, self.port, self.context = host, port, context
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        """Open the connection (TCP + TLS) unless an open one is kept alive."""
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port, ssl=self.context)

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        import json

        await self.connect()
        assert self.reader is not None
        assert self.writer is not None
        lines = [f"POST {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length, close = 0, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
            elif name.strip().lower() == b"connection" and value.strip().lower() == b"close":
                close = True
        payload = json.loads(await self.reader.readexactly(length)) if length else {}
        if close:
            await self.close()
        return status, payload

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


# -- the gateway as a subprocess (as in production: `python -m gateway`, its own GIL) -------------------------


def admin_url(settings: GatewaySettings) -> str:
    """The gateway's admin listener (/readyz, /metrics): plain HTTP."""
    return f"http://{settings.admin_host}:{settings.admin_port}"


async def wait_drained(http: httpx.AsyncClient, url: str, timeout_s: float) -> dict[str, Any]:
    """Until the spool is empty and Kafka up, by the admin listener's /readyz at `url`."""
    deadline = time.monotonic() + timeout_s
    ready: dict[str, Any] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            ready = (await http.get(url + "/readyz")).json()
            if ready["spool_records"] == 0 and ready["kafka"] == "up":
                return ready
        await asyncio.sleep(0.5)
    raise AssertionError(f"spool not drained in {timeout_s}s: {ready}")


def gateway_env(settings: Any, bootstrap: str, quiet: bool = False) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "KAFKA_"))}
    env |= {
        "GATEWAY_HOST": settings.host,
        "GATEWAY_PORT": str(settings.port),
        "GATEWAY_ADMIN_HOST": settings.admin_host,
        "GATEWAY_ADMIN_PORT": str(settings.admin_port),
        "GATEWAY_TLS_CERT_FILE": str(settings.tls_cert_file),
        "GATEWAY_TLS_KEY_FILE": str(settings.tls_key_file),
        "GATEWAY_SECRETS": SECRET,
        "GATEWAY_SPOOL_DIR": str(settings.spool_dir),
        "GATEWAY_PUBLISH_TIMEOUT_S": "2",
        "GATEWAY_LOG_LEVEL": "WARNING" if quiet else "INFO",
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_REQUEST_TIMEOUT_MS": "5000",
        "PYTHONPATH": str(ROOT),
    }
    return env


def stop_subprocess(process: subprocess.Popen[bytes], within_s: float = 30) -> None:
    """SIGTERM (the gateway's graceful shutdown); SIGKILL if it has not exited within `within_s`."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(within_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def start_subprocess(env: dict[str, str], log: Path, fd_limit: int | None = None) -> subprocess.Popen[bytes]:
    """`python -m gateway`, optionally with its open-file limit (RLIMIT_NOFILE) lowered to `fd_limit`."""

    def limit_fds() -> None:
        if fd_limit is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))

    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            preexec_fn=limit_fds,
        )


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def metric(exposition: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus text exposition (0 when absent), parsed here rather than by the client library."""
    wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in exposition.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample == wanted:
            return float(value)
    return 0.0


def tail_of(log: Path) -> str:
    return log.read_text()[-3000:]


async def wait_up(http: httpx.AsyncClient, url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, tail_of(log)
        with contextlib.suppress(httpx.HTTPError):
            if (await http.get(url + "/livez")).status_code == 200:
                return
        await asyncio.sleep(0.2)
    raise AssertionError("gateway subprocess did not come up")


def on_private_broker() -> tuple[Any, Any]:
    """`bootstrap, gateway_topics = on_private_broker()` in a test module: its tests run on the private broker
    (started if an earlier test left it down) instead of the session broker. For a module that counts everything
    written to the gateway's topics: the private broker's tests run one after the other (one xdist group,
    tests/conftest.py), while on the session broker other tests write to the same topics meanwhile."""

    @pytest.fixture(scope="module", name="bootstrap")
    def private_bootstrap(private_broker_once: LocalKafka) -> str:
        private_broker_once.start()
        return private_broker_once.bootstrap

    @pytest.fixture(scope="module", name="gateway_topics")
    def private_gateway_topics(private_broker_once: LocalKafka) -> list[str]:
        return list(GATEWAY_TOPICS)  # created with the broker

    return private_bootstrap, private_gateway_topics
