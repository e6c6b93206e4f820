"""The local Apicurio Registry: Java 21+ found, loopback-only ports, status and stop by pid."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from connector.cli import main
from connector.local_registry import MIN_JAVA, LocalRegistryError, find_java, java_major
from tests.schema_registry import Registry


def test_java_is_21_or_later() -> None:
    assert (java_major(find_java()) or 0) >= MIN_JAVA


def test_an_old_java_is_refused_with_the_variable_named(tmp_path: Path) -> None:
    fake = tmp_path / "java"
    fake.write_text("#!/bin/sh\necho 'openjdk version \"17.0.15\" 2025-04-15' >&2\n")
    fake.chmod(0o755)
    with pytest.raises(LocalRegistryError, match="LOCAL_REGISTRY_JAVA"):
        find_java(str(fake))


def test_local_registry_listens_on_loopback_ports_of_its_own(schema_registry: Registry) -> None:
    local = schema_registry.local
    if local is None:
        pytest.skip("SCHEMA_REGISTRY_URL points at a registry this session did not start")
    assert local.pid() is not None
    assert httpx.get(f"{local.url}/subjects").status_code == 200
    management = f"http://127.0.0.1:{local.settings.management_port}/health/ready"
    assert httpx.get(management).json()["status"] == "UP"
    listening = _listening_ports(local.pid() or 0)
    assert listening == {("127.0.0.1", local.settings.port), ("127.0.0.1", local.settings.management_port)}


def _listening_ports(pid: int) -> set[tuple[str, int]]:
    """TCP sockets in LISTEN state owned by `pid`, from /proc (IPv4 and IPv4-mapped IPv6)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = str(fd.readlink()) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            address, port = fields[1].split(":")
            raw = bytes.fromhex(address[-8:])[::-1]  # the IPv4 part, little-endian in /proc
            found.add((".".join(str(b) for b in raw), int(port, 16)))
    return found


def test_status_of_a_registry_that_is_not_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LOCAL_REGISTRY_DATA_DIR", str(tmp_path))
    assert main(["registry", "status"]) == 1
    assert capsys.readouterr().out.strip() == "not running"
    assert main(["registry", "stop"]) == 0  # nothing to stop is not an error
