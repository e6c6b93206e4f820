"""A secured Kafka for the tests: what a managed cluster is (TLS, SASL, mTLS, OAuth, ACLs), on loopback.

One local JVM broker per session (connector.local_kafka, secured), on free ports, its data and certificates
in a temporary directory removed at the end, with the local OAuth token endpoint (connector.local_oidc) in
front of its OAUTHBEARER listener. The `secure_kafka` fixture (tests/conftest.py) hands out a `SecureBroker`:
the listeners, the CA, the super user, and the means to make least-privilege principals (SCRAM users, client
certificates, OAuth clients), the `KAFKA_*` environment of a service connecting as one of them, and client
configurations for independent clients (confluent-kafka) and for aiokafka.

Secrets (passwords, client secrets) are only ever in 0600 files under the session's directory.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
from aiokafka.abc import AbstractTokenProvider
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from common.ports import free_ports
from connector.local_kafka import (
    SECURE_PORT_SPAN,
    LocalKafka,
    LocalKafkaSettings,
    OAuthValidation,
    SecureExtras,
)
from connector.local_oidc import LocalOidc
from connector.local_tls import CertPair, client_ssl_context
from gateway.tls import write_private

Listener = Literal["sasl_ssl", "mtls", "oauth"]
Mechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]
OAUTH_CLIENT = "pinwheel-oauth"  # the OAuth client made with the broker; its principal is User:pinwheel-oauth


class OidcTokenProvider(AbstractTokenProvider):  # type: ignore[misc]
    """aiokafka's OAUTHBEARER token source: the client-credentials grant at the token endpoint, per connection."""

    def __init__(self, token_url: str, client_id: str, secret_file: Path, scope: str = "kafka") -> None:
        self.token_url, self.client_id, self.secret_file, self.scope = token_url, client_id, secret_file, scope

    async def token(self) -> str:
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(
                self.token_url,
                data={"grant_type": "client_credentials", "scope": self.scope},
                auth=(self.client_id, self.secret_file.read_text().strip()),
            )
        response.raise_for_status()
        return str(response.json()["access_token"])


