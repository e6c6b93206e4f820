"""Minimal client of the Confluent Schema Registry REST API: register a schema, fetch one by id."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class RegistryError(RuntimeError):
    pass


class RegistryClient:
    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 10.0,
        auth: tuple[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ):
        self._http = httpx.Client(
            base_url=url.rstrip("/"),
            timeout=timeout_s,
            auth=auth,
            transport=transport,
            headers={"Accept": _CONTENT_TYPE, "Content-Type": _CONTENT_TYPE},
        )

    def _json(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise RegistryError(f"{response.request.method} {response.request.url.path}: HTTP {response.status_code}")
        return response.json()

    def register(self, subject: str, schema_text: str) -> int:
        """Register (idempotently) an Avro schema under a subject; returns its global id."""
        response = self._http.post(f"/subjects/{quote(subject, safe='')}/versions", json={"schema": schema_text})
        return int(self._json(response)["id"])

    def schema_text(self, schema_id: int) -> str:
        response = self._http.get(f"/schemas/ids/{schema_id}")
        return str(self._json(response)["schema"])

    def close(self) -> None:
        self._http.close()
