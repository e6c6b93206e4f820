"""Settings of the codec (env prefix `SCHEMA_`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.settings import check_secret, secret_value

Compatibility = Literal[
    "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE", "NONE"
]


class SchemaSettings(BaseSettings):
    """How records are serialised: self-describing Avro by default, Confluent wire format with a registry."""

    model_config = SettingsConfigDict(env_prefix="SCHEMA_", extra="ignore")

    registry_url: str | None = Field(
        default=None,
        description=(
            "Confluent-compatible schema registry URL (comma-separated for several). Unset: Avro single-object "
            "encoding resolved against the bundled .avsc files. Set: Confluent wire format, schemas registered "
            "as <topic>-value."
        ),
    )
    registry_auto_register: bool = Field(
        default=True,
        description=(
            "Register our schemas (needs write rights). false: lookup only; a service exits at start, naming "
            "the subject, when a schema is not registered."
        ),
    )
    registry_compatibility: Compatibility = Field(
        default="BACKWARD",
        description="Compatibility level set on a subject when we register its first schema (NONE only if chosen).",
    )
    registry_username: str | None = Field(default=None, description="Basic-auth user of the schema registry.")
    registry_password: SecretStr | None = Field(
        default=None, description="Basic-auth password of the schema registry (never logged)."
    )
    registry_password_file: Path | None = Field(default=None, description="File holding SCHEMA_REGISTRY_PASSWORD.")
    registry_bearer_token: SecretStr | None = Field(
        default=None, description="Static bearer token for the schema registry (never logged)."
    )
    registry_bearer_token_file: Path | None = Field(
        default=None, description="File holding SCHEMA_REGISTRY_BEARER_TOKEN."
    )
    registry_bearer_logical_cluster: str | None = Field(
        default=None, description="Logical cluster sent with the bearer token (Confluent Cloud: lsrc-...)."
    )
    registry_ca_file: Path | None = Field(
        default=None, description="PEM CA bundle trusted for the registry's TLS; empty: the system trust store."
    )
    registry_cert_file: Path | None = Field(
        default=None, description="PEM client certificate (mutual TLS); may hold the key as well."
    )
    registry_key_file: Path | None = Field(default=None, description="PEM private key of the client certificate.")
    registry_timeout_s: float = Field(default=10.0, gt=0, description="Timeout of each schema registry request.")
    registry_retries: int = Field(
        default=4, ge=0, description="Retries of a registry request after a transport error, 408, 429 or 5xx."
    )
    registry_retry_wait_ms: int = Field(
        default=200, ge=1, description="First retry back-off (full jitter, doubling) of a registry request."
    )
    registry_retry_max_wait_ms: int = Field(default=5_000, ge=1, description="Longest back-off between retries.")
    registry_recheck_s: float = Field(
        default=30.0,
        ge=0,
        description=(
            "How often running services check that their subjects are still registered, re-registering them "
            "after a registry lost its storage; 0: never."
        ),
    )

    @model_validator(mode="after")
    def _check_auth(self) -> SchemaSettings:
        check_secret(self.registry_password, self.registry_password_file, "SCHEMA_REGISTRY_PASSWORD", required=False)
        check_secret(
            self.registry_bearer_token, self.registry_bearer_token_file, "SCHEMA_REGISTRY_BEARER_TOKEN", required=False
        )
        if (self.registry_bearer_token or self.registry_bearer_token_file) and self.registry_username:
            raise ValueError("set either SCHEMA_REGISTRY_USERNAME/PASSWORD or SCHEMA_REGISTRY_BEARER_TOKEN, not both")
        if self.registry_key_file and not self.registry_cert_file:
            raise ValueError("SCHEMA_REGISTRY_KEY_FILE needs SCHEMA_REGISTRY_CERT_FILE")
        for name in ("registry_ca_file", "registry_cert_file", "registry_key_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"SCHEMA_{name.upper()}: no such file {path}")
        return self

    def registry_password_value(self) -> str | None:
        return secret_value(self.registry_password, self.registry_password_file, "SCHEMA_REGISTRY_PASSWORD")

    def registry_bearer_token_value(self) -> str | None:
        return secret_value(self.registry_bearer_token, self.registry_bearer_token_file, "SCHEMA_REGISTRY_BEARER_TOKEN")