@dataclass
class SecureBroker:
    """The session's secured broker. SCRAM user `x`, certificate CN=x and OAuth client x are all `User:x`."""

    local: LocalKafka
    oidc: LocalOidc | None
    secrets_dir: Path
    sasl_ssl_bootstrap: str  # SCRAM-SHA-256/512 and PLAIN (admin only) over TLS
    mtls_bootstrap: str  # SSL, client certificates required
    oauth_bootstrap: str | None  # SASL_SSL OAUTHBEARER, tokens from `token_url`
    mismatch_bootstrap: str | None  # SASL_SSL SCRAM-SHA-512 with a certificate for another host name
    ca_file: Path  # signed the broker's and the clients' certificates
    other_ca_file: Path  # an unrelated CA: trusting only it, a client must refuse the broker
    admin_user: str  # super user (SCRAM, PLAIN; also the certificate CN=admin)
    admin_password_file: Path
    token_url: str | None
    oauth_client_id: str | None
    oauth_client_secret_file: Path | None
    _passwords: dict[str, Path] = field(default_factory=dict, repr=False)
    _admin: AdminClient | None = field(default=None, repr=False)

    # -- principals ------------------------------------------------------------------------------

    def add_scram_user(self, name: str, password: str | None = None) -> Path:
        """Create (or reset) SCRAM-SHA-256 and -512 credentials of `name` at run time; returns its password file.

        Returns once the broker lists the user, so a client may log in right away.
        """
        password = password or secrets.token_urlsafe(18)
        path = self.secrets_dir / f"{name}.password"
        write_private(path, password.encode())
        admin = self.admin_client()
        for mechanism in (ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512):  # one user, one per request
            upsert = UserScramCredentialUpsertion(name, ScramCredentialInfo(mechanism, 8192), password.encode())
            for future in admin.alter_user_scram_credentials([upsert]).values():
                future.result(timeout=30)
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(Exception):
                described = admin.describe_user_scram_credentials([name])[name].result(timeout=10)
                if len(described.scram_credential_infos) == 2:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the broker does not list the SCRAM user {name}")
            time.sleep(0.1)
        self._passwords[name] = path
        return path

    def add_scram_users(self, names: Iterable[str]) -> dict[str, Path]:
        """`add_scram_user` for many users at once (two requests in all, not two per user): name -> password file.

        SCRAM-SHA-512 only (what `env` uses by default). Returns once the broker lists every one of them.
        """
        passwords = {name: secrets.token_urlsafe(18) for name in names}
        for name, password in passwords.items():
            write_private(self.secrets_dir / f"{name}.password", password.encode())
        admin = self.admin_client()
        upserts = [
            UserScramCredentialUpsertion(name, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), pw.encode())
            for name, pw in passwords.items()
        ]
        for future in admin.alter_user_scram_credentials(upserts).values():
            future.result(timeout=60)
        deadline = time.monotonic() + 30
        waiting = set(passwords)
        while waiting:
            with contextlib.suppress(Exception):
                described = admin.describe_user_scram_credentials(sorted(waiting))
                waiting = {name for name, future in described.items() if not future.result(timeout=10)}
            if waiting and time.monotonic() > deadline:
                raise TimeoutError(f"the broker does not list the SCRAM users {sorted(waiting)[:5]}...")
            if waiting:
                time.sleep(0.1)
        paths = {name: self.secrets_dir / f"{name}.password" for name in passwords}
        self._passwords |= paths
        return paths

    def password_file(self, name: str) -> Path:
        if name == self.admin_user:
            return self.admin_password_file
        if name not in self._passwords:
            raise KeyError(f"no SCRAM user {name}: add_scram_user({name!r}) first")
        return self._passwords[name]

    def client_cert(self, name: str, expired: bool = False) -> tuple[Path, Path]:
        """(certificate, key) of `CN=<name>` signed by the CA: the mTLS principal `User:<name>`."""
        pair = self.local.client_cert(name, expired=expired)
        return pair.cert, pair.key

    def untrusted_client_cert(self, name: str) -> tuple[Path, Path]:
        """(certificate, key) of `CN=<name>` signed by a CA the broker does not trust."""
        pair = self.local.pki.untrusted_client(name)
        return pair.cert, pair.key

    def add_oauth_client(self, client_id: str) -> Path:
        """Register an OAuth client at the token endpoint (principal `User:<client_id>`); returns its secret file."""
        if self.oidc is None:
            raise RuntimeError("this broker has no OAUTHBEARER listener")
        path = self.secrets_dir / f"{client_id}.client-secret"
        write_private(path, self.oidc.add_client(client_id).encode())
        return path

    def oauth_secret_file(self, client_id: str) -> Path:
        path = self.secrets_dir / f"{client_id}.client-secret"
        if not path.exists():
            raise KeyError(f"no OAuth client {client_id}: add_oauth_client({client_id!r}) first")
        return path

    # -- clients ---------------------------------------------------------------------------------

    def env(
        self, listener: Listener, user: str | None = None, mechanism: Mechanism = "SCRAM-SHA-512"
    ) -> dict[str, str]:
        """The `KAFKA_*` variables of a service connecting as `user` (default: the admin, or the OAuth client).

        sasl_ssl: the user's SCRAM (or PLAIN) password file; mtls: the certificate `CN=<user>`; oauth: the
        OAuth client `user`'s id and secret file at the token endpoint.
        """
        env = {"KAFKA_SSL_CA_FILE": str(self.ca_file)}
        if listener == "sasl_ssl":
            name = user or self.admin_user
            return env | {
                "KAFKA_BOOTSTRAP_SERVERS": self.sasl_ssl_bootstrap,
                "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "KAFKA_SASL_MECHANISM": mechanism,
                "KAFKA_SASL_USERNAME": name,
                "KAFKA_SASL_PASSWORD_FILE": str(self.password_file(name)),
            }
        if listener == "mtls":
            cert, key = self.client_cert(user or self.admin_user)
            return env | {
                "KAFKA_BOOTSTRAP_SERVERS": self.mtls_bootstrap,
                "KAFKA_SECURITY_PROTOCOL": "SSL",
                "KAFKA_SSL_CERT_FILE": str(cert),
                "KAFKA_SSL_KEY_FILE": str(key),
            }
        client_id, token_url, bootstrap = self._oauth(user)
        return env | {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "OAUTHBEARER",
            "KAFKA_SASL_OAUTH_TOKEN_URL": token_url,
            "KAFKA_SASL_OAUTH_CLIENT_ID": client_id,
            "KAFKA_SASL_OAUTH_CLIENT_SECRET_FILE": str(self.oauth_secret_file(client_id)),
            "KAFKA_SASL_OAUTH_SCOPE": "kafka",
        }

    def _oauth(self, user: str | None) -> tuple[str, str, str]:
        if self.token_url is None or self.oauth_bootstrap is None or self.oauth_client_id is None:
            raise RuntimeError("this broker has no OAUTHBEARER listener")
        return user or self.oauth_client_id, self.token_url, self.oauth_bootstrap

    def confluent_config(
        self, listener: Listener, user: str | None = None, mechanism: Mechanism = "SCRAM-SHA-512"
    ) -> dict[str, str]:
        """librdkafka configuration (confluent-kafka: an independent client) for `env`'s principal."""
        env = self.env(listener, user, mechanism)
        config = {
            "bootstrap.servers": env["KAFKA_BOOTSTRAP_SERVERS"],
            "security.protocol": env["KAFKA_SECURITY_PROTOCOL"],
            "ssl.ca.location": env["KAFKA_SSL_CA_FILE"],
        }
        if listener == "sasl_ssl":
            config |= {
                "sasl.mechanism": mechanism,
                "sasl.username": env["KAFKA_SASL_USERNAME"],
                "sasl.password": Path(env["KAFKA_SASL_PASSWORD_FILE"]).read_text().strip(),
            }
        elif listener == "mtls":
            config |= {
                "ssl.certificate.location": env["KAFKA_SSL_CERT_FILE"],
                "ssl.key.location": env["KAFKA_SSL_KEY_FILE"],
            }
        else:
            config |= {
                "sasl.mechanism": "OAUTHBEARER",
                "sasl.oauthbearer.method": "oidc",
                "sasl.oauthbearer.token.endpoint.url": env["KAFKA_SASL_OAUTH_TOKEN_URL"],
                "sasl.oauthbearer.client.id": env["KAFKA_SASL_OAUTH_CLIENT_ID"],
                "sasl.oauthbearer.client.secret": Path(env["KAFKA_SASL_OAUTH_CLIENT_SECRET_FILE"]).read_text(),
                "sasl.oauthbearer.scope": env["KAFKA_SASL_OAUTH_SCOPE"],
            }
        return config

    def aiokafka_kwargs(
        self, listener: Listener, user: str | None = None, mechanism: Mechanism = "SCRAM-SHA-512"
    ) -> dict[str, Any]:
        """aiokafka keyword arguments (`bootstrap_servers` included) for `env`'s principal."""
        env = self.env(listener, user, mechanism)
        if listener == "mtls":
            cert, key = self.client_cert(user or self.admin_user)
            context = client_ssl_context(self.ca_file, CertPair(cert, key))
            return {
                "bootstrap_servers": env["KAFKA_BOOTSTRAP_SERVERS"],
                "security_protocol": "SSL",
                "ssl_context": context,
            }
        kwargs: dict[str, Any] = {
            "bootstrap_servers": env["KAFKA_BOOTSTRAP_SERVERS"],
            "security_protocol": "SASL_SSL",
            "ssl_context": client_ssl_context(self.ca_file),
        }
        if listener == "sasl_ssl":
            return kwargs | {
                "sasl_mechanism": mechanism,
                "sasl_plain_username": env["KAFKA_SASL_USERNAME"],
                "sasl_plain_password": Path(env["KAFKA_SASL_PASSWORD_FILE"]).read_text().strip(),
            }
        provider = OidcTokenProvider(
            env["KAFKA_SASL_OAUTH_TOKEN_URL"],
            env["KAFKA_SASL_OAUTH_CLIENT_ID"],
            Path(env["KAFKA_SASL_OAUTH_CLIENT_SECRET_FILE"]),
        )
        return kwargs | {"sasl_mechanism": "OAUTHBEARER", "sasl_oauth_token_provider": provider}

    def grant(self, entries: list[dict[str, str]]) -> None:
        """Create the ACLs of `pinwheel-connector acls --format json` objects (as the super user)."""
        for future in self.admin_client().create_acls([acl_binding(entry) for entry in entries]).values():
            future.result(timeout=30)

    def allow_topic(self, principal: str, topic: str, *operations: AclOperation) -> None:
        """ALLOW `operations` on the literal `topic` for `principal` (as the super user)."""
        bindings = [
            AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, principal, "*", op,
                       AclPermissionType.ALLOW)
            for op in operations
        ]  # fmt: skip
        for future in self.admin_client().create_acls(bindings).values():
            future.result(timeout=30)

    def admin_client(self) -> AdminClient:
        """The session's confluent-kafka AdminClient as the super user (SCRAM-SHA-512): ACLs, users, topics.

        One client, kept: a dropped AdminClient fails its pending futures (`_DESTROY`).
        """
        if self._admin is None:
            self._admin = AdminClient(self.confluent_config("sasl_ssl"))
        return self._admin


