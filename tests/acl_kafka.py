"""An authorizing Kafka for the least-privilege tests: the local JVM broker with SASL/PLAIN users and ACLs enforced.

Clients reach one `SASL_PLAINTEXT` listener on loopback and log in as one of the users declared in its JAAS
config; `StandardAuthorizer` with `allow.everyone.if.no.acl.found=false` refuses whatever no ACL allows, so
a user holds exactly the ACLs a test gives it. `admin` is a super user (it creates and deletes ACLs); the broker
itself talks to itself on that listener as `admin` (transaction markers) and to its KRaft controller on a
PLAINTEXT loopback listener, whose `User:ANONYMOUS` is therefore a super user too (it serves no client API).

The interface is what a test needs and no more, so the same tests can later run on another secured broker
(TLS + SCRAM): `bootstrap`, `env(user)` (the KAFKA_* variables a component reads to log in as `user`) and
`admin()` (a confluent-kafka AdminClient as the super user).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from confluent_kafka.admin import AdminClient

from common.settings import KafkaSettings
from connector.local_kafka import LocalKafka, LocalKafkaError, LocalKafkaSettings, free_port, server_properties

ADMIN = "admin"
LISTENER = "SASL_PLAINTEXT"
PLAIN_LOGIN = "org.apache.kafka.common.security.plain.PlainLoginModule"

# Replaced in the local broker's server.properties (connector.local_kafka.server_properties): everything else
# (replication 1, no auto-created topics, small internal topics) stays as the other tests have it.
_REPLACED = ("listeners", "advertised.listeners", "listener.security.protocol.map", "inter.broker.listener.name")


def acl_properties(port: int, log_dir: Path, passwords: dict[str, str]) -> str:
    """server.properties of a single node that authenticates `passwords`' users (PLAIN) and enforces ACLs."""
    users = " ".join(f'user_{name}="{password}"' for name, password in passwords.items())
    jaas = f'{PLAIN_LOGIN} required username="{ADMIN}" password="{passwords[ADMIN]}" {users};'
    base = [line for line in server_properties(port, log_dir).splitlines() if line.partition("=")[0] not in _REPLACED]
    return "\n".join(
        [
            *base,
            f"listeners={LISTENER}://127.0.0.1:{port},CONTROLLER://127.0.0.1:{port + 1}",
            f"advertised.listeners={LISTENER}://127.0.0.1:{port}",
            f"listener.security.protocol.map={LISTENER}:{LISTENER},CONTROLLER:PLAINTEXT",
            f"inter.broker.listener.name={LISTENER}",
            "sasl.enabled.mechanisms=PLAIN",
            "sasl.mechanism.inter.broker.protocol=PLAIN",
            f"listener.name.{LISTENER.lower()}.plain.sasl.jaas.config={jaas}",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found=false",
            f"super.users=User:{ADMIN};User:ANONYMOUS",
            "",
        ]
    )


@dataclass
class AclKafka:
    """A running authorizing broker and the users it knows (see the module docstring)."""

    bootstrap: str
    passwords: dict[str, str] = field(repr=False)

    def env(self, user: str) -> dict[str, str]:
        """The KAFKA_* environment variables of a component logging in as `user` (a name, not `User:name`)."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "KAFKA_SECURITY_PROTOCOL": LISTENER,
            "KAFKA_SASL_MECHANISM": "PLAIN",
            "KAFKA_SASL_USERNAME": user,
            "KAFKA_SASL_PASSWORD": self.passwords[user],
        }

    def settings(self, user: str) -> KafkaSettings:
        """`env(user)` as the KafkaSettings a component builds from it (for in-process clients)."""
        e = self.env(user)
        return KafkaSettings(
            bootstrap_servers=e["KAFKA_BOOTSTRAP_SERVERS"],
            security_protocol=LISTENER,
            sasl_mechanism="PLAIN",
            sasl_username=user,
            sasl_password=e["KAFKA_SASL_PASSWORD"],
        )

    def admin(self) -> AdminClient:
        """A confluent-kafka AdminClient as the super user: it creates and deletes the ACLs of a test."""
        return AdminClient(
            {
                "bootstrap.servers": self.bootstrap,
                "security.protocol": LISTENER,
                "sasl.mechanisms": "PLAIN",
                "sasl.username": ADMIN,
                "sasl.password": self.passwords[ADMIN],
            }
        )


async def _answers(settings: KafkaSettings, timeout_s: float = 5.0) -> bool:
    """The broker authenticates the admin and its group and transaction coordinators answer (which creates
    __consumer_offsets and __transaction_state before the first test needs them)."""
    admin = AIOKafkaAdminClient(**{**settings.client_kwargs(), "request_timeout_ms": int(timeout_s * 1000)})
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        await asyncio.wait_for(admin.find_coordinator("pinwheel-warm-up", 0), timeout_s)
        await asyncio.wait_for(admin.find_coordinator("pinwheel-warm-up", 1), timeout_s)
        return True
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


@contextlib.contextmanager
def acl_broker(users: Iterable[str], version: str | None = None) -> Iterator[AclKafka]:
    """A fresh authorizing broker on free loopback ports, with `users` (and `admin`), stopped and deleted after."""
    data_dir = Path(tempfile.mkdtemp(prefix="pinwheel-kafka-acl-"))
    settings = LocalKafkaSettings(port=free_port(), data_dir=data_dir, **({"version": version} if version else {}))
    node = LocalKafka(settings)
    passwords = {name: secrets.token_hex(12) for name in (ADMIN, *users)}
    try:
        node.ensure_jars()
        log_dir = node.data_dir / "logs"
        properties = node.data_dir / "server.properties"
        node.data_dir.mkdir(parents=True, exist_ok=True)
        properties.write_text(acl_properties(settings.port, log_dir, passwords))
        node._format_storage(properties, log_dir)
        with node.log_file.open("ab") as log:
            process = subprocess.Popen(
                node._java("kafka.Kafka", str(properties), heap=settings.heap),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        node.pid_file.write_text(str(process.pid))
        broker = AclKafka(node.bootstrap, passwords)
        deadline = time.monotonic() + settings.start_timeout_s
        while not asyncio.run(_answers(broker.settings(ADMIN))):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(node.log_file.read_text(errors="replace").splitlines()[-15:])
                raise LocalKafkaError(f"the authorizing broker did not start; see {node.log_file}:\n{tail}")
            time.sleep(0.3)
        yield broker
    finally:
        node.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
