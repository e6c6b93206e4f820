"""`docker compose up --no-deps topics gateway processor` against a SECURED Kafka, the user's own cluster.

The broker is our Kafka image (KAFKA_IMAGE) in a container the test starts on a Docker network it creates: SCRAM
over TLS (SASL_SSL) for the containers on that network, under the alias `kafka-secured`; mutual TLS published on
127.0.0.1 for the test itself; the brokers' own traffic (inter-broker, controller) mutual TLS as `User:broker`;
the StandardAuthorizer with `allow.everyone.if.no.acl.found=false`; super users `admin` and `broker` only. The
certificates come from connector.local_tls (the broker's names the alias, localhost and 127.0.0.1); the PEM key
store and the CA are mounted read-only, the key readable by the broker's uid alone.

The users are made from the host by the admin (its client certificate, over the published mTLS listener) with
AlterUserScramCredentials, as on a managed cluster where nobody formats the storage: one SCRAM user per service
(`pinwheel-topics`, `pinwheel-gateway`, `pinwheel-processors`, the principals `pinwheel-connector acls` prints),
each holding only the ACLs that command prints for it (`component_acls`). No password is ever on a command line,
in an environment variable or in a log: they are 0600 files owned by the container user (uid 10001), handed to
compose as secrets (docker-compose.yml's per-service `<SERVICE>_KAFKA_SASL_PASSWORD_SECRET`), and the
containers join the broker's network through docker/kafka-network.yml.

Signed traffic goes from the simulator to the gateway's port on 127.0.0.1; an independent downstream reader
(confluent-kafka, librdkafka, over mTLS as `pinwheel-downstream`, Read on the updates topic and nothing else,
`read_committed`, decoding with plain fastavro) finds every update the simulator's ledger expects, once. Every
container, network and volume the test made is removed at the end, also on failure, and checked gone.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from common.ports import free_port
from connector.local_kafka import LocalKafkaSettings
from connector.local_tls import LocalPki
from schemas import catalog
from simulator.ledger import read_ledger
from simulator.verify import expectations
from tests.compose.test_compose_e2e import CLI, FOREIGN, IMAGES, ROOT, Project, _compose_cli, _say
from tests.downstream_reader import read_updates
from tests.kafka_broker import docker_available
from tests.secure_kafka import acl_binding

pytestmark = [pytest.mark.compose, pytest.mark.timeout(1800)]

ALIAS = "kafka-secured"  # the broker's name on the test's network, and its certificate's
SASL_SSL_PORT = 9094  # SCRAM over TLS, for the containers on the network
MTLS_PORT = 9095  # mutual TLS, published on 127.0.0.1 for the test
BROKER_PORT = 9096  # the broker's own traffic (inter-broker), in the container only
CONTROLLER_PORT = 9093
OFFICIAL_KAFKA_IMAGE = f"apache/kafka:{LocalKafkaSettings.model_fields['version'].default}"  # as docker-compose.yml
KAFKA_UID = 1000  # our Kafka image's user (docker/kafka/Dockerfile)
CONNECTOR_UID = 10001  # the connector image's user (Dockerfile)
APPLICATION_ID = "pinwheel-processor"  # docker-compose.yml's PROCESSOR_APPLICATION_ID
# compose service → (its `acls` component, the user it logs in as: the command's default principal)
SERVICES = {
    "topics": ("topics", "pinwheel-topics"),
    "gateway": ("gateway", "pinwheel-gateway"),
    "processor": ("processors", "pinwheel-processors"),
}
DOWNSTREAM = ("verify", "pinwheel-downstream")  # the independent reader: Read on the updates topic only


def _own(path: Path, uid: int, mode: int = 0o600) -> None:
    """`path` for the container user `uid` alone, as a deployment has it; without root (no chown) readable by all."""
    if os.geteuid() == 0:
        os.chown(path, uid, 0)
        path.chmod(mode)
    else:
        path.chmod(mode | 0o044)


# -- the ACLs ------------------------------------------------------------------------------------------------


def component_acls(principals: Mapping[str, str]) -> list[dict[str, str]]:
    """`pinwheel-connector acls --format json` for these components (component → principal): AclBinding kwargs,
    exactly what a user of a managed cluster is told to grant."""
    command = [str(CLI), "acls", "--format", "json", "--application-id", APPLICATION_ID]
    for component, principal in principals.items():
        command += ["--component", component, "--principal", f"{component}={principal}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    bindings: list[dict[str, str]] = json.loads(result.stdout)
    return bindings


# -- the secured broker in a container ------------------------------------------------------------------------


@dataclass
class SecuredKafka:
    """Our Kafka image on `network` as ALIAS: SASL_SSL (SCRAM) inside, mTLS on 127.0.0.1:`mtls_port`."""

    network: str
    container: str
    mtls_port: int
    pki: LocalPki
    secrets_dir: Path  # the users' password files (0600, uid 10001)
    _admin: AdminClient | None = None

    def client_config(self, user: str) -> dict[str, Any]:
        """librdkafka over the published mTLS listener as `User:<user>` (its certificate, CN=<user>)."""
        pair = self.pki.client(user)
        return {
            "bootstrap.servers": f"127.0.0.1:{self.mtls_port}",
            "security.protocol": "SSL",
            "ssl.ca.location": str(self.pki.ca_file),
            "ssl.certificate.location": str(pair.cert),
            "ssl.key.location": str(pair.key),
        }

    def admin(self) -> AdminClient:
        """The super user `admin`, kept (a dropped AdminClient fails its pending futures)."""
        if self._admin is None:
            self._admin = AdminClient(self.client_config("admin"))
        return self._admin

    def close(self) -> None:
        self._admin = None

    def wait_ready(self, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.admin().list_topics(timeout=5)
                return
            except KafkaException as exc:
                if time.monotonic() > deadline:
                    logs = _docker("logs", "--tail", "60", self.container, check=False)
                    raise AssertionError(f"the broker did not answer within {timeout_s}s: {exc}\n{logs}") from exc
            time.sleep(1)

    def add_scram_user(self, name: str) -> Path:
        """SCRAM-SHA-512 credentials of `name`, made by the admin; returns its password file (0600, uid 10001)."""
        password = secrets.token_urlsafe(24)
        path = self.secrets_dir / f"{name}.password"
        path.write_text(password)
        _own(path, CONNECTOR_UID)
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
        upsert = UserScramCredentialUpsertion(name, info, password.encode())
        for future in self.admin().alter_user_scram_credentials([upsert]).values():
            future.result(timeout=30)
        return path

    def grant(self, bindings: list[dict[str, str]]) -> None:
        for future in self.admin().create_acls([acl_binding(b) for b in bindings]).values():
            future.result(timeout=30)


def _docker(*args: str, check: bool = True) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=300, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} ... failed ({result.returncode}): {result.stderr[-2000:]}")
    return result.stdout + (result.stderr if not check else "")


def _docker_ok(*args: str) -> bool:
    return subprocess.run(["docker", *args], capture_output=True, timeout=120, check=False).returncode == 0


def _broker_environment(mtls_port: int) -> dict[str, str]:
    """The server properties, in our image's KAFKA_* interface (docker/kafka/run): no secret among them."""
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    return {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": f"DOCKER://:{SASL_SSL_PORT},HOST://:{MTLS_PORT},BROKER://localhost:{BROKER_PORT},"
        f"CONTROLLER://localhost:{CONTROLLER_PORT}",
        "KAFKA_ADVERTISED_LISTENERS": f"DOCKER://{ALIAS}:{SASL_SSL_PORT},HOST://127.0.0.1:{mtls_port},"
        f"BROKER://localhost:{BROKER_PORT}",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "DOCKER:SASL_SSL,HOST:SSL,BROKER:SSL,CONTROLLER:SSL",
        "KAFKA_INTER_BROKER_LISTENER_NAME": "BROKER",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": f"1@localhost:{CONTROLLER_PORT}",
        "KAFKA_SSL_KEYSTORE_TYPE": "PEM",
        "KAFKA_SSL_KEYSTORE_LOCATION": "/etc/kafka/secrets/broker.pem",
        "KAFKA_SSL_TRUSTSTORE_TYPE": "PEM",
        "KAFKA_SSL_TRUSTSTORE_LOCATION": "/etc/kafka/secrets/ca.crt",
        "KAFKA_SSL_CLIENT_AUTH": "none",
        "KAFKA_LISTENER_NAME_HOST_SSL_CLIENT_AUTH": "required",
        "KAFKA_LISTENER_NAME_BROKER_SSL_CLIENT_AUTH": "required",
        "KAFKA_LISTENER_NAME_CONTROLLER_SSL_CLIENT_AUTH": "required",
        "KAFKA_SSL_PRINCIPAL_MAPPING_RULES": "RULE:^CN=([^,]*).*$/$1/,DEFAULT",
        "KAFKA_SASL_ENABLED_MECHANISMS": "SCRAM-SHA-512",
        "KAFKA_LISTENER_NAME_DOCKER_SASL_ENABLED_MECHANISMS": "SCRAM-SHA-512",
        "KAFKA_LISTENER_NAME_DOCKER_SCRAM___SHA___512_SASL_JAAS_CONFIG": scram,
        "KAFKA_AUTHORIZER_CLASS_NAME": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND": "false",
        "KAFKA_SUPER_USERS": "User:admin;User:broker",
        "KAFKA_LOG_DIRS": "/var/lib/kafka/data",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_HEAP_OPTS": "-Xmx512m -Xms512m",
    }


