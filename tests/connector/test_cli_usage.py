"""The CLI's own manners, run as a user runs it: `--version`, usage errors exit 2, a missing file is one line."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from connector.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*argv: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SIMULATOR_", "LOCAL_KAFKA_"))}
    return subprocess.run(
        [sys.executable, "-m", "connector.cli", *argv],
        cwd=cwd, env={**clean, "PYTHONPATH": str(ROOT), **(env or {})}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"pinwheel-connector {importlib.metadata.version('pinwheel-kafka-connector')}"


def test_a_usage_error_exits_2() -> None:
    result = run_cli("kafka", "status", "--nodes", "0")
    assert result.returncode == 2
    assert "argument --nodes: expected at least 1, got 0" in result.stderr
    assert "Traceback" not in result.stderr


def test_simulate_without_the_gateways_certificate_is_one_line(tmp_path: Path) -> None:
    result = run_cli("simulate", "--accounts", "1", env={"SIMULATOR_SECRET": "x"}, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "simulate: no CA file var/tls/gateway.crt to trust the gateway's certificate with: pass --ca-file (the "
        "gateway's certificate; `pinwheel-connector gateway --self-signed` creates one) or set SIMULATOR_CA_FILE "
        "empty for the system trust store"
    ]


def test_a_file_a_command_cannot_read_is_one_line(bootstrap: str, tmp_path: Path) -> None:
    """`verify --ledger` given a directory: one line naming it, exit 2 (it was the JSON record of a crash)."""
    result = run_cli("verify", "--ledger", str(tmp_path), "--timeout", "30", env={"KAFKA_BOOTSTRAP_SERVERS": bootstrap})
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [f"verify: cannot use {tmp_path}: Is a directory"]


def _commands(parser: argparse.ArgumentParser, prefix: str = "") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every (sub)command's parser, by its words: `topics`, `deadletter list`, ..."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix}{name}", sub
                yield from _commands(sub, f"{prefix}{name} ")


def test_every_command_that_waits_for_kafka_takes_the_one_timeout_option() -> None:
    """`processor --timeout` is the option of the other Kafka commands: same help, same values, same default."""
    timeouts = {
        command: (action.help, action.type, action.default)
        for command, sub in _commands(build_parser())
        for action in sub._actions
        if "--timeout" in action.option_strings
    }
    assert {"topics", "processor", "tail", "deadletter list", "verify"} <= set(timeouts)
    assert len(set(timeouts.values())) == 1, timeouts
    assert build_parser().parse_args(["processor", "reset", "--timeout", "2.5"]).timeout == 2.5
