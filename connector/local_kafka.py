"""A real Apache Kafka (KRaft, broker+controller nodes) on loopback, from Maven Central jars.

No Docker needed: Maven resolves `org.apache.kafka:kafka_2.13` and its dependencies into a cache
outside git, the storage is formatted once, and the JVM runs `kafka.Kafka` in the background with
its pid recorded, so `stop` (and the chaos tests' `kill`) can find it again.

`LocalKafka` is one node: a single-node broker by default, or one voter of a `LocalKafkaCluster`
(N combined broker+controller nodes on distinct ports, one cluster id, each with its own data
directory and pid file; with 3 nodes or more, internal topics have replication 3 and min ISR 2).

Secured (`LOCAL_KAFKA_SECURE=true`, `kafka start --secure`), a node is what managed clusters are: no
plaintext listener at all, SCRAM (and PLAIN) over TLS on `port`, mutual TLS on port+2, optionally
OAUTHBEARER over TLS on port+3 (JWTs checked against a JWKS endpoint) and a listener whose certificate
names another host on port+4 (hostname-verification tests); the controller listener (port+1) and the
brokers' own traffic use mutual TLS too. The StandardAuthorizer denies whatever no ACL allows; the super
users are `User:admin` (SCRAM, its password in a 0600 file) and `User:broker` (the brokers' certificate).
Certificates come from connector.local_tls, in `<data_dir>/security`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiokafka.admin import AIOKafkaAdminClient
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from connector.local_tls import MISMATCH_HOST, CertPair, LocalPki, client_ssl_context
from connector.pidfile import rss_bytes, running_pid, stop_pid, wait_gone
from gateway.tls import write_private


def default_cache_dir() -> Path:
    """Where downloaded Kafka jars live: outside the git tree, shared by every clone."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pinwheel-connector"


