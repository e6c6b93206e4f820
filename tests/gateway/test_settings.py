"""Settings: parsing, fail-fast, the docs table, and the pure content checks."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from common.ports import free_port
from gateway.hygiene import content_length_status, content_type_ok
from gateway.settings import GatewaySettings

ROOT = Path(__file__).resolve().parents[2]


def test_secrets_and_ids_from_comma_separated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_SECRETS", " new-secret , old-secret ")
    monkeypatch.setenv("GATEWAY_ALLOWED_WEBHOOK_IDS", "a,b")
    settings = GatewaySettings()
    assert settings.secret_bytes() == (b"new-secret", b"old-secret")
    assert settings.allowed_webhook_ids == ["a", "b"]
    assert "new-secret" not in repr(settings)
    assert "new-secret" not in str(settings.model_dump())


@pytest.mark.parametrize("value", [None, "", " , "])
def test_secrets_are_required(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    monkeypatch.delenv("GATEWAY_SECRETS", raising=False)
    if value is not None:
        monkeypatch.setenv("GATEWAY_SECRETS", value)
    with pytest.raises(ValidationError):
        GatewaySettings()


def test_secrets_from_a_file_when_the_variable_is_empty(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret_file = tmp_path / "pinwheel_api_secret"
    secret_file.write_text("new-secret\nold-secret\n")
    monkeypatch.setenv("GATEWAY_SECRETS_FILE", str(secret_file))
    monkeypatch.delenv("GATEWAY_SECRETS", raising=False)
    assert GatewaySettings().secret_bytes() == (b"new-secret", b"old-secret")
    monkeypatch.setenv("GATEWAY_SECRETS", "from-env")
    assert GatewaySettings().secret_bytes() == (b"from-env",)
    secret_file.write_text(" \n")
    monkeypatch.delenv("GATEWAY_SECRETS")
    with pytest.raises(ValidationError, match="secrets"):
        GatewaySettings()


def test_cli_names_an_unreadable_secrets_file(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env |= {"GATEWAY_SECRETS_FILE": str(tmp_path / "missing")}
    result = subprocess.run(
        [sys.executable, "-m", "gateway"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "GATEWAY_SECRETS_FILE" in result.stderr


def test_publish_timeout_stays_under_pinwheels_15s() -> None:
    with pytest.raises(ValidationError):
        GatewaySettings(secrets=["s"], publish_timeout_s=15)  # type: ignore[arg-type]


def test_cli_fails_fast_naming_the_variable_not_the_value() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env |= {"GATEWAY_SECRETS": "", "GATEWAY_PORT": "not-a-port-s3cr3t"}
    result = subprocess.run(
        [sys.executable, "-m", "gateway"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "GATEWAY_SECRETS" in result.stderr
    assert "GATEWAY_PORT" in result.stderr
    assert "s3cr3t" not in result.stderr


def test_a_connection_limit_at_the_fd_limit_exits_2_naming_the_variable(tls_pair: tuple[Path, Path]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env |= {
        "GATEWAY_SECRETS": "s",
        "GATEWAY_TLS_CERT_FILE": str(tls_pair[0]),
        "GATEWAY_TLS_KEY_FILE": str(tls_pair[1]),
        "GATEWAY_MAX_CONNECTIONS": "1000",
    }
    result = subprocess.run(
        [sys.executable, "-m", "gateway"],
        env=env,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "GATEWAY_MAX_CONNECTIONS=1000" in result.stderr
    assert "1024" in result.stderr


def test_every_field_is_described() -> None:
    """docs/configuration.md's table is made from the descriptions (tests/test_deployment.py keeps it current)."""
    assert all(field.description for field in GatewaySettings.model_fields.values())


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("application/json", True),
        ("Application/JSON; charset=utf-8", True),
        ("application/vnd.pinwheel+json", True),
        ("text/plain", False),
        ("application/jsonx", False),
        ("", False),
        (None, False),
        ("multipart/form-data; boundary=x", False),
    ],
)
def test_content_type(value: str | None, ok: bool) -> None:
    assert content_type_ok(value) is ok


def test_content_length() -> None:
    assert content_length_status(None, 10) == "absent"
    assert content_length_status("10", 10) == "ok"
    assert content_length_status("11", 10) == "too_large"
    assert content_length_status("1" * 40, 10) == "too_large"
    assert content_length_status("-1", 10) == "invalid"
    assert content_length_status("٣", 10) == "invalid"


def test_a_taken_admin_port_exits_2_naming_the_variable(tls_pair: tuple[Path, Path]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "SCHEMA_"))}
        env |= {
            "GATEWAY_SECRETS": "s",
            "GATEWAY_TLS_CERT_FILE": str(tls_pair[0]),
            "GATEWAY_TLS_KEY_FILE": str(tls_pair[1]),
            "GATEWAY_PORT": str(free_port()),
            "GATEWAY_ADMIN_PORT": str(port),
        }
        result = subprocess.run(
            [sys.executable, "-m", "gateway"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
        )
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"gateway: GATEWAY_ADMIN_PORT={port}: cannot listen on 127.0.0.1:{port}"), line


def test_the_admin_listener_needs_its_own_port() -> None:
    with pytest.raises(ValidationError, match="admin_port"):
        GatewaySettings(secrets=["s"], port=9000, admin_port=9000)  # type: ignore[list-item]
    assert GatewaySettings(secrets=["s"], port=9000, admin_port=0).admin_port == 0  # type: ignore[list-item]
