"""One scenario's private world: its own broker, topics, gateway and processors, the simulator, `verify`.

`Stack` starts and stops exactly what it owns (a LocalKafka on a free port with a temporary data directory,
service subprocesses built with connector/run.py's building blocks) and closes everything in `close()`,
which every scenario calls in a `finally`. Blocking steps (the broker, subprocess waits) run in threads so
that the simulator's event loop keeps delivering while faults are injected.

Logs, the ledger and the services' data of a scenario stay in `var/chaos/<run>/<scenario>/` for post-mortems;
the broker's data directory is temporary and removed (its log is copied next to the others), or kept there
when the scenario failed. The signing
secret is generated per scenario and never printed or written.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import ssl
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka.admin import AIOKafkaAdminClient

from common.ports import free_port, free_ports
from common.settings import KafkaSettings
from connector.local_kafka import NODE_PORT_SPAN, LocalKafka, LocalKafkaCluster, LocalKafkaSettings
from connector.run import (
    Service,
    gateway_env,
    processor_env,
    provision_topics,
    start_service,
)
from gateway.tls import ensure_self_signed
from simulator.settings import SimulatorSettings


def say(scenario: str, message: str) -> None:
    print(f"[chaos {scenario}] {message}", flush=True)


@dataclass(frozen=True)
class Size:
    """How much traffic a scenario sends and how compressed Pinwheel's retry schedule is."""

    accounts: int = 300
    spread_s: float = 60.0
    #: SIMULATOR_TIME_SCALE: 0.15 turns Pinwheel's 15-minute retry window into 135 s (delays 4.2 s .. 67 s)
    time_scale: float = 0.15
    #: the processors' pending timeout (production: 24 h); above the simulator's pending → final delay (2.5-10 s)
    #: plus how far the simulator falls behind its plan on a loaded 2-core machine (~10-15 s)
    pending_timeout_s: float = 30.0
    #: longest wait for the expected updates once the traffic is delivered
    verify_wait_s: float = 150.0
    #: processor kill loop: seconds between kills (uniform in this range)
    kill_every_s: tuple[float, float] = (3.0, 6.0)
    seed: int = 7


@dataclass
class Figures:
    """What a scenario reports (the summary line and docs/reliability.md)."""

    events: int = 0
    deliveries: int = 0
    accepted: int = 0
    gave_up: int = 0
    rejected: int = 0
    attempts: int = 0
    status_503: int = 0
    network_errors: int = 0
    spooled: int = 0
    kills: int = 0
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0
    expected_updates: int = 0
    found: int = 0
    joined: int = 0
    timed_out: int = 0
    late_timeouts: int = 0
    premature_timeouts: int = 0  # timeouts of jobs whose final the gateway had answered before the deadline
    notes: dict[str, Any] = field(default_factory=dict)


