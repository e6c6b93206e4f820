"""`docker compose up` for real (marker `compose`; `make compose-test` builds the images and runs it).

On a project of its own: build and start everything, wait for every healthcheck, send signed traffic from the
simulator to the gateway's port on 127.0.0.1 and `verify` the account updates (0 lost, 0 duplicated); recreate
the Kafka container and find the topics and records still there; scale the processors to 2 and back to 1 while
traffic flows, still 0 lost / 0 duplicated. `docker compose down -v` at the end, also on failure, and no
container, network or volume of the project is left. The host reaches the containers only through ports
published on 127.0.0.1; the containers talk on the project's own network.

Images: the compose defaults (python:3.11-slim, apache/kafka), or PYTHON_IMAGE / KAFKA_IMAGE from the
environment (docker/local-images.sh builds them where no registry is reachable).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from common.ports import free_port
from tests.kafka_broker import docker_available

pytestmark = [pytest.mark.compose, pytest.mark.timeout(3600)]

ROOT = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).with_name("pinwheel-connector")
# Settings of the services that a developer's shell may hold; the project must not inherit them.
IMAGES = ("PYTHON_IMAGE", "KAFKA_IMAGE")  # the compose file's own variables, passed on
FOREIGN = (
    "KAFKA_",
    "SCHEMA_",
    "GATEWAY_",
    "PROCESSOR_",
    "TOPICS_",
    "PUBLISH_",
    "METRICS_",
    "COMPOSE_",
    "PINWHEEL_API_",
)


def _compose_cli() -> list[str] | None:
    for cli in (["docker", "compose"], ["docker-compose"]):
        try:
            if subprocess.run([*cli, "version"], capture_output=True, timeout=30, check=False).returncode == 0:
                return cli
        except FileNotFoundError:
            continue
    return None


def _say(message: str) -> None:
    print(f"[compose-test] {message}", file=sys.stderr, flush=True)


@dataclass
class Project:
    cli: list[str]
    name: str
    env: dict[str, str]
    gateway_port: int
    kafka_port: int
    secret: str
    work: Path
    admin_port: int  # the gateway's admin listener (/readyz, /metrics), published on 127.0.0.1
    files: tuple[Path, ...] = (ROOT / "docker-compose.yml",)  # `-f`: the project's file, then any overrides

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    def compose(self, *args: str, timeout: float = 600) -> str:
        command = [*self.cli, "-p", self.name, *(arg for file in self.files for arg in ("-f", str(file))), *args]
        _say(" ".join(command[len(self.cli) :]))
        result = subprocess.run(
            command, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-4000:]}")
        return result.stdout

    def docker(self, *args: str) -> str:
        return subprocess.run(
            ["docker", *args], env=self.env, capture_output=True, text=True, timeout=120, check=True
        ).stdout

    def containers(self, service: str) -> list[str]:
        labels = [f"label=com.docker.compose.project={self.name}", f"label=com.docker.compose.service={service}"]
        return self.docker("ps", "-q", *(arg for label in labels for arg in ("--filter", label))).split()

    def wait_healthy(self, services: dict[str, int], timeout_s: float = 600) -> None:
        """Until each service runs that many containers, every one of them healthy."""
        deadline = time.monotonic() + timeout_s
        while True:
            states = {s: [self._health(c) for c in self.containers(s)] for s in services}
            if all(len(states[s]) == n and all(h == "healthy" for h in states[s]) for s, n in services.items()):
                return
            if time.monotonic() > deadline:
                logs = self.compose("logs", "--tail", "40")
                raise AssertionError(f"not healthy within {timeout_s}s: {states}\n{logs[-6000:]}")
            time.sleep(2)

    def _health(self, container: str) -> str:
        return self.docker("inspect", "--format", "{{.State.Health.Status}}", container).strip()

    def simulate(
        self, ledger: Path, seed: int, accounts: int, spread_s: float, capture: bool = True
    ) -> subprocess.Popen[str]:
        env = self.env | {
            "SIMULATOR_SECRET": self.secret,
            "SIMULATOR_UNRESOLVED_RATE": "0",  # no 24 h pending timeouts to wait for
            "SIMULATOR_SPREAD_S": str(spread_s),
        }
        command = [
            str(CLI), "simulate", "--url", f"https://127.0.0.1:{self.gateway_port}/webhooks/pinwheel",
            "--ca-file", str(self.work / "gateway.crt"), "--accounts", str(accounts), "--seed", str(seed),
            "--ledger", str(ledger), "--time-scale", "0.01", "--rate", "100", "--no-progress",
        ] + ([] if capture else ["--no-capture"])  # fmt: skip
        _say(f"simulate {accounts} accounts over {spread_s:.0f}s (seed {seed})")
        return subprocess.Popen(command, env=env, text=True)

    def verify(self, ledger: Path) -> dict[str, Any]:
        env = self.env | {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap}
        result = subprocess.run(
            [str(CLI), "verify", "--ledger", str(ledger), "--wait", "180", "--json"],
            env=env, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert result.stdout, result.stderr
        report: dict[str, Any] = json.loads(result.stdout)
        _say(f"verify {ledger.name}: {json.dumps({k: report[k] for k in ('found', 'lost', 'duplicated')})}")
        return report


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    if not docker_available():
        pytest.skip("NO DOCKER ENGINE answers (DOCKER_HOST; `make docker-engine`): the compose test did not run")
    cli = _compose_cli()
    if cli is None:
        pytest.skip("NO COMPOSE CLI (docker compose / docker-compose): the compose test did not run")
    work = tmp_path_factory.mktemp("compose")
    secret = secrets.token_hex(16)
    secret_file = work / "pinwheel-api-secret"
    secret_file.write_text(secret)
    # The gateway runs as uid 10001; the README has the file owned by that uid, mode 600, which needs root here.
    secret_file.chmod(0o644)
    gateway_port, kafka_port, admin_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k in IMAGES or not k.startswith(FOREIGN)}
    env |= {
        "PINWHEEL_API_SECRET_FILE": str(secret_file),
        "PUBLISH_GATEWAY_PORT": str(gateway_port),
        "PUBLISH_KAFKA_PORT": str(kafka_port),
        "PUBLISH_GATEWAY_ADMIN_PORT": str(admin_port),
    }
    project = Project(cli, f"pwe2e{secrets.token_hex(4)}", env, gateway_port, kafka_port, secret, work, admin_port)
    try:
        yield project
    finally:
        project.compose("down", "-v", "--remove-orphans", "--timeout", "60")
        left = project.docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={project.name}").split()
        networks = project.docker("network", "ls", "-q", "--filter", f"name={project.name}").split()
        volumes = project.docker("volume", "ls", "-q", "--filter", f"name={project.name}").split()
        assert (left, networks, volumes) == ([], [], []), "left behind"


async def _end_offsets(bootstrap: str) -> dict[str, int]:
    """Records per topic of the connector (every topic but Kafka's internal ones)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await admin.start()
    await consumer.start()
    try:
        topics = sorted(t for t in await admin.list_topics() if not t.startswith("__"))
        partitions = [
            TopicPartition(d["topic"], p["partition"])
            for d in await admin.describe_topics(topics)
            for p in d["partitions"]
        ]
        ends = await consumer.end_offsets(partitions)
        return {t: sum(n for tp, n in ends.items() if tp.topic == t) for t in topics}
    finally:
        await consumer.stop()
        await admin.close()


def _get(url: str, ca_file: Path | None = None) -> int:
    """The status of GET `url` (an HTTP error status included)."""
    context = ssl.create_default_context(cafile=str(ca_file)) if ca_file is not None else None
    try:
        with urllib.request.urlopen(url, timeout=10, context=context) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _livez(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=10) as response:
        return int(response.status)


def test_compose_up_traffic_kafka_recreate_and_scaling(project: Project) -> None:
    started = time.monotonic()
    project.compose("up", "-d", "--build", timeout=2400)
    project.wait_healthy({"kafka": 1, "gateway": 1, "processor": 1})
    _say(f"built and healthy in {time.monotonic() - started:.0f}s")
    (gateway,) = project.containers("gateway")
    project.docker("cp", f"{gateway}:/data/tls/gateway.crt", str(project.work / "gateway.crt"))
    # Readiness and metrics on the admin listener (published on loopback), not on the webhook port.
    assert _get(f"http://127.0.0.1:{project.admin_port}/readyz") == 200
    assert _get(f"http://127.0.0.1:{project.admin_port}/metrics") == 200
    assert _get(f"https://127.0.0.1:{project.gateway_port}/readyz", project.work / "gateway.crt") == 404

    # 1. Signed traffic through the gateway's published port: every update, once.
    first = project.work / "ledger-1.jsonl"
    assert project.simulate(first, seed=11, accounts=25, spread_s=15).wait(timeout=900) == 0
    report = project.verify(first)
    assert report["found"] > 0
    assert (report["lost"], report["duplicated"]) == (0, 0), report

    # 2. A new Kafka container on the same volume: the topics and every record are still there.
    before = asyncio.run(_end_offsets(project.bootstrap))
    assert sum(before.values()) > 0
    project.compose("up", "-d", "--force-recreate", "--no-deps", "kafka")
    project.wait_healthy({"kafka": 1})
    after = asyncio.run(_end_offsets(project.bootstrap))
    assert set(after) == set(before)
    # No record went missing (a broker on a fresh disk starts every topic at 0); only the processors' own
    # changelogs (timers, punctuated) may have grown meanwhile.
    assert all(after[t] >= n for t, n in before.items()), (before, after)
    assert {t: n for t, n in after.items() if t.startswith("pinwheel.")} == {
        t: n for t, n in before.items() if t.startswith("pinwheel.")
    }
    report = project.verify(first)
    assert (report["lost"], report["duplicated"]) == (0, 0), report

    # 3. Two processors and back to one while traffic flows: each its own id and health port, nothing lost.
    project.wait_healthy({"gateway": 1, "processor": 1})
    second = project.work / "ledger-2.jsonl"
    # Without the 12 captured deliveries this time: sent again, they are (rightly) deduplicated, and `verify`
    # looks for updates made since the run began.
    sender = project.simulate(second, seed=12, accounts=60, spread_s=60, capture=False)
    try:
        project.compose("up", "-d", "--no-recreate", "--no-deps", "--scale", "processor=2", "processor")
        project.wait_healthy({"processor": 2})
        ports = {int(project.compose("port", "--index", str(i), "processor", "8081").rsplit(":", 1)[1]) for i in (1, 2)}
        assert len(ports) == 2
        assert all(_livez(port) == 200 for port in ports)
        ids = {
            project.docker("exec", c, "sh", "-c", "tr '\\0' '\\n' </proc/1/environ | grep ^PROCESSOR_INSTANCE_ID=")
            for c in project.containers("processor")
        }
        assert len(ids) == 2, ids
        project.compose("up", "-d", "--no-recreate", "--no-deps", "--scale", "processor=1", "processor")
        project.wait_healthy({"processor": 1})
    finally:
        assert sender.wait(timeout=900) == 0
    report = project.verify(second)
    assert report["found"] > 0
    assert (report["lost"], report["duplicated"]) == (0, 0), report
    _say(f"done in {time.monotonic() - started:.0f}s")
