"""`pinwheel-connector webhooks create|list|show|update|delete`: Pinwheel's webhook subscription API.

API (PINWHEEL-NOTES.md): `X-API-SECRET` and `Pinwheel-Version` headers on every call;
`GET /v1/webhooks` (cursor, limit 1-100), `POST /v1/webhooks`, `GET|PUT|DELETE /v1/webhooks/{id}`.
Create body: url (https:// only), status (active|paused), enabled_events (at least one), version. At most
10 webhooks per API key. A webhook failing for 30 days is `paused`; `update <id> --status active` resumes it.

Request validation and error-message extraction are pure; `WebhookClient` is the thin httpx shell.
Every failure ends in one line on stderr: the HTTP status and Pinwheel's error message, the network
error, or the validation problem. The API secret is never printed.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Final
from urllib.parse import urlsplit

import httpx
import orjson
from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.settings import check_secret, secret_value, settings_error_text
from schemas.catalog import KNOWN_EVENT_TYPES

STATUSES: Final = ("active", "paused")
MAX_LIMIT: Final = 100


class PinwheelApiSettings(BaseSettings):
    """Pinwheel's REST API (env prefix `PINWHEEL_API_`)."""

    model_config = SettingsConfigDict(env_prefix="PINWHEEL_API_", extra="ignore")

    base_url: str = Field(
        default="https://api.getpinwheel.com",
        description="Base URL of Pinwheel's API (sandbox: https://sandbox.getpinwheel.com).",
    )
    secret: SecretStr | None = Field(
        default=None, description="API secret sent as X-API-SECRET; never printed or logged.", repr=False
    )
    secret_file: Path | None = Field(
        default=None,
        description="File holding PINWHEEL_API_SECRET instead (a container secret; read on every check, so a "
        "rotated file is picked up). The watchdog's way.",
    )
    version: str = Field(
        default="2023-11-22", description="Pinwheel-Version header, and the default version of new webhooks."
    )
    timeout_s: float = Field(default=15.0, gt=0, description="Timeout of each API call, in seconds.")

    @model_validator(mode="after")
    def _check_secret(self) -> PinwheelApiSettings:
        check_secret(self.secret, self.secret_file, "PINWHEEL_API_SECRET", required=False)
        return self

    def secret_value(self) -> str | None:
        """The secret, from its file (read now) or the environment."""
        return secret_value(self.secret, self.secret_file, "PINWHEEL_API_SECRET")


class WebhookError(Exception):
    """A failure to show the user: `str(exc)` is the whole message."""


