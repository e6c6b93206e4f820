"""Settings shared by every service: how to reach Kafka and how to log.

Every setting is an environment variable; the README's configuration table lists them all and
`tests/test_settings_docs.py` keeps that table honest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_cache_dir() -> Path:
    """Where downloaded Kafka jars live: outside the git tree, shared by every clone."""
    import os

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pinwheel-connector"


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


class LocalKafkaSettings(BaseSettings):
    """The single-node KRaft broker run from Maven Central jars (env prefix `LOCAL_KAFKA_`)."""

    model_config = SettingsConfigDict(env_prefix="LOCAL_KAFKA_", extra="ignore")

    version: str = Field(default="4.3.1", description="Apache Kafka release to fetch and run.")
    port: int = Field(default=9092, ge=1024, le=65534, description="Broker port; the controller uses port+1.")
    data_dir: Path = Field(default=Path("var/kafka"), description="Logs, pid file and broker log of the local broker.")
    cache_dir: Path = Field(default_factory=default_cache_dir, description="Where the Kafka jars are cached.")
    heap: str = Field(default="512m", description="JVM heap (-Xmx) of the local broker.")
    start_timeout_s: float = Field(default=60.0, gt=0, description="How long to wait for the broker to answer.")

    @field_validator("version")
    @classmethod
    def _check_version(cls, value: str) -> str:
        parts = value.split(".")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise ValueError(f"expected a release like 4.1.1, got {value!r}")
        return value
