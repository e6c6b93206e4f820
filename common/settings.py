"""Settings shared by every service: how to reach Kafka, and one way to report a bad setting.

Every setting is an environment variable; the README's configuration table lists them all
(`pinwheel-connector config`, connector/config_docs.py) and `tests/test_deployment.py` keeps that table honest.
A command that cannot build its settings prints `settings_error_text` (the variables and the reasons, never the
values: they may be secrets) and exits 2.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseSettings):
    """How to reach the Kafka cluster (env prefix `KAFKA_`)."""

    model_config = SettingsConfigDict(env_prefix="KAFKA_", extra="ignore")

    bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="Comma-separated host:port list of Kafka brokers."
    )
    client_id_prefix: str = Field(default="pinwheel-connector", description="Prefix of every client.id.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="Protocol used to talk to the brokers."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="SASL mechanism when security_protocol is SASL_*."
    )
    sasl_username: str | None = Field(default=None, description="SASL user name.")
    sasl_password: str | None = Field(default=None, description="SASL password (never logged).", repr=False)
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

    def client_kwargs(self) -> dict[str, object]:
        """Keyword arguments common to every aiokafka client."""
        kwargs: dict[str, object] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
        }
        if self.sasl_mechanism:
            kwargs |= {
                "sasl_mechanism": self.sasl_mechanism,
                "sasl_plain_username": self.sasl_username,
                "sasl_plain_password": self.sasl_password,
            }
        return kwargs


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
        field = str(error["loc"][0]) if error["loc"] else ""
        problems.append(f"{names.get(field, field.upper())}: {error['msg']}")
    return problems


def settings_error_text(exc: ValidationError) -> str | None:
    """The one message every command prints for invalid settings (None: not a settings error)."""
    problems = settings_problems(exc)
    return None if problems is None else "\n  ".join(["invalid configuration:", *problems])