class Stack:
    """Broker + topics + gateway + processors of one scenario (see the module docstring)."""

    def __init__(self, scenario: str, work_dir: Path, size: Size, nodes: int = 1) -> None:
        self.scenario = scenario
        self.work_dir = work_dir.resolve()
        self.size = size
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = Path(tempfile.mkdtemp(prefix=f"pinwheel-chaos-{scenario}-"))
        broker_settings = LocalKafkaSettings(port=free_port(NODE_PORT_SPAN), data_dir=self.data_dir / "kafka")

        def progress(message: str) -> None:
            say(scenario, f"kafka: {message}")

        # A cluster's nodes share the 2 cores with everything else: a smaller heap each, and more patience
        # for a node restarted under load (it catches up with the others before it serves).
        node_settings = broker_settings.model_copy(update={"heap": "384m", "start_timeout_s": 180.0})
        self.broker: LocalKafka | LocalKafkaCluster = (
            LocalKafkaCluster(node_settings, nodes, free_ports(nodes), progress)
            if nodes > 1
            else LocalKafka(broker_settings, progress=progress)
        )
        self.kafka = KafkaSettings(bootstrap_servers=self.broker.bootstrap, request_timeout_ms=10_000)
        self.app_id = f"pinwheel-chaos-{scenario}-{secrets.token_hex(3)}"
        self.secret = secrets.token_urlsafe(24)  # handed to the gateway and the simulator only
        self.cert = self.work_dir / "tls" / "gateway.crt"
        self.key = self.work_dir / "tls" / "gateway.key"
        self.spool_dir = self.work_dir / "spool"
        self.gateway_port = 0
        self.gateway_admin_port = 0  # /readyz and /metrics: the gateway's admin listener
        self.gateway: Service | None = None
        self.gateway_extra: dict[str, str] = {}
        self.processor_extra: dict[str, str] = {}  # the scenario's own settings of every processor it starts
        self.processors: dict[str, Service] = {}
        self.health_ports: dict[str, int] = {}
        self.kills = 0
        self.pids: list[int] = []  # every process this stack started (the broker's incarnations included)
        self.base_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("GATEWAY_", "PROCESSOR_", "KAFKA_", "SIMULATOR_", "RUN_"))
        }
        self.base_env |= {
            "KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap,
            "KAFKA_REQUEST_TIMEOUT_MS": "10000",
        }

    def say(self, message: str) -> None:
        say(self.scenario, message)

    # -- broker -----------------------------------------------------------------------------------

    async def start_broker(self) -> None:
        started = time.monotonic()
        await asyncio.to_thread(self.broker.start)
        self._record_pids()
        self.say(f"broker up on {self.broker.bootstrap} in {time.monotonic() - started:.1f}s")

    def _record_pids(self) -> None:
        nodes = self.broker.nodes if isinstance(self.broker, LocalKafkaCluster) else [self.broker]
        self.pids.extend(pid for node in nodes if (pid := node.pid()) is not None and pid not in self.pids)

    async def kill_broker(self) -> None:
        assert isinstance(self.broker, LocalKafka)
        await asyncio.to_thread(self.broker.kill)
        self.kills += 1
        self.say("broker killed (SIGKILL)")

    # -- cluster nodes (scenarios with `nodes` > 1) -------------------------------------------------

    @property
    def cluster(self) -> LocalKafkaCluster:
        assert isinstance(self.broker, LocalKafkaCluster), "a cluster scenario (Scenario.nodes > 1)"
        return self.broker

    async def kill_node(self, node_id: int) -> None:
        await asyncio.to_thread(self.cluster.node(node_id).kill)
        self.kills += 1
        self.say(f"node {node_id} killed (SIGKILL)")

    async def stop_node(self, node_id: int) -> None:
        """SIGTERM: a controlled shutdown (leaders moved away first)."""
        await asyncio.to_thread(self.cluster.node(node_id).stop)
        self.say(f"node {node_id} stopped (SIGTERM)")

    async def start_node(self, node_id: int) -> float:
        """Restart a node on its data; returns the seconds until it served."""
        started = time.monotonic()
        await asyncio.to_thread(self.cluster.node(node_id).start)
        self._record_pids()
        return time.monotonic() - started

    async def admin(self) -> AIOKafkaAdminClient:
        admin = AIOKafkaAdminClient(**self.kafka.client_kwargs(), client_id=f"chaos-{self.scenario}")
        await admin.start()
        return admin

    async def leader_of(self, topic: str, partition: int) -> int:
        """The node leading `topic`-`partition` (-1 while none does)."""
        admin = await self.admin()
        try:
            (described,) = await admin.describe_topics([topic])
            return int(next(p["leader"] for p in described["partitions"] if p["partition"] == partition))
        finally:
            await admin.close()

    async def transaction_coordinator(self, transactional_id: str) -> int:
        admin = await self.admin()
        try:
            return int(await admin.find_coordinator(transactional_id, 1))
        finally:
            await admin.close()

    async def active_controller(self) -> int:
        return await asyncio.to_thread(self.cluster.active_controller)

    async def under_replicated(self, topics: list[str]) -> int:
        """Partitions of `topics` with fewer in-sync replicas than replicas (-1 when the cluster does not answer)."""
        try:
            admin = await self.admin()
        except Exception:
            return -1
        try:
            described = await admin.describe_topics(topics)
        except Exception:
            return -1
        finally:
            await admin.close()
        return sum(len(p["isr"]) < len(p["replicas"]) or p["leader"] < 0 for t in described for p in t["partitions"])

    async def provision(self) -> None:
        report, _ = await provision_topics(self.kafka, self.app_id)
        self.say(f"{len(report)} topics created; processor application id {self.app_id}")

    # -- services ---------------------------------------------------------------------------------

    def start_gateway(self, **extra: str) -> Service:
        """Start (or restart, same port and spool) the gateway; `extra`: GATEWAY_* overrides kept for restarts."""

        ensure_self_signed(self.cert, self.key)
        self.gateway_extra |= extra
        if not self.gateway_port:
            self.gateway_port = free_port()
        if not self.gateway_admin_port:
            self.gateway_admin_port = free_port()
        env = gateway_env(
            self.base_env,
            secret=self.secret,
            port=self.gateway_port,
            admin_port=self.gateway_admin_port,
            cert=self.cert,
            key=self.key,
            spool_dir=self.spool_dir,
            **self.gateway_extra,
        )
        self.gateway = start_service("gateway", ["gateway"], env, self.work_dir / "gateway.log")
        self.pids.append(self.gateway.process.pid)
        self.say(f"gateway pid {self.gateway.process.pid} on :{self.gateway_port}")
        return self.gateway

    def kill_gateway(self) -> None:
        assert self.gateway is not None
        self.gateway.kill()
        self.kills += 1
        self.say(f"gateway pid {self.gateway.process.pid} killed (SIGKILL)")

    def start_processor(self, instance: str = "a") -> Service:
        """Start (or restart) processor `instance`: static membership id, own state directory and health port."""
        if instance not in self.health_ports:
            self.health_ports[instance] = free_port()
        env = processor_env(
            self.base_env,
            app_id=self.app_id,
            state_dir=self.work_dir / f"state-{instance}",
            health_port=self.health_ports[instance],
            pending_timeout_s=self.size.pending_timeout_s,
            PROCESSOR_INSTANCE_ID=f"chaos-{instance}",
            **self.processor_extra,
        )
        service = start_service(
            f"processor-{instance}", ["processor"], env, self.work_dir / f"processor-{instance}.log"
        )
        self.processors[instance] = service
        self.pids.append(service.process.pid)
        return service

    def kill_processor(self, instance: str = "a") -> None:
        self.processors[instance].kill()
        self.kills += 1

    async def stop_processor(self, instance: str) -> None:
        service = self.processors.pop(instance)
        await asyncio.to_thread(service.stop)

    def processor_log_count(self, message: str, instance: str = "a") -> int:
        """How many times processor `instance` has logged `message` (a log record's message text)."""
        return (self.work_dir / f"processor-{instance}.log").read_text().count(message)

    @property
    def gateway_url(self) -> str:
        return f"https://127.0.0.1:{self.gateway_port}"

    @property
    def webhook_url(self) -> str:
        return f"{self.gateway_url}/webhooks/pinwheel"

    @property
    def gateway_admin_url(self) -> str:
        """The gateway's admin listener: /readyz and /metrics (plain HTTP, loopback)."""
        return f"http://127.0.0.1:{self.gateway_admin_port}"

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(self.cert)), timeout=5.0)

    async def gateway_ready(self) -> dict[str, Any] | None:
        """The gateway's /readyz body (whatever its status), None when it does not answer."""
        async with self.http() as client:
            try:
                body = (await client.get(f"{self.gateway_admin_url}/readyz")).json()
            except (httpx.HTTPError, ValueError):
                return None
        return body if isinstance(body, dict) else None

    async def gateway_published(self) -> float | None:
        """Requests the gateway answered 200 on a Kafka acknowledgement so far (its /metrics), None if unreachable."""
        async with self.http() as client:
            try:
                text = (await client.get(f"{self.gateway_admin_url}/metrics")).text
            except httpx.HTTPError:
                return None
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("gateway_requests_total{") and 'outcome="published"' in line
        )

    async def processor_ready(self, instance: str) -> dict[str, Any] | None:
        async with httpx.AsyncClient(timeout=3.0) as client:
            try:
                body = (await client.get(f"http://127.0.0.1:{self.health_ports[instance]}/readyz")).json()
            except (httpx.HTTPError, ValueError):
                return None
        return body if isinstance(body, dict) else None

    async def wait_gateway(self, timeout_s: float = 60.0) -> None:
        """Until the gateway answers /readyz (spooling or not)."""
        deadline = time.monotonic() + timeout_s
        while await self.gateway_ready() is None:
            self._check_alive([self.gateway] if self.gateway else [])
            if time.monotonic() > deadline:
                raise RuntimeError(f"gateway not answering after {timeout_s:.0f}s")
            await asyncio.sleep(0.3)

    async def wait_processor(self, instance: str, timeout_s: float = 90.0) -> dict[str, Any]:
        """Until processor `instance` owns partitions and has restored them all."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._check_alive([self.processors[instance]])
            body = await self.processor_ready(instance)
            if body is not None and body.get("status") == "ready":
                return body
            if time.monotonic() > deadline:
                raise RuntimeError(f"processor {instance} not ready after {timeout_s:.0f}s: {body}")
            await asyncio.sleep(0.3)

    async def wait_spool_drained(self, timeout_s: float = 120.0) -> float:
        """Until the gateway's spool is empty and Kafka is up; returns the seconds it took."""
        started = time.monotonic()
        body: dict[str, Any] | None = None
        while time.monotonic() - started < timeout_s:
            body = await self.gateway_ready()
            if body is not None and body.get("spool_records") == 0 and body.get("kafka") == "up":
                return time.monotonic() - started
            await asyncio.sleep(0.5)
        raise RuntimeError(f"spool not drained after {timeout_s:.0f}s: {body}")

    @staticmethod
    def _check_alive(services: list[Service]) -> None:
        for service in services:
            if not service.alive():
                raise RuntimeError(
                    f"{service.name} exited with {service.process.returncode}; last log lines:\n{service.log_tail()}"
                )

    # -- traffic and verdict ----------------------------------------------------------------------

    def simulator_settings(self) -> Any:
        return SimulatorSettings(
            url=self.webhook_url,
            ca_file=self.cert,
            accounts=self.size.accounts,
            seed=self.size.seed,
            spread_s=self.size.spread_s,
            time_scale=self.size.time_scale,
            ledger=self.work_dir / "ledger.jsonl",
            progress=False,
        )

    def gateway_outcomes(self) -> Counter[str]:
        """Request outcomes from the gateway's log (one JSON line per webhook request, every incarnation)."""
        counts: Counter[str] = Counter()
        log = self.work_dir / "gateway.log"
        if not log.exists():
            return counts
        with log.open("rb") as fh:
            for line in fh:
                if not line.startswith(b"{"):
                    continue
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(record, dict) and record.get("message") == "webhook":
                    counts[str(record.get("outcome"))] += 1
        return counts

    def secret_leaks(self) -> list[str]:
        """Files of this scenario (logs, ledger) that contain the signing secret: must be none."""
        needle = self.secret.encode()
        return sorted(
            str(path.relative_to(self.work_dir))
            for path in self.work_dir.rglob("*")
            if path.is_file() and path.suffix in (".log", ".jsonl") and needle in path.read_bytes()
        )

    # -- teardown ---------------------------------------------------------------------------------

    def close(self, keep_data: bool = False) -> None:
        """Stop everything this stack started (processors, gateway, broker), whatever state it is in; the broker's
        data directory is deleted, or with `keep_data` moved beside the scenario's logs (`kafka-data/`)."""
        for name, service in list(self.processors.items()):
            with contextlib.suppress(Exception):
                service.stop(timeout_s=20)
            self.processors.pop(name, None)
        if self.gateway is not None:
            with contextlib.suppress(Exception):
                self.gateway.stop(timeout_s=25)
        with contextlib.suppress(Exception):
            self.broker.stop()
        if isinstance(self.broker, LocalKafkaCluster):
            for node in self.broker.nodes:
                with contextlib.suppress(OSError):
                    shutil.copyfile(node.log_file, self.work_dir / f"broker-node-{node.node_id}.log")
        else:
            with contextlib.suppress(OSError):
                shutil.copyfile(self.broker.log_file, self.work_dir / "broker.log")
        if keep_data:
            with contextlib.suppress(OSError):
                shutil.move(self.data_dir, self.work_dir / "kafka-data")
                self.say(f"the broker's data is kept in {self.work_dir / 'kafka-data'}")
        shutil.rmtree(self.data_dir, ignore_errors=True)


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