def _start_broker(name: str, work: Path) -> SecuredKafka:
    """Certificates, the network and the broker's container (not yet waited for)."""
    pki = LocalPki(work / "pki")
    mounted = work / "broker-secrets"  # what the container sees, read-only: its key store and the CA
    mounted.mkdir()
    shutil.copy(pki.keystore("broker", hosts=(ALIAS, "localhost", "127.0.0.1")), mounted / "broker.pem")
    shutil.copy(pki.ca_file, mounted / "ca.crt")
    _own(mounted / "broker.pem", KAFKA_UID)
    _own(mounted / "ca.crt", KAFKA_UID, 0o644)
    secrets_dir = work / "users"
    secrets_dir.mkdir(mode=0o700)
    mtls_port = free_port()
    network, container = f"{name}-net", f"{name}-kafka"
    _docker("network", "create", "--label", f"pinwheel-test={name}", network)
    environment = [arg for key, value in _broker_environment(mtls_port).items() for arg in ("-e", f"{key}={value}")]
    _docker(
        "run", "-d", "--name", container, "--label", f"pinwheel-test={name}", "--network", network,
        "--network-alias", ALIAS, "-p", f"127.0.0.1:{mtls_port}:{MTLS_PORT}",
        "-v", f"{mounted}:/etc/kafka/secrets:ro", *environment, os.environ.get("KAFKA_IMAGE", OFFICIAL_KAFKA_IMAGE),
    )  # fmt: skip
    return SecuredKafka(network, container, mtls_port, pki, secrets_dir)