class LocalKafkaSettings(BaseSettings):
    """The single-node KRaft broker run from Maven Central jars (env prefix `LOCAL_KAFKA_`)."""

    model_config = SettingsConfigDict(env_prefix="LOCAL_KAFKA_", extra="ignore")

    version: str = Field(default="4.3.1", description="Apache Kafka release to fetch and run.")
    port: int = Field(default=9092, ge=1024, le=65534, description="Broker port; the controller uses port+1.")
    data_dir: Path = Field(default=Path("var/kafka"), description="Logs, pid file and broker log of the local broker.")
    cache_dir: Path = Field(default_factory=default_cache_dir, description="Where the Kafka jars are cached.")
    heap: str = Field(default="512m", description="JVM heap (-Xmx) of the local broker.")
    start_timeout_s: float = Field(default=60.0, gt=0, description="How long to wait for the broker to answer.")
    secure: bool = Field(
        default=False,
        description="TLS and SASL (SCRAM, PLAIN) on the port, mTLS on port+2, ACLs enforced; no plaintext listener.",
    )

    @field_validator("version")
    @classmethod
    def _check_version(cls, value: str) -> str:
        parts = value.split(".")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise ValueError(f"expected a release like 4.1.1, got {value!r}")
        return value


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
# code, see schemas.topics), and no rebalance delay so tests and restarts start at once. A node of
# a cluster gets its id, the voters and replication min(3, nodes) with min ISR one less (`server_properties`).
SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id={node_id}
controller.quorum.voters={voters}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={log_dir}
num.partitions=1
default.replication.factor={replication}
min.insync.replicas={min_isr}
offsets.topic.replication.factor={replication}
offsets.topic.num.partitions=10
transaction.state.log.replication.factor={replication}
transaction.state.log.min.isr={min_isr}
transaction.state.log.num.partitions=10
unclean.leader.election.enable=false
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
log.flush.interval.messages=9223372036854775807
"""


@dataclass(frozen=True)
class Membership:
    """A node's place in a cluster: its id, every node's broker port (controllers on port+1), the cluster id."""

    node_id: int
    ports: tuple[int, ...]
    cluster_id: str

    @property
    def voters(self) -> str:
        return ",".join(f"{i}@127.0.0.1:{port + 1}" for i, port in enumerate(self.ports, start=1))

    @property
    def replication(self) -> int:
        return min(3, len(self.ports))


def server_properties(port: int, log_dir: Path, membership: Membership | None = None) -> str:
    """server.properties of a single-node broker (no membership) or of one node of a cluster."""
    if membership is None:
        membership = Membership(1, (port,), "")
    replication = membership.replication
    return SERVER_PROPERTIES.format(
        node_id=membership.node_id,
        voters=membership.voters,
        port=port,
        controller_port=port + 1,
        log_dir=log_dir,
        replication=replication,
        min_isr=max(1, replication - 1),
    )


# Secured node: ports from `port` up (SecurePorts). The brokers' own traffic (inter-broker and to the controllers)
# is mutual TLS with the brokers' certificate, CN=broker, mapped to the super user User:broker; a client of
# the MTLS listener is User:<its CN>. SCRAM users live in the metadata log (admin added at format time, others
# with AlterUserScramCredentials); PLAIN has the admin only (a static JAAS list, hence 0600 properties).
SECURE_PROPERTIES = """\
listeners={listeners}
advertised.listeners={advertised}
controller.listener.names=CONTROLLER
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SSL,MTLS:SSL,OAUTH:SASL_SSL,MISMATCH:SASL_SSL
inter.broker.listener.name=MTLS
ssl.keystore.type=PEM
ssl.keystore.location={keystore}
ssl.truststore.type=PEM
ssl.truststore.location={ca_file}
ssl.client.auth=none
listener.name.mtls.ssl.client.auth=required
listener.name.controller.ssl.client.auth=required
ssl.principal.mapping.rules=RULE:^CN=([^,]*).*$/$1/,DEFAULT
sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config={scram_jaas}
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={scram_jaas}
listener.name.sasl_ssl.plain.sasl.jaas.config={plain_jaas}
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:{admin};User:broker
"""
SCRAM_JAAS = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
OAUTH_PROPERTIES = """\
listener.name.oauth.sasl.enabled.mechanisms=OAUTHBEARER
listener.name.oauth.oauthbearer.sasl.jaas.config=\
org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;
listener.name.oauth.oauthbearer.sasl.server.callback.handler.class=\
org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler
sasl.oauthbearer.jwks.endpoint.url={jwks_url}
sasl.oauthbearer.expected.audience={audience}
sasl.oauthbearer.expected.issuer={issuer}
"""
MISMATCH_PROPERTIES = """\
listener.name.mismatch.ssl.keystore.location={keystore}
listener.name.mismatch.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.mismatch.scram-sha-512.sasl.jaas.config={scram_jaas}
"""
ADMIN_USER = "admin"
NODE_PORT_SPAN = 2  # a plain node's ports: its own and its controller's
SECURE_PORT_SPAN = 5  # SASL_SSL, CONTROLLER, MTLS, OAUTH, MISMATCH
SCRAM_ITERATIONS = 8192


@dataclass(frozen=True)
class SecurePorts:
    """The listeners of a secured node, from its `port` up (the controller keeps port+1, as on a plain node)."""

    port: int

    @property
    def sasl_ssl(self) -> int:
        return self.port

    @property
    def controller(self) -> int:
        return self.port + 1

    @property
    def mtls(self) -> int:
        return self.port + 2

    @property
    def oauth(self) -> int:
        return self.port + 3

    @property
    def mismatch(self) -> int:
        return self.port + 4


@dataclass(frozen=True)
class OAuthValidation:
    """Where a secured node's OAUTHBEARER listener fetches the signing keys, and what the tokens must say."""

    jwks_url: str
    issuer: str
    audience: str


@dataclass(frozen=True)
class SecureExtras:
    """Listeners a secured node opens only when asked (tests): OAUTHBEARER, and a hostname mismatch."""

    oauth: OAuthValidation | None = None
    mismatch: bool = False  # a SASL_SSL (SCRAM-SHA-512) listener whose certificate names MISMATCH_HOST only


