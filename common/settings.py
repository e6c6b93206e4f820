"""Settings shared by every service: how to reach Kafka, and one way to report a bad setting.

Every setting is an environment variable; docs/configuration.md lists them all (`pinwheel-connector config`,
connector/config_docs.py) and `tests/test_deployment.py` keeps that table honest.
A command that cannot build its settings prints `settings_error_text` (the variables and the reasons, never the
values: they may be secrets) and exits 2.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Literal

from aiokafka.abc import AbstractTokenProvider
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.kafka_auth import MskIamTokens, OAuthClientCredentials, OAuthConfig, ssl_context, token_provider

SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "AWS_MSK_IAM"]
TLS_PROTOCOLS = ("SSL", "SASL_SSL")
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")


def _problem(message: str) -> PydanticCustomError:
    """A settings problem whose message already names its variable (no library prefix before it)."""
    return PydanticCustomError("kafka_settings", message)


def read_secret_file(path: Path, variable: str) -> str:
    """The secret held in `path` (one trailing newline dropped), or a problem naming `variable`."""
    try:
        value = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise _problem(f"{variable}: cannot read {path} ({exc.strerror or type(exc).__name__})") from None
    except UnicodeDecodeError:
        raise _problem(f"{variable}: {path} is not UTF-8 text") from None
    value = value.removesuffix("\n").removesuffix("\r")
    if not value:
        raise _problem(f"{variable}: {path} is empty")
    return value


class KafkaSettings(BaseSettings):
    """How to reach the Kafka cluster (env prefix `KAFKA_`): every client the project makes takes `client_kwargs`.

    TLS (`SSL`, `SASL_SSL`) trusts the system store unless `KAFKA_SSL_CA_FILE` names a PEM bundle, and presents a
    client certificate (mutual TLS) when `KAFKA_SSL_CERT_FILE` is set. SASL speaks PLAIN, SCRAM-SHA-256/512,
    OAUTHBEARER (an OIDC client-credentials grant, refreshed before expiry) and Amazon MSK's IAM. Every secret can
    come from a file (`*_FILE`, as container secrets are mounted), read again whenever a client connects, so a
    rotated secret is picked up. A bad combination is refused at start, each problem naming its variable.
    """

    model_config = SettingsConfigDict(env_prefix="KAFKA_", extra="ignore")

    bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="Comma-separated host:port list of Kafka brokers."
    )
    client_id_prefix: str = Field(default="pinwheel-connector", description="Prefix of every client.id.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT",
        description="PLAINTEXT, SSL (TLS, optionally with a client certificate), SASL_PLAINTEXT or SASL_SSL.",
    )
    ssl_ca_file: Path | None = Field(
        default=None,
        description="PEM CA bundle the brokers' certificates are checked against; unset: the system store.",
    )
    ssl_cert_file: Path | None = Field(
        default=None, description="PEM client certificate (chain) for mutual TLS; may hold the key as well."
    )
    ssl_key_file: Path | None = Field(default=None, description="PEM private key of KAFKA_SSL_CERT_FILE.")
    ssl_key_password: SecretStr | None = Field(default=None, description="Password of an encrypted private key.")
    ssl_key_password_file: Path | None = Field(default=None, description="File holding KAFKA_SSL_KEY_PASSWORD.")
    ssl_check_hostname: bool = Field(
        default=True, description="Check that a broker's certificate names the host connected to (keep it on)."
    )
    sasl_mechanism: SaslMechanism | None = Field(
        default=None,
        description="PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or AWS_MSK_IAM; required with SASL_*.",
    )
    sasl_username: str | None = Field(default=None, description="SASL user name (PLAIN, SCRAM; an API key).")
    sasl_password: SecretStr | None = Field(default=None, description="SASL password (PLAIN, SCRAM; an API secret).")
    sasl_password_file: Path | None = Field(default=None, description="File holding KAFKA_SASL_PASSWORD.")
    sasl_oauth_token_url: str | None = Field(
        default=None, description="OAUTHBEARER: the OIDC token endpoint (client-credentials grant)."
    )
    sasl_oauth_client_id: str | None = Field(default=None, description="OAUTHBEARER: the OAuth client id.")
    sasl_oauth_client_secret: SecretStr | None = Field(
        default=None, description="OAUTHBEARER: the OAuth client secret (sent as HTTP Basic)."
    )
    sasl_oauth_client_secret_file: Path | None = Field(
        default=None, description="File holding KAFKA_SASL_OAUTH_CLIENT_SECRET."
    )
    sasl_oauth_scope: str | None = Field(default=None, description="OAUTHBEARER: scope requested with the token.")
    sasl_oauth_audience: str | None = Field(default=None, description="OAUTHBEARER: audience requested, if needed.")
    sasl_oauth_extensions: str | None = Field(
        default=None,
        description=(
            "OAUTHBEARER: SASL extensions as key=value,key=value (Confluent Cloud: "
            "logicalCluster=lkc-...,identityPoolId=pool-...)."
        ),
    )
    sasl_oauth_ca_file: Path | None = Field(
        default=None, description="PEM CA bundle for the token endpoint's TLS; unset: the system store."
    )
    aws_region: str | None = Field(default=None, description="AWS_MSK_IAM: the cluster's AWS region.")
    request_timeout_ms: int = Field(default=30_000, ge=1_000, description="Client request timeout.")
    startup_timeout_s: float | None = Field(
        default=None,
        gt=0,
        description="Seconds the processor waits for an unreachable Kafka before it exits 1; unset: it waits "
        "forever. Commands wait as long (unset: 30 s; their --timeout wins), then exit 2.",
    )

    @field_validator("bootstrap_servers")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        hosts = [h.strip() for h in value.split(",") if h.strip()]
        if not hosts or any(":" not in h for h in hosts):
            raise ValueError(f"expected host:port[,host:port...], got {value!r}")
        return ",".join(hosts)

    @field_validator("sasl_oauth_extensions")
    @classmethod
    def _check_extensions(cls, value: str | None) -> str | None:
        if value is not None and any("=" not in pair for pair in value.split(",") if pair.strip()):
            raise ValueError("expected key=value[,key=value...]")
        return value

    @model_validator(mode="after")
    def _check_security(self) -> KafkaSettings:
        protocol = self.security_protocol
        tls_files = {
            "KAFKA_SSL_CA_FILE": self.ssl_ca_file,
            "KAFKA_SSL_CERT_FILE": self.ssl_cert_file,
            "KAFKA_SSL_KEY_FILE": self.ssl_key_file,
        }
        if protocol in TLS_PROTOCOLS:
            self._check_tls()
        elif set_files := [name for name, path in tls_files.items() if path is not None]:
            raise _problem(
                f"{set_files[0]}: set, but KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS (use SSL or SASL_SSL)"
            )
        if protocol in SASL_PROTOCOLS:
            self._check_sasl()
        elif self.sasl_mechanism is not None:
            raise _problem(
                f"KAFKA_SASL_MECHANISM: set, but KAFKA_SECURITY_PROTOCOL={protocol} does not use SASL "
                "(use SASL_SSL or SASL_PLAINTEXT)"
            )
        return self

    def _check_tls(self) -> None:
        if self.ssl_key_file is not None and self.ssl_cert_file is None:
            raise _problem("KAFKA_SSL_KEY_FILE: set without KAFKA_SSL_CERT_FILE (the certificate it belongs to)")
        check_secret(self.ssl_key_password, self.ssl_key_password_file, "KAFKA_SSL_KEY_PASSWORD", required=False)
        for name, path in (("KAFKA_SSL_CA_FILE", self.ssl_ca_file), ("KAFKA_SSL_CERT_FILE", self.ssl_cert_file),
                           ("KAFKA_SSL_KEY_FILE", self.ssl_key_file)):  # fmt: skip
            if path is not None and not path.is_file():
                raise _problem(f"{name}: no such file {path}")
        try:
            ssl_context(self.ssl_ca_file)
        except (ssl.SSLError, OSError) as exc:
            raise _problem(
                f"KAFKA_SSL_CA_FILE: {self.ssl_ca_file} is not a usable PEM CA bundle ({_reason(exc)})"
            ) from None
        if self.ssl_cert_file is not None:
            try:
                ssl_context(None, self.ssl_cert_file, self.ssl_key_file, self._key_password())
            except (ssl.SSLError, OSError) as exc:
                raise _problem(
                    f"KAFKA_SSL_CERT_FILE: {self.ssl_cert_file} and its key do not load as a PEM client "
                    f"certificate ({_reason(exc)}; check KAFKA_SSL_KEY_FILE and KAFKA_SSL_KEY_PASSWORD)"
                ) from None

    def _check_sasl(self) -> None:
        mechanism = self.sasl_mechanism
        if mechanism is None:
            raise _problem(
                f"KAFKA_SASL_MECHANISM: required with KAFKA_SECURITY_PROTOCOL={self.security_protocol} "
                "(PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or AWS_MSK_IAM)"
            )
        if mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
            if not self.sasl_username:
                raise _problem(f"KAFKA_SASL_USERNAME: required with KAFKA_SASL_MECHANISM={mechanism}")
            check_secret(self.sasl_password, self.sasl_password_file, "KAFKA_SASL_PASSWORD", required=True)
        elif mechanism == "OAUTHBEARER":
            for name, value in (("KAFKA_SASL_OAUTH_TOKEN_URL", self.sasl_oauth_token_url),
                                ("KAFKA_SASL_OAUTH_CLIENT_ID", self.sasl_oauth_client_id)):  # fmt: skip
                if not value:
                    raise _problem(f"{name}: required with KAFKA_SASL_MECHANISM=OAUTHBEARER")
            if not str(self.sasl_oauth_token_url).startswith(("https://", "http://")):
                raise _problem("KAFKA_SASL_OAUTH_TOKEN_URL: expected an http(s):// URL")
            check_secret(self.sasl_oauth_client_secret, self.sasl_oauth_client_secret_file,
                    "KAFKA_SASL_OAUTH_CLIENT_SECRET", required=True)  # fmt: skip
            if self.sasl_oauth_ca_file is not None and not self.sasl_oauth_ca_file.is_file():
                raise _problem(f"KAFKA_SASL_OAUTH_CA_FILE: no such file {self.sasl_oauth_ca_file}")
        elif mechanism == "AWS_MSK_IAM":
            if self.security_protocol != "SASL_SSL":
                raise _problem("KAFKA_SECURITY_PROTOCOL: AWS_MSK_IAM needs SASL_SSL")
            if not self.aws_region:
                raise _problem("KAFKA_AWS_REGION: required with KAFKA_SASL_MECHANISM=AWS_MSK_IAM")

    # -- secrets, read when a client is made (a rotated file is picked up by the next connection) ---------------

    def _key_password(self) -> str | None:
        return secret_value(self.ssl_key_password, self.ssl_key_password_file, "KAFKA_SSL_KEY_PASSWORD")

    def sasl_password_value(self) -> str | None:
        return secret_value(self.sasl_password, self.sasl_password_file, "KAFKA_SASL_PASSWORD")

    def oauth_config(self) -> OAuthConfig:
        secret = secret_value(self.sasl_oauth_client_secret, self.sasl_oauth_client_secret_file,
                         "KAFKA_SASL_OAUTH_CLIENT_SECRET")  # fmt: skip
        extensions = tuple(
            (key.strip(), value.strip())
            for key, _, value in (pair.partition("=") for pair in (self.sasl_oauth_extensions or "").split(","))
            if key.strip()
        )
        return OAuthConfig(
            token_url=str(self.sasl_oauth_token_url),
            client_id=str(self.sasl_oauth_client_id),
            client_secret=secret or "",
            scope=self.sasl_oauth_scope,
            audience=self.sasl_oauth_audience,
            extensions=extensions,
            ca_file=self.sasl_oauth_ca_file,
            timeout_s=self.request_timeout_ms / 1000,
        )

    def _token_provider(self) -> AbstractTokenProvider:
        if self.sasl_mechanism == "AWS_MSK_IAM":
            region = str(self.aws_region)
            return token_provider(("msk", region), lambda: MskIamTokens(region))
        config = self.oauth_config()
        return token_provider(config, lambda: OAuthClientCredentials(config))

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of SSL / SASL_SSL (None otherwise)."""
        if self.security_protocol not in TLS_PROTOCOLS:
            return None
        return ssl_context(
            self.ssl_ca_file, self.ssl_cert_file, self.ssl_key_file, self._key_password(), self.ssl_check_hostname
        )

    def client_kwargs(self) -> dict[str, object]:
        """Keyword arguments common to every aiokafka client: address, timeouts, TLS and SASL."""
        kwargs: dict[str, object] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
        }
        if (context := self.ssl_context()) is not None:
            kwargs["ssl_context"] = context
        match self.sasl_mechanism:
            case None:
                pass
            case "OAUTHBEARER" | "AWS_MSK_IAM":
                kwargs |= {"sasl_mechanism": "OAUTHBEARER", "sasl_oauth_token_provider": self._token_provider()}
            case mechanism:
                kwargs |= {
                    "sasl_mechanism": mechanism,
                    "sasl_plain_username": self.sasl_username,
                    "sasl_plain_password": self.sasl_password_value(),
                }
        return kwargs

    def describe(self) -> str:
        """How the clients connect, for a start-up log line (no secret, no file content)."""
        text = f"{self.bootstrap_servers} over {self.security_protocol}"
        if self.sasl_mechanism:
            who = f" as {self.sasl_username}" if self.sasl_username else ""
            text += f" ({self.sasl_mechanism}{who})"
        if self.ssl_cert_file is not None and self.security_protocol in TLS_PROTOCOLS:
            text += " with a client certificate"
        return text


