"""Settings of the codec (env prefix `SCHEMA_`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class SchemaSettings(BaseSettings):
    """How records are serialised: self-describing Avro by default, Confluent wire format with a registry."""

    model_config = SettingsConfigDict(env_prefix="SCHEMA_", extra="ignore")

    registry_url: str | None = Field(
        default=None,
        description=(
            "Confluent-compatible schema registry URL. Unset: Avro single-object encoding resolved against "
            "the bundled .avsc files. Set: Confluent wire format, schemas registered as <topic>-value."
        ),
    )
    registry_username: str | None = Field(default=None, description="Basic-auth user of the schema registry.")
    registry_password: str | None = Field(
        default=None, description="Basic-auth password of the schema registry (never logged).", repr=False
    )
    registry_timeout_s: float = Field(default=10.0, gt=0, description="Timeout of each schema registry request.")