def jaas_quote(value: str) -> str:
    """A JAAS option value in double quotes (backslashes and quotes escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def secure_properties(
    port: int,
    log_dir: Path,
    pki: LocalPki,
    admin_password: str,
    membership: Membership | None = None,
    extras: SecureExtras = SecureExtras(),
) -> str:
    """server.properties of a secured node: the plain node's, its listeners replaced (see SECURE_PROPERTIES)."""
    ports = SecurePorts(port)
    client = [f"SASL_SSL://127.0.0.1:{ports.sasl_ssl}", f"MTLS://127.0.0.1:{ports.mtls}"]
    if extras.oauth:
        client.append(f"OAUTH://127.0.0.1:{ports.oauth}")
    if extras.mismatch:
        client.append(f"MISMATCH://127.0.0.1:{ports.mismatch}")
    plain = server_properties(port, log_dir, membership)
    kept = [line for line in plain.splitlines(keepends=True) if not line.startswith(PLAIN_LISTENER_KEYS)]
    plain_jaas = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f"user_{ADMIN_USER}={jaas_quote(admin_password)};"
    )
    text = "".join(kept) + SECURE_PROPERTIES.format(
        listeners=",".join([*client, f"CONTROLLER://127.0.0.1:{ports.controller}"]),
        advertised=",".join(client),
        keystore=pki.keystore("broker"),
        ca_file=pki.ca_file,
        scram_jaas=SCRAM_JAAS,
        plain_jaas=plain_jaas,
        admin=ADMIN_USER,
    )
    if extras.oauth:
        text += OAUTH_PROPERTIES.format(
            jwks_url=extras.oauth.jwks_url, audience=extras.oauth.audience, issuer=extras.oauth.issuer
        )
    if extras.mismatch:
        text += MISMATCH_PROPERTIES.format(
            keystore=pki.keystore("mismatch", hosts=(MISMATCH_HOST,)), scram_jaas=SCRAM_JAAS
        )
    return text


PLAIN_LISTENER_KEYS = (
    "listeners=", "advertised.listeners=", "controller.listener.names=", "listener.security.protocol.map=",
    "inter.broker.listener.name=",
)  # fmt: skip


def secure_client_env(
    listener: Literal["sasl_ssl", "mtls"], bootstrap: str, mtls_bootstrap: str, pki: LocalPki, password_file: Path
) -> dict[str, str]:
    """The `KAFKA_*` variables of a client of a secured local Kafka, as the admin (files, never a secret)."""
    if listener == "mtls":
        cert = pki.client(ADMIN_USER)
        return {
            "KAFKA_BOOTSTRAP_SERVERS": mtls_bootstrap,
            "KAFKA_SECURITY_PROTOCOL": "SSL",
            "KAFKA_SSL_CA_FILE": str(pki.ca_file),
            "KAFKA_SSL_CERT_FILE": str(cert.cert),
            "KAFKA_SSL_KEY_FILE": str(cert.key),
        }
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": ADMIN_USER,
        "KAFKA_SASL_PASSWORD_FILE": str(password_file),
        "KAFKA_SSL_CA_FILE": str(pki.ca_file),
    }


def scram_credential(mechanism: str, user: str, password: str, iterations: int = SCRAM_ITERATIONS) -> str:
    """StorageTool's `--add-scram` argument with the salted password (RFC 5802), never the password itself.

    The command line of a process is visible to every local user; the salted password is what the broker
    stores anyway.
    """
    digest = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}[mechanism]
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac(digest, password.encode(), salt, iterations)
    return (
        f"{mechanism}=[name={user},iterations={iterations},"
        f'salt="{base64.b64encode(salt).decode()}",saltedpassword="{base64.b64encode(salted).decode()}"]'
    )


class LocalKafkaError(RuntimeError):
    """The local broker could not be fetched, started or stopped."""


def _say(message: str) -> None:
    print(f"[kafka] {message}", file=sys.stderr, flush=True)