def _remove_broker(name: str) -> None:
    """Remove the container, its anonymous data volume and the network the test labelled `name`; check them gone."""
    label = f"label=pinwheel-test={name}"
    containers = _docker("ps", "-aq", "--filter", label).split()
    volumes = [
        volume
        for container in containers
        for volume in _docker("inspect", "--format", "{{range .Mounts}}{{.Name}} {{end}}", container).split()
    ]
    for container in containers:
        _docker("rm", "-f", "-v", container, check=False)
    for network in _docker("network", "ls", "-q", "--filter", label).split():
        _docker("network", "rm", network, check=False)
    left = _docker("ps", "-aq", "--filter", label).split()
    networks = _docker("network", "ls", "-q", "--filter", label).split()
    still = [v for v in volumes if _docker_ok("volume", "inspect", v)]
    assert (left, networks, still) == ([], [], []), "the secured broker left things behind"


# -- the scenario ---------------------------------------------------------------------------------------------


@dataclass
class Secured:
    project: Project
    kafka: SecuredKafka


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    if not docker_available():
        pytest.skip("NO DOCKER ENGINE answers (DOCKER_HOST; `make docker-engine`): the compose test did not run")
    cli = _compose_cli()
    if cli is None:
        pytest.skip("NO COMPOSE CLI (docker compose / docker-compose): the compose test did not run")
    work = tmp_path_factory.mktemp("compose-secured")
    name = f"pwsec{secrets.token_hex(4)}"
    api_secret = secrets.token_hex(16)
    api_secret_file = work / "pinwheel-api-secret"
    api_secret_file.write_text(api_secret)
    _own(api_secret_file, CONNECTOR_UID)
    started = time.monotonic()
    kafka: SecuredKafka | None = None
    project: Project | None = None
    try:
        kafka = _start_broker(name, work)
        kafka.wait_ready()
        _say(f"secured broker ready in {time.monotonic() - started:.0f}s ({kafka.container} on {kafka.network})")
        principals = {SERVICES[s][0]: f"User:{SERVICES[s][1]}" for s in SERVICES} | {
            DOWNSTREAM[0]: f"User:{DOWNSTREAM[1]}"
        }
        # librdkafka wants a group id even when it assigns partitions itself, and looks its coordinator up:
        # the downstream reader also reads its own group (what any downstream consumer group holds).
        downstream_group = {"restype": "GROUP", "name": DOWNSTREAM[1], "resource_pattern_type": "LITERAL",
                            "principal": f"User:{DOWNSTREAM[1]}", "host": "*", "operation": "READ",
                            "permission_type": "ALLOW"}  # fmt: skip
        kafka.grant([*component_acls(principals), downstream_group])
        ca_file = work / "kafka-ca.crt"
        shutil.copy(kafka.pki.ca_file, ca_file)
        _own(ca_file, CONNECTOR_UID, 0o644)
        gateway_port, admin_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if k in IMAGES or not k.startswith(FOREIGN)}
        env |= {
            "PINWHEEL_API_SECRET_FILE": str(api_secret_file),
            "PUBLISH_GATEWAY_PORT": str(gateway_port),
            "PUBLISH_GATEWAY_ADMIN_PORT": str(admin_port),
            "KAFKA_NETWORK": kafka.network,
            "KAFKA_BOOTSTRAP_SERVERS": f"{ALIAS}:{SASL_SSL_PORT}",
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_PASSWORD_FILE": "/run/secrets/kafka_sasl_password",
            "KAFKA_SSL_CA_FILE": "/run/secrets/kafka_ssl_ca",
            "KAFKA_SSL_CA_SECRET": str(ca_file),
            "TOPICS_PARTITIONS": "3",
        }
        for service, (_, user) in SERVICES.items():
            prefix = service.upper()
            env[f"{prefix}_KAFKA_SASL_USERNAME"] = user
            env[f"{prefix}_KAFKA_SASL_PASSWORD_SECRET"] = str(kafka.add_scram_user(user))
        project = Project(
            cli, name, env, gateway_port, 0, api_secret, work, admin_port,
            files=(ROOT / "docker-compose.yml", ROOT / "docker" / "kafka-network.yml"),
        )  # fmt: skip
        yield Secured(project, kafka)
    finally:
        try:
            if project is not None:
                project.compose("down", "-v", "--remove-orphans", "--timeout", "60")
                left = project.docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={name}").split()
                networks = project.docker("network", "ls", "-q", "--filter", f"name={name}_").split()
                volumes = project.docker("volume", "ls", "-q", "--filter", f"name={name}_").split()
                assert (left, networks, volumes) == ([], [], []), "the compose project left things behind"
        finally:
            if kafka is not None:
                kafka.close()  # before its broker goes: no reconnection noise
            _remove_broker(name)


