"""A real single-node Apache Kafka (KRaft, broker+controller) on loopback, from Maven Central jars.

No Docker needed: Maven resolves `org.apache.kafka:kafka_2.13` and its dependencies into a cache
outside git, the storage is formatted once, and the JVM runs `kafka.Kafka` in the background with
its pid recorded, so `stop` (and the chaos tests' `kill`) can find it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from connector.pidfile import rss_bytes, running_pid, stop_pid, wait_gone
from connector.settings import LocalKafkaSettings

SLF4J_VERSION = "2.0.17"

# Kafka's own server jars pull slf4j 1.7 transitively; slf4j-simple 2.x gives one readable log file.
POM_TEMPLATE = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.pinwheel-connector</groupId>
  <artifactId>kafka-server-jars</artifactId>
  <version>1</version>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>{slf4j}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId><artifactId>slf4j-simple</artifactId><version>{slf4j}</version>
    </dependency>
  </dependencies>
</project>
"""

# Single-node settings: every internal topic at replication 1, no auto-created topics (topics are
# code, see connector.topics), and no rebalance delay so tests and restarts start at once.
SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={log_dir}
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
log.flush.interval.messages=9223372036854775807
"""


class LocalKafkaError(RuntimeError):
    """The local broker could not be fetched, started or stopped."""


def _say(message: str) -> None:
    print(f"[kafka] {message}", file=sys.stderr, flush=True)


@dataclass
class LocalKafka:
    """One local broker: its jars, its data directory and its process."""

    settings: LocalKafkaSettings
    progress: Callable[[str], None] = _say

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.settings.port}"

    @property
    def jar_dir(self) -> Path:
        return self.settings.cache_dir / "kafka" / self.settings.version / "libs"

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir.resolve()

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "kafka.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    # -- jars -----------------------------------------------------------------------------------

    def ensure_jars(self) -> Path:
        """Resolve the server jars with Maven once; later calls reuse the cache."""
        marker = self.jar_dir / ".complete"
        if marker.exists():
            return self.jar_dir
        if shutil.which("mvn") is None:
            raise LocalKafkaError("Maven (mvn) is needed to fetch Kafka from Maven Central; install it first")
        if shutil.which("java") is None:
            raise LocalKafkaError("Java 17+ is needed to run Kafka; install a JDK first")
        work = self.jar_dir.parent
        work.mkdir(parents=True, exist_ok=True)
        pom = work / "pom.xml"
        pom.write_text(POM_TEMPLATE.format(kafka=self.settings.version, slf4j=SLF4J_VERSION))
        staging = work / "libs.partial"
        shutil.rmtree(staging, ignore_errors=True)
        self.progress(f"fetching Apache Kafka {self.settings.version} jars from Maven Central (once)...")
        started = time.monotonic()
        result = subprocess.run(
            ["mvn", "-B", "-q", "-f", str(pom), "dependency:copy-dependencies",
             f"-DoutputDirectory={staging}", "-DincludeScope=runtime"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
            raise LocalKafkaError(f"mvn could not resolve kafka_2.13:{self.settings.version}:\n{tail}")
        shutil.rmtree(self.jar_dir, ignore_errors=True)
        staging.rename(self.jar_dir)
        marker.touch()
        count = len(list(self.jar_dir.glob("*.jar")))
        self.progress(f"fetched {count} jars in {time.monotonic() - started:.1f}s into {self.jar_dir}")
        return self.jar_dir

    def _java(self, main: str, *args: str, heap: str = "256m") -> list[str]:
        return [
            "java", f"-Xmx{heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            "-Dorg.slf4j.simpleLogger.showDateTime=true",
            "-cp", str(self.jar_dir / "*"), main, *args,
        ]  # fmt: skip

    # -- process ----------------------------------------------------------------------------------

    def pid(self) -> int | None:
        """The broker's pid if it is running, else None."""
        return running_pid(self.pid_file, b"kafka.Kafka")

    def _format_storage(self, properties: Path, log_dir: Path) -> None:
        if (log_dir / "meta.properties").exists():
            return
        cluster_id = uuid.uuid4().hex[:22]
        self.progress(f"formatting KRaft storage in {log_dir}")
        result = subprocess.run(
            self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(properties)),
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise LocalKafkaError(f"kafka-storage format failed:\n{result.stdout}\n{result.stderr}")

    def start(self) -> str:
        """Start the broker (fetching and formatting as needed); return its bootstrap address."""
        if self.pid() is not None:
            self.progress(f"already running (pid {self.pid()}) on {self.bootstrap}")
            self.wait_ready()
            return self.bootstrap
        self.ensure_jars()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log_dir = self.data_dir / "logs"
        properties = self.data_dir / "server.properties"
        properties.write_text(
            SERVER_PROPERTIES.format(port=self.settings.port, controller_port=self.settings.port + 1, log_dir=log_dir)
        )
        self._format_storage(properties, log_dir)
        self.progress(f"starting Apache Kafka {self.settings.version} on {self.bootstrap}")
        started = time.monotonic()
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                self._java("kafka.Kafka", str(properties), heap=self.settings.heap),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives the shell that started it; stopped by pid
            )  # fmt: skip
        self.pid_file.write_text(str(process.pid))
        try:
            self.wait_ready(process)
        except LocalKafkaError:
            self.stop()
            raise
        self.progress(f"ready in {time.monotonic() - started:.1f}s (pid {process.pid}, log {self.log_file})")
        return self.bootstrap

    def wait_ready(self, process: subprocess.Popen[bytes] | None = None) -> None:
        """Block until the broker answers a metadata request."""
        deadline = time.monotonic() + self.settings.start_timeout_s
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise LocalKafkaError(f"broker exited with {process.returncode}; see {self.log_file}")
            if asyncio.run(answers_metadata(self.bootstrap, coordinators=True)):
                return
            time.sleep(0.2)
        raise LocalKafkaError(f"broker did not answer within {self.settings.start_timeout_s}s; see {self.log_file}")

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the broker cleanly (SIGTERM), escalating to SIGKILL after the timeout."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return
        self.progress(f"stopping broker (pid {pid})")
        stop_pid(pid, timeout_s)
        self.pid_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """Kill the broker with SIGKILL (fault injection); `start` brings it back on the same data."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            wait_gone(pid, 10.0)
        self.pid_file.unlink(missing_ok=True)

    def reset(self) -> None:
        """Stop the broker and delete its data (topics, offsets, transactions)."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def rss_bytes(self) -> int | None:
        return rss_bytes(self.pid())


def free_port() -> int:
    """A free loopback port whose successor is free too (the broker's controller listens on port+1)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        if port < 65000:
            return port
    raise LocalKafkaError("no free port pair found")


async def answers_metadata(bootstrap: str, timeout_s: float = 5.0, coordinators: bool = False) -> bool:
    """True when a broker at `bootstrap` answers a metadata request with at least one broker.

    With `coordinators`, also when the group and transaction coordinators answer: the first such
    request creates __consumer_offsets and __transaction_state, so clients never see them missing.
    """
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:  # a plain connect first, so a broker still booting does not flood the log with client errors
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout_s)
        writer.close()
    except (OSError, TimeoutError):
        return False
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        cluster = await asyncio.wait_for(admin.describe_cluster(), timeout_s)
        if not cluster.get("brokers"):
            return False
        if coordinators:
            await asyncio.wait_for(admin.find_coordinator("pinwheel-warm-up", 0), timeout_s)
            await asyncio.wait_for(admin.find_coordinator("pinwheel-warm-up", 1), timeout_s)
        return True
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