@dataclass
class LocalKafka:
    """One local broker: its jars, its data directory and its process."""

    settings: LocalKafkaSettings
    progress: Callable[[str], None] = _say
    membership: Membership | None = None  # None: a single-node broker
    extras: SecureExtras = field(default_factory=SecureExtras)  # secured only: the listeners tests ask for
    security_dir: Path | None = None  # secured only: certificates and admin password (default <data_dir>/security)

    @property
    def bootstrap(self) -> str:
        """The client listener: plaintext, or SASL_SSL (SCRAM, PLAIN) on a secured node."""
        return f"127.0.0.1:{self.settings.port}"

    # -- security ---------------------------------------------------------------------------------

    @property
    def secure(self) -> bool:
        """Secured by its settings, or because its data was formatted secured (`stop`, `status` need no flag)."""
        return self.settings.secure or self._secure_marker.exists()

    @property
    def _secure_marker(self) -> Path:
        return self.data_dir / "SECURE"

    @property
    def security(self) -> Path:
        return (self.security_dir or self.data_dir / "security").resolve()

    @property
    def pki(self) -> LocalPki:
        return LocalPki(self.security / "tls")

    @property
    def admin_user(self) -> str:
        return ADMIN_USER

    @property
    def admin_password_file(self) -> Path:
        return self.security / "admin.password"

    def admin_password(self) -> str:
        """The super user's password, made once (0600 file): never printed, never logged."""
        if not self.admin_password_file.exists():
            write_private(self.admin_password_file, secrets.token_urlsafe(24).encode())
        return self.admin_password_file.read_text().strip()

    @property
    def ports(self) -> SecurePorts:
        return SecurePorts(self.settings.port)

    @property
    def mtls_bootstrap(self) -> str:
        return f"127.0.0.1:{self.ports.mtls}"

    @property
    def oauth_bootstrap(self) -> str | None:
        return f"127.0.0.1:{self.ports.oauth}" if self.extras.oauth else None

    @property
    def mismatch_bootstrap(self) -> str | None:
        return f"127.0.0.1:{self.ports.mismatch}" if self.extras.mismatch else None

    def client_kwargs(self) -> dict[str, Any]:
        """What an aiokafka client needs besides `bootstrap_servers`: nothing, or the admin over SASL_SSL."""
        if not self.secure:
            return {}
        return {
            "security_protocol": "SASL_SSL",
            "ssl_context": client_ssl_context(self.pki.ca_file),
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": self.admin_user,
            "sasl_plain_password": self.admin_password(),
        }

    def client_cert(self, name: str, *, expired: bool = False) -> CertPair:
        """A client certificate `CN=<name>` (the mTLS principal `User:<name>`) signed by this node's CA."""
        return self.pki.client(name, expired=expired)

    def client_env(self, listener: Literal["sasl_ssl", "mtls"] = "sasl_ssl") -> dict[str, str]:
        """The `KAFKA_*` variables of a service connecting as the super user: SCRAM-SHA-512, or its certificate."""
        return secure_client_env(listener, self.bootstrap, self.mtls_bootstrap, self.pki, self.admin_password_file)

    @property
    def node_id(self) -> int:
        return self.membership.node_id if self.membership else 1

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

    def _java(self, main: str, *args: str, heap: str = "256m", jvm: Sequence[str] = ()) -> list[str]:
        return [
            "java", f"-Xmx{heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true", *jvm,
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
            if self.settings.secure and not self._secure_marker.exists():
                raise LocalKafkaError(
                    f"{self.data_dir} holds a plaintext broker's data; delete it first (kafka reset) "
                    "or give the secured broker another LOCAL_KAFKA_DATA_DIR"
                )
            return
        cluster_id = self.membership.cluster_id if self.membership else new_cluster_id()
        self.progress(f"formatting KRaft storage in {log_dir}{' (secured)' if self.secure else ''}")
        scram: list[str] = []
        if self.secure:
            for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
                scram += ["--add-scram", scram_credential(mechanism, self.admin_user, self.admin_password())]
        result = subprocess.run(
            self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(properties), *scram),
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise LocalKafkaError(f"kafka-storage format failed:\n{result.stdout}\n{result.stderr}")
        if self.secure:
            self._secure_marker.touch()

    def start(self) -> str:
        """Start the broker (fetching and formatting as needed); return its bootstrap address."""
        if self.pid() is not None:
            self.progress(f"already running (pid {self.pid()}) on {self.bootstrap}")
            self.wait_ready()
            return self.bootstrap
        started = time.monotonic()
        process = self.launch()
        try:
            self.wait_ready(process)
        except LocalKafkaError:
            self.stop()
            raise
        self.progress(f"ready in {time.monotonic() - started:.1f}s (pid {process.pid}, log {self.log_file})")
        return self.bootstrap

    def launch(self) -> subprocess.Popen[bytes]:
        """Start the JVM (fetching and formatting as needed) without waiting for it to answer."""
        self.ensure_jars()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log_dir = self.data_dir / "logs"
        properties = self.data_dir / "server.properties"
        jvm: list[str] = []
        if self.secure:
            self.pki.ensure()
            text = secure_properties(
                self.settings.port, log_dir, self.pki, self.admin_password(), self.membership, self.extras
            )
            write_private(properties, text.encode())  # the PLAIN admin's password is in it
            if self.extras.oauth:  # Kafka 4 fetches no URL it was not allowed to
                jvm.append(f"-Dorg.apache.kafka.sasl.oauthbearer.allowed.urls={self.extras.oauth.jwks_url}")
        else:
            properties.write_text(server_properties(self.settings.port, log_dir, self.membership))
        self._format_storage(properties, log_dir)
        node = f"node {self.membership.node_id} " if self.membership else ""
        secured = "secured " if self.secure else ""
        self.progress(f"starting {secured}Apache Kafka {self.settings.version} {node}on {self.bootstrap}")
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                self._java("kafka.Kafka", str(properties), heap=self.settings.heap, jvm=jvm),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives the shell that started it; stopped by pid
            )  # fmt: skip
        self.pid_file.write_text(str(process.pid))
        return process

    def wait_ready(self, process: subprocess.Popen[bytes] | None = None) -> None:
        """Block until the broker answers a metadata request."""
        deadline = time.monotonic() + self.settings.start_timeout_s
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                tail = "\n".join(self.log_file.read_text(errors="replace").splitlines()[-15:])
                raise LocalKafkaError(f"broker exited with {process.returncode}; see {self.log_file}:\n{tail}")
            if asyncio.run(answers_metadata(self.bootstrap, coordinators=True, client=self.client_kwargs())):
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

    def status(self) -> str | None:
        """One line about the running broker, None when it is not running."""
        pid = self.pid()
        if pid is None:
            return None
        rss = self.rss_bytes() or 0
        return f"running pid={pid} bootstrap={self.bootstrap} rss={rss / 2**20:.0f}MiB"

    def rss_bytes(self) -> int | None:
        return rss_bytes(self.pid())