def test_compose_up_no_deps_against_a_secured_broker(secured: Secured) -> None:
    project, kafka = secured.project, secured.kafka
    started = time.monotonic()
    project.compose("up", "-d", "--build", "--no-deps", "topics", "gateway", "processor", timeout=2400)
    project.wait_healthy({"gateway": 1, "processor": 1}, timeout_s=420)
    _say(f"services healthy on the secured broker in {time.monotonic() - started:.0f}s")
    (topics,) = project.docker(
        "ps", "-aq", "--filter", f"label=com.docker.compose.project={project.name}",
        "--filter", "label=com.docker.compose.service=topics",
    ).split()  # fmt: skip
    assert project.docker("inspect", "--format", "{{.State.ExitCode}}", topics).strip() == "0"
    # Each service logged in as its own user (the services' start-up line names it), and no password is logged.
    for service, (_, user) in SERVICES.items():
        logs = project.compose("logs", "--no-color", service)
        if service != "topics":  # the job prints what it created, nothing about its connection
            assert f"SASL_SSL (SCRAM-SHA-512 as {user})" in logs, logs[-3000:]
        password = Path(project.env[f"{service.upper()}_KAFKA_SASL_PASSWORD_SECRET"]).read_text()
        assert password not in logs

    # The authorizer denies what no ACL allows: a principal without any sees none of the topics, the downstream
    # reader the updates alone.
    def visible(user: str) -> set[str]:
        return set(AdminClient(kafka.client_config(user)).list_topics(timeout=30).topics)

    assert catalog.ACCOUNT_UPDATES_TOPIC in visible("admin")
    assert visible("pinwheel-stranger") == set()
    assert visible(DOWNSTREAM[1]) == {catalog.ACCOUNT_UPDATES_TOPIC}

    (gateway,) = project.containers("gateway")
    project.docker("cp", f"{gateway}:/data/tls/gateway.crt", str(project.work / "gateway.crt"))
    ledger_path = project.work / "ledger.jsonl"
    assert project.simulate(ledger_path, seed=21, accounts=20, spread_s=10).wait(timeout=900) == 0
    ledger = read_ledger(ledger_path)
    expected = expectations(ledger)
    assert expected.updates, "the simulator's ledger expects no update: nothing would be checked"

    seen = read_updates(
        kafka.client_config(DOWNSTREAM[1]) | {"group.id": DOWNSTREAM[1]}, set(ledger.events), expected.updates, 180
    )
    duplicated = {u for u, n in seen.items() if n > 1}
    lost = expected.updates - set(seen)
    _say(f"downstream reader: {len(seen)} updates of {len(expected.updates)} expected, "
         f"{len(lost)} lost, {len(duplicated)} duplicated")  # fmt: skip
    assert not lost, sorted(lost)[:10]
    assert not duplicated, sorted(duplicated)[:10]
    _say(f"done in {time.monotonic() - started:.0f}s")
