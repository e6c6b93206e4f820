"""Gateway settings (env prefix `GATEWAY_`); Kafka connection settings come from `KafkaSettings`.

Every field has a description: docs/configuration.md's table is generated from them (`pinwheel-connector config`)
and a test keeps the two in sync.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIB = 1024 * 1024


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _split_csv(value: object) -> object:
    # Comma-separated in the environment; a real list is accepted as is (programmatic use).
    return _csv(value) if isinstance(value, str) else value


class GatewaySettings(BaseSettings):
    """The HTTPS webhook gateway (env prefix `GATEWAY_`)."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    host: str = Field(default="0.0.0.0", description="Interface to listen on.")
    port: int = Field(default=8443, ge=1, le=65535, description="HTTPS port to listen on.")
    admin_host: str = Field(
        default="127.0.0.1",
        description="Interface of the admin listener (/readyz, /metrics; plain HTTP): loopback, or inside the pod. "
        "Never publish it to the internet.",
    )
    admin_port: int = Field(
        default=8082,
        ge=0,
        le=65535,
        description="Port of the admin listener (0: off). The HTTPS port serves the webhook and /livez only.",
    )
    route: str = Field(default="/webhooks/pinwheel", description="Path of the webhook endpoint (POST).")
    tls_cert_file: Path = Field(
        default=Path("var/tls/gateway.crt"), description="PEM certificate (chain) served over TLS."
    )
    tls_key_file: Path = Field(default=Path("var/tls/gateway.key"), description="PEM private key of the certificate.")
    secrets_file: Path | None = Field(
        default=None,
        description="File holding the secrets instead (comma- or newline-separated, read at start-up), e.g. a "
        "Docker secret: keeps them out of the environment. Used when GATEWAY_SECRETS is empty.",
    )
    secrets: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        validate_default=True,
        description="Comma-separated Pinwheel API secrets accepted for x-pinwheel-signature (several during "
        "a rotation). Required unless GATEWAY_SECRETS_FILE is set; never logged.",
        repr=False,
    )
    timestamp_tolerance_s: int = Field(
        default=300, ge=1, description="Largest accepted distance between x-timestamp and now, in seconds."
    )
    allowed_webhook_ids: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated x-pinwheel-webhook-id values accepted; empty accepts any.",
    )
    max_body_bytes: int = Field(
        default=MIB, ge=1024, description="Largest accepted request body; larger gets 413 unread."
    )
    publish_timeout_s: float = Field(
        default=10.0,
        gt=0,
        lt=15,
        description="How long a request waits for the broker's acknowledgement before the event is spooled "
        "(below Pinwheel's 15 s).",
    )
    spool_dir: Path = Field(
        default=Path("var/spool"),
        description="Directory of the durable spools (one sub-directory per worker).",
    )
    spool_max_bytes: int = Field(
        default=1024 * MIB, ge=MIB, description="Spool size (per worker) past which requests get 503."
    )
    spool_segment_bytes: int = Field(
        default=16 * MIB, ge=64 * 1024, description="Size at which the spool starts a new segment file."
    )
    retry_after_s: int = Field(default=30, ge=1, description="Retry-After (seconds) sent with a 503.")
    linger_ms: int = Field(
        default=0,
        ge=0,
        description="Producer linger: how long a batch waits to fill. With 0, batches still form under load "
        "while the previous produce request is in flight.",
    )
    max_batch_bytes: int = Field(default=256 * 1024, ge=16 * 1024, description="Producer batch size per partition.")
    max_request_bytes: int = Field(
        default=4 * MIB,
        ge=MIB,
        description="Largest produce request (must cover the largest encoded record).",
    )
    max_connections: int = Field(
        default=0,
        ge=0,
        description="Open HTTPS connections per worker; past it a new connection displaces the least recently "
        "active idle one (or is refused if all are busy). 0: the open-file limit less 1/4 (at least 64) kept "
        "for Kafka, the spool and TLS handshakes. Must stay below the open-file limit.",
    )
    max_header_bytes: int = Field(
        default=16 * 1024,
        ge=1024,
        description="Largest request head (request line and headers); larger gets 431 and the connection closes.",
    )
    max_request_line_bytes: int = Field(
        default=8 * 1024,
        ge=256,
        description="Largest request target (path and query); longer gets 414 and the connection closes.",
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="A request's head must arrive within this many seconds of the connection opening (or of its "
        "first byte on a kept-alive connection); else 408 (silent close if nothing came) and the connection closes.",
    )
    body_timeout_s: float = Field(
        default=15.0,
        gt=0,
        description="A request's body must arrive within this many seconds of its head; else 408 and the "
        "connection closes.",
    )
    workers: int = Field(default=1, ge=1, description="uvicorn worker processes (each with its producer and spool).")
    worker_healthcheck_timeout_s: int = Field(
        default=60,
        ge=1,
        le=3600,
        description="With several workers: the supervisor kills (SIGKILL) and replaces a worker that does not "
        "answer its ping within this many seconds. uvicorn's own 5 s killed workers of a busy or CPU-throttled "
        "host, even while they started, in a loop.",
    )
    shutdown_timeout_s: float = Field(
        default=20.0,
        gt=0,
        description="Graceful shutdown: how long in-flight requests and the drain may take.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Log level.")

    @field_validator("secrets", mode="before")
    @classmethod
    def _parse_secrets(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("allowed_webhook_ids", mode="before")
    @classmethod
    def _parse_ids(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("secrets_file")
    @classmethod
    def _check_secrets_file(cls, value: Path | None) -> Path | None:
        if value is not None and not os.access(value, os.R_OK):
            raise ValueError(f"cannot read {value}")
        return value

    @field_validator("secrets")
    @classmethod
    def _check_secrets(cls, value: list[SecretStr], info: ValidationInfo) -> list[SecretStr]:
        file = info.data.get("secrets_file")
        if not value and file is not None:
            value = [SecretStr(secret) for secret in _csv(file.read_text().replace("\n", ","))]
        # Fail fast: a gateway without a secret would refuse every delivery (or worse, accept any).
        if not value or any(not s.get_secret_value() for s in value):
            raise ValueError("at least one non-empty secret is required (GATEWAY_SECRETS or GATEWAY_SECRETS_FILE)")
        return value

    @field_validator("admin_port")
    @classmethod
    def _check_admin_port(cls, value: int, info: ValidationInfo) -> int:
        if value != 0 and value == info.data.get("port"):
            raise ValueError(f"the admin listener needs a port of its own, not GATEWAY_PORT ({value})")
        return value

    @field_validator("route")
    @classmethod
    def _check_route(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"the route must start with '/', got {value!r}")
        return value

    def secret_bytes(self) -> tuple[bytes, ...]:
        return tuple(s.get_secret_value().encode() for s in self.secrets)