# Kafka's AdminClient from the cached jars, run as a single-file Java program (the server jars carry no
# kafka-metadata-quorum tool): prints the id of the active controller, the leader of the KRaft quorum.
QUORUM_LEADER_JAVA = """\
import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;

public class QuorumLeader {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put("bootstrap.servers", args[0]);
        props.put("request.timeout.ms", "10000");
        props.put("default.api.timeout.ms", "15000");
        try (Admin admin = Admin.create(props)) {
            System.out.println(admin.describeMetadataQuorum().quorumInfo().get().leaderId());
        }
    }
}
"""


class LocalKafkaCluster:
    """N combined broker+controller nodes (all voters) on loopback, one cluster id, stopped by pid.

    Node i (from 1) listens on `ports[i-1]` (its controller on the port after it) and keeps its data,
    pid file and log in `<data_dir>/node-<i>`; `<data_dir>/cluster.json` records the cluster id and the
    ports, so a later `start` (or `stop` from another shell) finds the same cluster again.
    """

    def __init__(
        self,
        settings: LocalKafkaSettings,
        nodes: int,
        ports: Sequence[int] | None = None,
        progress: Callable[[str], None] = _say,
    ) -> None:
        if nodes < 2:
            raise LocalKafkaError(f"a cluster has at least 2 nodes, got {nodes} (the single-node broker: LocalKafka)")
        self.settings = settings
        self.progress = progress
        self.data_dir = settings.data_dir.resolve()
        recorded = self.recorded(self.data_dir)
        if recorded is not None and len(recorded["ports"]) != nodes:
            raise LocalKafkaError(
                f"{self.data_dir} holds a cluster of {len(recorded['ports'])} nodes, not {nodes}; "
                "start it with that many nodes or delete it first (kafka reset)"
            )
        if recorded is not None and settings.secure and not recorded.get("secure"):
            raise LocalKafkaError(
                f"{self.data_dir} holds a plaintext cluster; delete it first (kafka reset) "
                "or give the secured cluster another LOCAL_KAFKA_DATA_DIR"
            )
        self.secure = settings.secure or bool(recorded and recorded.get("secure"))
        span = SECURE_PORT_SPAN if self.secure else NODE_PORT_SPAN
        if recorded is not None:
            chosen, cluster_id = tuple(recorded["ports"]), str(recorded["cluster_id"])
        else:
            chosen = tuple(ports) if ports else tuple(settings.port + span * i for i in range(nodes))
            cluster_id = new_cluster_id()
        if len(chosen) != nodes or len({p for port in chosen for p in range(port, port + span)}) != span * nodes:
            raise LocalKafkaError(f"{nodes} nodes need {nodes} ports at least {span} apart, got {chosen}")
        self.cluster_id = cluster_id
        self.nodes = [
            LocalKafka(
                settings.model_copy(
                    update={"port": port, "data_dir": self.data_dir / f"node-{i}", "secure": self.secure}
                ),
                progress,
                Membership(i, chosen, cluster_id),
                security_dir=self.data_dir / "security",  # one CA, one admin password for every node
            )
            for i, port in enumerate(chosen, start=1)
        ]

    @staticmethod
    def recorded(data_dir: Path) -> dict[str, Any] | None:
        """The cluster recorded in `data_dir` (its id and ports), None if there is none."""
        try:
            loaded = json.loads((data_dir / "cluster.json").read_text())
        except (FileNotFoundError, ValueError):
            return None
        return loaded if isinstance(loaded, dict) else None

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def mtls_bootstrap(self) -> str:
        return ",".join(node.mtls_bootstrap for node in self.nodes)

    def client_env(self, listener: Literal["sasl_ssl", "mtls"] = "sasl_ssl") -> dict[str, str]:
        """As `LocalKafka.client_env`, every node in the bootstrap list."""
        first = self.nodes[0]
        return secure_client_env(listener, self.bootstrap, self.mtls_bootstrap, first.pki, first.admin_password_file)

    def node(self, node_id: int) -> LocalKafka:
        return self.nodes[node_id - 1]

    def start(self) -> str:
        """Start every node that is not running, wait until all of them serve; return the bootstrap list."""
        started = time.monotonic()
        self.nodes[0].ensure_jars()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        record = {"cluster_id": self.cluster_id, "ports": [n.settings.port for n in self.nodes], "secure": self.secure}
        (self.data_dir / "cluster.json").write_text(json.dumps(record))
        # All at once: a voter alone cannot elect a quorum leader, so none would become ready.
        launched = {node.node_id: node.launch() for node in self.nodes if node.pid() is None}
        try:
            for node in self.nodes:
                node.wait_ready(launched.get(node.node_id))
            self.wait_brokers(len(self.nodes))
        except LocalKafkaError:
            self.stop()
            raise
        pids = ", ".join(str(node.pid()) for node in self.nodes)
        self.progress(
            f"{len(self.nodes)}-node cluster ready in {time.monotonic() - started:.1f}s on {self.bootstrap} "
            f"(pids {pids}, data {self.data_dir})"
        )
        return self.bootstrap

    def wait_brokers(self, count: int, timeout_s: float | None = None) -> None:
        """Until the cluster's metadata lists `count` live brokers."""
        deadline = time.monotonic() + (timeout_s or self.settings.start_timeout_s)
        while time.monotonic() < deadline:
            if asyncio.run(live_brokers(self.bootstrap, client=self.nodes[0].client_kwargs())) >= count:
                return
            time.sleep(0.2)
        raise LocalKafkaError(f"fewer than {count} brokers registered; see {self.data_dir}/node-*/broker.log")

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM every node at once (one by one, the last ones would wait for a quorum that is gone)."""
        running = [(node, pid) for node in self.nodes if (pid := node.pid()) is not None]
        if running:
            self.progress(f"stopping {len(running)} node(s) (pids {', '.join(str(pid) for _, pid in running)})")
        for _, pid in running:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for _, pid in running:
            if not wait_gone(pid, max(0.1, deadline - time.monotonic())):
                os.kill(pid, signal.SIGKILL)
                wait_gone(pid, 10.0)
        for node in self.nodes:
            node.pid_file.unlink(missing_ok=True)

    def reset(self) -> None:
        """Stop every node and delete the cluster's data."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def ensure_jars(self) -> Path:
        return self.nodes[0].ensure_jars()

    def status(self) -> str | None:
        """One line per node, None when no node runs."""
        lines = [f"node {node.node_id}: {node.status() or 'not running'}" for node in self.nodes]
        return "\n".join(lines) if any(node.pid() is not None for node in self.nodes) else None

    def pids(self) -> dict[int, int | None]:
        return {node.node_id: node.pid() for node in self.nodes}

    def active_controller(self, timeout_s: float = 60.0) -> int:
        """The node id of the active controller (the KRaft quorum leader), asked through the running nodes."""
        source = self.data_dir / "QuorumLeader.java"
        source.write_text(QUORUM_LEADER_JAVA)
        live = ",".join(node.bootstrap for node in self.nodes if node.pid() is not None)
        command = self.nodes[0]._java(str(source), live)
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
        lines = result.stdout.strip().splitlines()
        if result.returncode != 0 or not lines or not lines[-1].lstrip("-").isdigit():
            raise LocalKafkaError(f"could not describe the metadata quorum:\n{result.stdout}\n{result.stderr}")
        return int(lines[-1])