class InvalidRequest(WebhookError):
    pass


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_base_url(url: str) -> str:
    """https://, or http:// to a loopback address only (a local fake): the secret never crosses a network
    in clear text."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url.rstrip("/")
    if parts.scheme == "http" and parts.hostname and _is_loopback(parts.hostname):
        return url.rstrip("/")
    raise InvalidRequest(f"PINWHEEL_API_BASE_URL must be an https:// URL, got {url!r}")


def check_endpoint_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise InvalidRequest(f"webhook endpoints must be https:// URLs (Pinwheel requires it), got {url!r}")
    return url


def parse_events(text: str) -> list[str]:
    """Comma-separated event types, each one Pinwheel knows (schemas.catalog.KNOWN_EVENT_TYPES)."""
    events = [part.strip() for part in text.split(",") if part.strip()]
    if not events:
        raise InvalidRequest("enabled_events needs at least one event type")
    unknown = sorted(set(events) - KNOWN_EVENT_TYPES)
    if unknown:
        raise InvalidRequest(
            f"unknown event type(s): {', '.join(unknown)}; known: {', '.join(sorted(KNOWN_EVENT_TYPES))}"
        )
    return list(dict.fromkeys(events))


def create_body(url: str, events: str, status: str, version: str) -> dict[str, Any]:
    if status not in STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
    if not version.strip():
        raise InvalidRequest("version must not be empty")
    return {
        "url": check_endpoint_url(url),
        "status": status,
        "enabled_events": parse_events(events),
        "version": version,
    }


def update_body(url: str | None, events: str | None, status: str | None, version: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if url is not None:
        body["url"] = check_endpoint_url(url)
    if events is not None:
        body["enabled_events"] = parse_events(events)
    if status is not None:
        if status not in STATUSES:
            raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
        body["status"] = status
    if version is not None:
        body["version"] = version
    if not body:
        raise InvalidRequest("nothing to update: give --url, --events, --status or --version")
    return body


def check_id(webhook_id: str) -> str:
    value = webhook_id.strip()
    if not value or "/" in value or len(value) > 100:
        raise InvalidRequest(f"not a webhook id: {webhook_id!r}")
    return value


def error_message(status: int, body: bytes) -> str:
    """`HTTP <status>: <Pinwheel's message>` from an error answer, whatever shape it has."""
    detail = ""
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, Mapping):
        error = parsed.get("error")
        if isinstance(error, Mapping):
            parts = [str(error[k]) for k in ("code", "message") if error.get(k)]
            detail = ": ".join(parts)
        elif isinstance(error, str):
            detail = error
        if not detail:
            for key in ("message", "detail"):
                value = parsed.get(key)
                if isinstance(value, str) and value:
                    detail = value
                    break
                if isinstance(value, list) and value:
                    detail = "; ".join(str(v.get("msg", v)) if isinstance(v, Mapping) else str(v) for v in value)
                    break
    elif body:
        detail = body[:200].decode(errors="replace").strip()
    reason = httpx.codes.get_reason_phrase(status)
    head = f"HTTP {status} {reason}".rstrip()
    return f"{head}: {detail}" if detail else head


def data_of(payload: Any) -> Any:
    return payload.get("data", payload) if isinstance(payload, Mapping) else payload


def next_cursor(payload: Any) -> str | None:
    if not isinstance(payload, Mapping):
        return None
    meta = payload.get("meta")
    cursor = meta.get("next_cursor") if isinstance(meta, Mapping) else payload.get("next_cursor")
    return cursor if isinstance(cursor, str) and cursor else None


class WebhookClient:
    def __init__(self, settings: PinwheelApiSettings, transport: httpx.BaseTransport | None = None) -> None:
        secret = settings.secret_value()
        if not secret:
            raise InvalidRequest("set PINWHEEL_API_SECRET (or PINWHEEL_API_SECRET_FILE) to your Pinwheel API secret")
        self.settings = settings
        self.base = check_base_url(settings.base_url)
        self.client = httpx.Client(
            base_url=self.base,
            timeout=settings.timeout_s,
            transport=transport,
            headers={
                "X-API-SECRET": secret,
                "Pinwheel-Version": settings.version,
                "Accept": "application/json",
            },
        )

    def close(self) -> None:
        self.client.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise WebhookError(f"{method} {self.base}{path}: no answer within {self.settings.timeout_s:g}s") from None
        except httpx.TransportError as exc:
            raise WebhookError(f"{method} {self.base}{path}: network error ({type(exc).__name__}: {exc})") from None
        if response.status_code >= 400:
            raise WebhookError(f"{method} {path}: {error_message(response.status_code, response.content)}")
        if not response.content:
            return {}
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise WebhookError(f"{method} {path}: the API answered {response.status_code} with non-JSON") from None

    def create(self, body: Mapping[str, Any]) -> Any:
        return data_of(self._call("POST", "/v1/webhooks", json=dict(body)))

    def list_all(self, limit: int = MAX_LIMIT) -> list[Any]:
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidRequest(f"limit must be between 1 and {MAX_LIMIT}")
        items: list[Any] = []
        cursor: str | None = None
        for _ in range(10_000):  # a cursor that never ends is the API's bug, not a reason to hang
            params: dict[str, Any] = {"limit": limit}
            if cursor:
                params["cursor"] = cursor
            page = self._call("GET", "/v1/webhooks", params=params)
            data = data_of(page)
            if not isinstance(data, list):
                raise WebhookError("GET /v1/webhooks: unexpected answer (no list of webhooks)")
            items.extend(data)
            cursor = next_cursor(page)
            if cursor is None or not data:
                return items
        raise WebhookError("GET /v1/webhooks: the cursor never ended")

    def show(self, webhook_id: str) -> Any:
        return data_of(self._call("GET", f"/v1/webhooks/{check_id(webhook_id)}"))

    def update(self, webhook_id: str, body: Mapping[str, Any]) -> Any:
        return data_of(self._call("PUT", f"/v1/webhooks/{check_id(webhook_id)}", json=dict(body)))

    def delete(self, webhook_id: str) -> Any:
        return data_of(self._call("DELETE", f"/v1/webhooks/{check_id(webhook_id)}"))


def format_webhook(hook: Mapping[str, Any]) -> str:
    events = hook.get("enabled_events") or []
    lines = [f"{key:<15} {hook.get(key)}" for key in ("id", "url", "status", "version", "created_at", "last_updated")]
    lines.append(f"{'enabled_events':<15} {', '.join(map(str, events))}")
    if hook.get("status") == "paused":
        lines.append("note            paused: resume with `pinwheel-connector webhooks update <id> --status active`")
    return "\n".join(lines)


def format_table(hooks: Sequence[Mapping[str, Any]]) -> str:
    rows = [f"{'id':<36}  {'status':<7} {'version':<10} {'events':>6}  url"]
    for h in hooks:
        events = h.get("enabled_events") or []
        rows.append(
            f"{h.get('id', '')!s:<36}  {h.get('status', '')!s:<7} {h.get('version', '')!s:<10} "
            f"{len(events):>6}  {h.get('url', '')}"
        )
    rows.append(f"{len(hooks)} webhook(s)")
    return "\n".join(rows)


def run_action(args: argparse.Namespace, client: WebhookClient, out: IO[str]) -> None:
    as_json = getattr(args, "json", False)

    def emit(value: Any, text: str) -> None:
        print(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() if as_json else text, file=out)

    match args.action:
        case "create":
            version = args.version or client.settings.version
            hook = client.create(create_body(args.url, args.events, args.status, version))
            emit(hook, "created\n" + format_webhook(hook))
        case "list":
            hooks = client.list_all(args.limit)
            emit(hooks, format_table(hooks))
        case "show":
            hook = client.show(args.id)
            emit(hook, format_webhook(hook))
        case "update":
            body = update_body(args.url, args.events, args.status, args.version)
            hook = client.update(args.id, body)
            emit(hook, "updated\n" + format_webhook(hook))
        case "delete":
            result = client.delete(args.id)
            emit(result, f"deleted {args.id}")
        case other:
            raise InvalidRequest(f"unknown action {other!r}")


def webhooks_command(
    args: argparse.Namespace,
    *,
    settings: PinwheelApiSettings | None = None,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        the_settings = settings or PinwheelApiSettings()
    except ValidationError as exc:
        print(f"webhooks: {settings_error_text(exc) or 'invalid settings'}", file=err)
        return 2
    try:
        client = WebhookClient(the_settings)
    except InvalidRequest as exc:
        print(f"webhooks: {exc}", file=err)
        return 2
    try:
        run_action(args, client, out)
    except InvalidRequest as exc:
        print(f"webhooks: {exc}", file=err)
        return 2
    except WebhookError as exc:
        print(f"webhooks: {exc}", file=err)
        return 1
    finally:
        client.close()
    return 0