def acl_binding(entry: dict[str, str]) -> AclBinding:
    """One object of `pinwheel-connector acls --format json` as confluent-kafka's AclBinding."""
    return AclBinding(
        ResourceType[entry["restype"]], entry["name"], ResourcePatternType[entry["resource_pattern_type"]],
        entry["principal"], entry["host"], AclOperation[entry["operation"]],
        AclPermissionType[entry["permission_type"]],
    )  # fmt: skip


@contextlib.contextmanager
def secure_broker(oauth: bool = True) -> Iterator[SecureBroker]:
    """Start a secured local broker (and its token endpoint) in a temporary directory; remove both at the end."""
    data_dir = Path(tempfile.mkdtemp(prefix="pinwheel-secure-kafka-test-"))
    oidc = LocalOidc() if oauth else None
    validation = None
    if oidc is not None:
        oidc.start()
        validation = OAuthValidation(oidc.jwks_url, oidc.issuer, oidc.audience)
    settings = LocalKafkaSettings(port=free_ports(1, SECURE_PORT_SPAN)[0], data_dir=data_dir / "kafka", secure=True)
    local = LocalKafka(settings, extras=SecureExtras(oauth=validation, mismatch=True))
    secrets_dir = data_dir / "secrets"
    secrets_dir.mkdir(mode=0o700)
    try:
        local.start()
        broker = SecureBroker(
            local=local,
            oidc=oidc,
            secrets_dir=secrets_dir,
            sasl_ssl_bootstrap=local.bootstrap,
            mtls_bootstrap=local.mtls_bootstrap,
            oauth_bootstrap=local.oauth_bootstrap,
            mismatch_bootstrap=local.mismatch_bootstrap,
            ca_file=local.pki.ca_file,
            other_ca_file=local.pki.other_ca_file,
            admin_user=local.admin_user,
            admin_password_file=local.admin_password_file,
            token_url=oidc.token_url if oidc else None,
            oauth_client_id=OAUTH_CLIENT if oidc else None,
            oauth_client_secret_file=None,
        )
        if oidc is not None:
            broker.oauth_client_secret_file = broker.add_oauth_client(OAUTH_CLIENT)
        yield broker
    finally:
        local.stop()
        if oidc is not None:
            oidc.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