def check_secret(value: SecretStr | None, path: Path | None, variable: str, *, required: bool) -> None:
    """A secret given as `variable` or as `variable`_FILE (not both), its file readable; raises a problem."""
    if value is not None and path is not None:
        raise _problem(f"{variable}: set either {variable} or {variable}_FILE, not both")
    if path is not None:
        read_secret_file(path, f"{variable}_FILE")
    elif required and (value is None or not value.get_secret_value()):
        raise _problem(f"{variable}: required (or {variable}_FILE)")


def secret_value(value: SecretStr | None, path: Path | None, variable: str) -> str | None:
    """The secret from its file (read now: a rotated file counts) or from the environment."""
    if path is not None:
        return read_secret_file(path, f"{variable}_FILE")
    return value.get_secret_value() if value is not None else None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    return getattr(exc, "strerror", None) or type(exc).__name__


def env_names(cls: type[BaseSettings]) -> dict[str, str]:
    """Field name -> the environment variable that sets it."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    names = {}
    for name, field in cls.model_fields.items():
        alias = field.validation_alias
        names[name] = alias.upper() if isinstance(alias, str) else f"{prefix}{name}".upper()
    return names


def _settings_class(name: str) -> type[BaseSettings] | None:
    """The loaded settings class called `name` (a ValidationError names its model, not the class itself)."""
    pending: list[type[BaseSettings]] = [BaseSettings]
    while pending:
        cls = pending.pop()
        if cls.__name__ == name and cls is not BaseSettings:
            return cls
        pending.extend(cls.__subclasses__())
    return None


def settings_problems(exc: ValidationError) -> list[str] | None:
    """`VARIABLE: reason` per problem when `exc` comes from a settings class, else None.

    The input values are left out: they may be secrets.
    """
    cls = _settings_class(exc.title)
    if cls is None:
        return None
    names = env_names(cls)
    problems = []
    for error in exc.errors(include_url=False, include_context=False, include_input=False):
        message = error["msg"].removeprefix("Value error, ")
        if not error["loc"]:  # a check across fields: its message names the variable itself
            problems.append(message)
            continue
        field = str(error["loc"][0])
        problems.append(f"{names.get(field, field.upper())}: {message}")
    return problems


def settings_error_text(exc: ValidationError) -> str | None:
    """The one message every command prints for invalid settings (None: not a settings error)."""
    problems = settings_problems(exc)
    return None if problems is None else "\n  ".join(["invalid configuration:", *problems])
