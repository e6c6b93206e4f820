"""The CLI builds its parser from light modules only: `--version`, `--help` and a usage error import no command's
code (the gateway, the processors, Kafka and Avro clients, the settings), each command imports its own when it runs.

Measured in a fresh interpreter, as a user (or tests/test_least_privilege.py's ~130 subprocesses) runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Modules (and their submodules) that take a second of CPU together and that no parser needs.
HEAVY = (
    "gateway",
    "processors",
    "simulator",
    "connector.config_docs",
    "connector.local_kafka",
    "connector.run",
    "operate.acls",
    "operate.deadletters",
    "operate.tail",
    "common.settings",
    "common.kafka_errors",
    "common.kafka_wait",
    "schemas.codec",
    "schemas.settings",
    "fastapi",
    "aiokafka",
    "cavro",
    "fastavro",
    "pydantic",
    "pydantic_settings",
)

# Builds the parser, parses each command's --help (as `pinwheel-connector COMMAND --help` does), prints the
# commands it found and the modules then imported.
_PROBE = """
import argparse, contextlib, io, json, sys
from connector.cli import build_parser
sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
commands = sorted(sub.choices)
for argv in [["--help"], *([name, "--help"] for name in commands), ["deadletter", "list", "--help"]]:
    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):
        build_parser().parse_args(argv)
print(json.dumps({"commands": commands, "modules": sorted(sys.modules)}))
"""


def _python(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def _heavy(modules: list[str]) -> list[str]:
    return [name for name in modules if any(name == heavy or name.startswith(heavy + ".") for heavy in HEAVY)]


def _imported(stderr: str) -> list[str]:
    """The modules `python -X importtime` reports, in order."""
    return [line.rpartition("|")[2].strip() for line in stderr.splitlines() if line.startswith("import time:")]


def test_every_commands_help_imports_no_commands_code() -> None:
    result = _python("-c", _PROBE)
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout)
    assert {"acls", "deadletter", "gateway", "processor", "tail", "topics", "trace", "verify-record"} <= set(
        probe["commands"]
    )
    assert _heavy(probe["modules"]) == []


@pytest.mark.parametrize(
    ("argv", "code"), [(["--version"], 0), (["acls", "--help"], 0), (["kafka", "status", "--nodes", "0"], 2)]
)
def test_version_help_and_usage_errors_import_no_commands_code(argv: list[str], code: int) -> None:
    result = _python("-X", "importtime", "-m", "connector.cli", *argv)
    assert result.returncode == code, result.stderr
    imported = _imported(result.stderr)
    assert "operate.cli" in imported  # importtime did report the parser's imports
    assert _heavy(imported) == []


def test_a_command_still_imports_its_code_when_it_runs() -> None:
    result = _python("-X", "importtime", "-m", "connector.cli", "acls", "--component", "gateway")
    assert result.returncode == 0, result.stderr
    assert "\nkafka-acls " in result.stdout
    assert {"operate.acls", "processors.settings"} <= set(_imported(result.stderr))