def local_broker(settings: LocalKafkaSettings, nodes: int | None = None) -> LocalKafka | LocalKafkaCluster:
    """The local broker of `settings`: a cluster of `nodes` nodes (in `<data_dir>/cluster`) or the single node.

    Without `nodes`, the cluster recorded in `<data_dir>/cluster` if there is one, else the single node.
    """
    cluster_dir = settings.data_dir / "cluster"
    if nodes is None:
        recorded = LocalKafkaCluster.recorded(cluster_dir.resolve())
        nodes = len(recorded["ports"]) if recorded else 1
    if nodes < 1:
        raise LocalKafkaError(f"a local Kafka has at least 1 node, got {nodes}")
    if nodes == 1:
        return LocalKafka(settings)
    return LocalKafkaCluster(settings.model_copy(update={"data_dir": cluster_dir}), nodes)


def new_cluster_id() -> str:
    return uuid.uuid4().hex[:22]


async def live_brokers(bootstrap: str, timeout_s: float = 5.0, client: dict[str, Any] | None = None) -> int:
    """How many brokers the cluster's metadata lists (0 when nobody answers); `client`: security kwargs."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000), **(client or {}))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        cluster = await asyncio.wait_for(admin.describe_cluster(), timeout_s)
        return len(cluster.get("brokers") or [])
    except Exception:
        return 0
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


async def answers_metadata(
    bootstrap: str, timeout_s: float = 5.0, coordinators: bool = False, client: dict[str, Any] | None = None
) -> bool:
    """True when a broker at `bootstrap` answers a metadata request with at least one broker.

    With `coordinators`, also when the group and transaction coordinators answer: the first such
    request creates __consumer_offsets and __transaction_state, so clients never see them missing.
    `client`: the aiokafka security keyword arguments (`LocalKafka.client_kwargs`) of a secured broker.
    """
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:  # a plain connect first, so a broker still booting does not flood the log with client errors
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout_s)
        writer.close()
    except (OSError, TimeoutError):
        return False
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000), **(client or {}))
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
