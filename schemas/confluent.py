"""The schema registry as the codec needs it, on confluent-kafka's async Schema Registry client.

The client does the HTTP: retries with full-jitter back-off on transport errors, 408, 429 and 5xx;
basic auth, a static bearer token, a CA file and a client certificate. What this module adds:
- a subject's compatibility level is set before its first schema is registered (never left to a
  registry default such as Apicurio's NONE);
- lookup-only mode: nothing is registered, a missing subject or schema is `SchemaNotRegistered`;
- errors sorted by whose they are: `RegistryUnavailable` (transport, timeouts, 5xx, auth: the
  registry's, retry later, never a property of an event), `SchemaNotRegistered` / `SchemaRejected`
  (configuration: fail at start), and None for an id the registry does not know.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka.schema_registry import AsyncSchemaRegistryClient, Schema
from confluent_kafka.schema_registry.error import SchemaRegistryError

from schemas.settings import SchemaSettings

log = logging.getLogger(__name__)

_SUBJECT_NOT_FOUND = 40401
_SCHEMA_NOT_FOUND = 40403  # also "version not found" for a lookup of a schema the subject lacks


class RegistryError(RuntimeError):
    """Any failure of the schema registry path."""


class RegistryUnavailable(RegistryError):
    """The registry did not answer usefully (network, timeout, 5xx, 429, auth): retry later."""


class SchemaNotResolved(RegistryUnavailable):
    """A schema id (or our writer id) the registry has not given us yet: `await resolve(...)`/`prepare` first
    (schemas/codec.py; defined here, beside its base: the compiled codec cannot derive a class from this one).

    Also raised for an id the registry says it does not know: our topics carry only ids we registered,
    so that is a registry that lost its storage (or the wrong registry), not a property of the record.
    """


class SchemaNotRegistered(RegistryError):
    """Lookup-only mode and the subject or schema is missing: register it, or allow auto-registration."""


class SchemaRejected(RegistryError):
    """The registry refused our schema (incompatible with the subject's level, or invalid)."""


def client_config(settings: SchemaSettings) -> dict[str, Any]:
    """confluent-kafka's client configuration for our settings."""
    assert settings.registry_url
    conf: dict[str, Any] = {
        "url": settings.registry_url,
        "timeout": settings.registry_timeout_s,
        "max.retries": settings.registry_retries,
        "retries.wait.ms": settings.registry_retry_wait_ms,
        "retries.max.wait.ms": settings.registry_retry_max_wait_ms,
    }
    if settings.registry_username is not None:
        conf["basic.auth.user.info"] = f"{settings.registry_username}:{settings.registry_password_value() or ''}"
    if token := settings.registry_bearer_token_value():
        conf |= {
            "bearer.auth.credentials.source": "STATIC_TOKEN",
            "bearer.auth.token": token,
            "bearer.auth.logical.cluster": settings.registry_bearer_logical_cluster or "",
        }
    if settings.registry_ca_file is not None:
        conf["ssl.ca.location"] = str(settings.registry_ca_file)
    if settings.registry_cert_file is not None:
        conf["ssl.certificate.location"] = str(settings.registry_cert_file)
    if settings.registry_key_file is not None:
        conf["ssl.key.location"] = str(settings.registry_key_file)
    return conf


def _unavailable(what: str, exc: BaseException) -> RegistryUnavailable:
    if isinstance(exc, SchemaRegistryError):
        return RegistryUnavailable(f"{what}: HTTP {exc.http_status_code} (registry error {exc.error_code})")
    return RegistryUnavailable(f"{what}: {type(exc).__name__}")  # no message: it may carry the URL's credentials


class RegistryClient:
    """Registers or looks up our writer schemas and fetches writer schemas by id (async)."""

    def __init__(self, settings: SchemaSettings):
        self.settings = settings
        self.requests = 0  # registry calls made (the client's own cache hits included); for tests and metrics
        self.failures = 0  # calls that ended in RegistryUnavailable
        self._client = AsyncSchemaRegistryClient(client_config(settings))

    async def reset(self) -> None:
        """Drop the client's caches (after the registry lost its storage, its cached ids are wrong)."""
        await self._client.aclose()
        self._client = AsyncSchemaRegistryClient(client_config(self.settings))

    async def _call(self, what: str, call: Any) -> Any:
        self.requests += 1
        try:
            return await call
        except SchemaRegistryError as exc:
            status = exc.http_status_code
            if status in (401, 403, 408, 429) or status >= 500 or status < 0:
                self.failures += 1
                raise _unavailable(what, exc) from None
            raise
        except RegistryError:
            raise
        except Exception as exc:  # httpx transport errors, timeouts, TLS failures
            self.failures += 1
            raise _unavailable(what, exc) from None

    async def writer_id(self, subject: str, schema_text: str) -> int:
        """The id of our schema under `subject`: registered (compatibility first) or, lookup-only, looked up."""
        schema = Schema(schema_text, "AVRO")
        if not self.settings.registry_auto_register:
            try:
                registered = await self._call(f"lookup {subject}", self._client.lookup_schema(subject, schema))
            except SchemaRegistryError as exc:
                if exc.error_code in (_SUBJECT_NOT_FOUND, _SCHEMA_NOT_FOUND) or exc.http_status_code == 404:
                    raise SchemaNotRegistered(
                        f"subject {subject} has no version with our schema and SCHEMA_REGISTRY_AUTO_REGISTER=false:"
                        " register it (or allow auto-registration)"
                    ) from None
                raise SchemaRejected(f"lookup {subject}: HTTP {exc.http_status_code}: {exc.error_message}") from None
            return int(registered.schema_id)
        try:
            versions = await self._call(f"versions of {subject}", self._client.get_versions(subject))
        except SchemaRegistryError as exc:
            if exc.http_status_code != 404:
                raise SchemaRejected(f"versions of {subject}: HTTP {exc.http_status_code}") from None
            versions = []
        if not versions:
            level = self.settings.registry_compatibility
            try:
                await self._call(f"compatibility of {subject}", self._client.set_compatibility(subject, level))
            except SchemaRegistryError as exc:
                if exc.http_status_code != 409:  # 409: another instance set it a moment ago (Apicurio)
                    raise SchemaRejected(f"setting {level} on {subject}: HTTP {exc.http_status_code}") from None
            log.info("subject created", extra={"subject": subject, "compatibility": level})
        try:
            return int(await self._call(f"register {subject}", self._client.register_schema(subject, schema)))
        except SchemaRegistryError as exc:
            raise SchemaRejected(
                f"registry refused our schema for {subject}: HTTP {exc.http_status_code}: {exc.error_message}"
            ) from None

    async def subjects(self) -> set[str]:
        return set(await self._call("list subjects", self._client.get_subjects()))

    async def schema_text(self, schema_id: int) -> str | None:
        """The writer schema with this id, or None when the registry does not know the id."""
        try:
            schema = await self._call(f"schema {schema_id}", self._client.get_schema(schema_id))
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                return None
            raise _unavailable(f"schema {schema_id}", exc) from None
        return str(schema.schema_str)

    async def close(self) -> None:
        await self._client.aclose()
