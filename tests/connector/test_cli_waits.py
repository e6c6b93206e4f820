"""Every command that talks to Kafka, run as an operator runs it, against a closed port: it waits at most its
timeout, then one line on stderr and exit 2; a cluster that refuses us ends it at once, the same way.
Never a plain traceback, never an unclosed client."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from common.ports import free_port

pytestmark = pytest.mark.own_topics  # every topic, group and transactional id it uses is its own (tests/conftest.py)

ROOT = Path(__file__).resolve().parents[2]

COMMANDS = [
    ["topics", "create"],
    ["topics", "check"],
    ["tail", "--max", "1"],
    ["verify", "--wait", "1"],
    ["deadletter", "list"],
    ["deadletter", "show", "0:0"],
    ["deadletter", "replay", "--dry-run", "--no-progress"],
    ["processor", "reset", "--dry-run"],
    ["processor", "reset", "--yes"],
    ["verify-record", "--topic", "paystubs", "--partition", "0", "--offset", "0", "--secret-file", "/dev/null"],
    ["trace", "5a141122-4235-4fa1-bd76-0628573880b0"],
]


def run_cli(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "PROCESSOR_", "SCHEMA_"))}
    command = [sys.executable, "-m", "connector.cli", *argv]
    started = time.monotonic()
    result = subprocess.run(
        command, cwd=cwd, env={**clean, "PYTHONPATH": str(ROOT), **env}, capture_output=True, text=True, timeout=90
    )
    return result, time.monotonic() - started


def assert_one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "Unclosed" not in result.stderr, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(argv) for argv in COMMANDS])
def test_kafka_unreachable_is_one_line_and_exit_2_after_the_timeout(argv: list[str], tmp_path: Path) -> None:
    port = free_port()
    result, elapsed = run_cli([*argv, "--timeout", "1.5"], {"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"}, tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    line = assert_one_line(result)
    assert line.startswith(f"{argv[0]}: kafka: no answer from 127.0.0.1:{port} within 1.5 s"), line
    assert "check KAFKA_BOOTSTRAP_SERVERS" in line
    assert elapsed < 20  # 1.5 s of waiting and the interpreter's start


def test_the_default_timeout_is_kafka_startup_timeout_s(tmp_path: Path) -> None:
    port = free_port()
    env = {"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}", "KAFKA_STARTUP_TIMEOUT_S": "1"}
    result, _ = run_cli(["topics", "check"], env, tmp_path)
    assert result.returncode == 2
    assert assert_one_line(result).startswith(f"topics: kafka: no answer from 127.0.0.1:{port} within 1 s")


def test_a_cluster_that_refuses_us_ends_the_command_at_once(bootstrap: str, tmp_path: Path) -> None:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,  # a plaintext listener: it cannot speak SASL
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": "PLAIN",
        "KAFKA_SASL_USERNAME": "operator",
        "KAFKA_SASL_PASSWORD": "do-not-print-me",
    }
    result, elapsed = run_cli(["topics", "check", "--timeout", "60"], env, tmp_path)
    assert result.returncode == 2
    line = assert_one_line(result)
    assert line.startswith("topics: kafka: SASL handshake refused: check KAFKA_SECURITY_PROTOCOL"), line
    assert "do-not-print-me" not in result.stderr + result.stdout
    assert elapsed < 30  # not the 60 s timeout


def test_a_bug_is_one_json_record_without_the_message(bootstrap: str, tmp_path: Path) -> None:
    # A ledger that is not JSON lines: an error nobody planned for (a file that cannot be read is one line).
    (tmp_path / "ledger.jsonl").write_text("payroll-s3cret {not json\n")
    result, _ = run_cli(["verify", "--ledger", "ledger.jsonl"], {"KAFKA_BOOTSTRAP_SERVERS": bootstrap}, tmp_path)
    assert result.returncode == 1
    assert "Unclosed" not in result.stderr
    [line] = result.stderr.strip().splitlines()  # the stack is inside the JSON record, not printed as text
    record = orjson.loads(line)
    assert str(record["exc_info"]).startswith("Traceback (most recent call last):")
    assert record["level"] == "critical"
    assert record["message"] == "verify: unexpected error"
    assert record["exc_type"] == "JSONDecodeError"
    assert "payroll-s3cret" not in line  # the message may quote data: only the type and the stack
