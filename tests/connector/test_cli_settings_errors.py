"""Every command refuses a bad setting the same way: exit 2, the environment variable and the reason, no traceback.

Run as an operator runs them (a subprocess of `pinwheel-connector`); one shared mechanism
(common.settings.settings_error_text) behind all of them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

WATCHDOG = {"WATCHDOG_GATEWAY_URL": "https://gw.example.com/webhooks/pinwheel"}

CASES = [
    (
        ["processor"],
        {"PROCESSOR_COMMIT_INTERVAL_MS": "5"},
        "PROCESSOR_COMMIT_INTERVAL_MS",
        "greater than or equal to 10",
    ),
    (["processor"], {"PROCESSOR_LOG_LEVEL": "LOUD"}, "PROCESSOR_LOG_LEVEL", "should match pattern"),
    (["processor"], {"PROCESSOR_DEDUPE_RETENTION_H": "0"}, "PROCESSOR_DEDUPE_RETENTION_H", "greater than 0"),
    (["processor"], {"KAFKA_BOOTSTRAP_SERVERS": "no-port"}, "KAFKA_BOOTSTRAP_SERVERS", "expected host:port"),
    (["topics", "check"], {"KAFKA_REQUEST_TIMEOUT_MS": "soon"}, "KAFKA_REQUEST_TIMEOUT_MS", "valid integer"),
    (["topics"], {"TOPICS_PARTITIONS": "0"}, "TOPICS_PARTITIONS", "greater than or equal to 1"),
    (["kafka", "status"], {"LOCAL_KAFKA_PORT": "80"}, "LOCAL_KAFKA_PORT", "greater than or equal to 1024"),
    (["tail", "--max", "1"], {"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL", "Input should be"),
    (["processor"], {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "KAFKA_SASL_MECHANISM", "required with"),
    (
        ["topics", "check"],
        {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CA_FILE": "/nonexistent/ca.pem"},
        "KAFKA_SSL_CA_FILE",
        "no such file",
    ),
    (
        ["tail", "--max", "1"],
        {
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": "u",
            "KAFKA_SASL_PASSWORD_FILE": "/nonexistent/password",
        },
        "KAFKA_SASL_PASSWORD_FILE",
        "cannot read",
    ),
    (["run"], {"RUN_ACCOUNTS": "0"}, "RUN_ACCOUNTS", "greater than or equal to 1"),
    (["simulate"], {"SIMULATOR_PENDING_RATE": "2"}, "SIMULATOR_PENDING_RATE", "less than or equal to 1"),
    (["gateway"], {"GATEWAY_PORT": "s3cr3t-port"}, "GATEWAY_PORT", "valid integer"),
    (["webhooks", "list"], {"PINWHEEL_API_TIMEOUT_S": "-1"}, "PINWHEEL_API_TIMEOUT_S", "greater than 0"),
    (["processor"], {"READINESS_RULE": "account.added"}, "READINESS_RULE", "not a job or sync event type"),
    (["watchdog"], {}, "WATCHDOG_GATEWAY_URL", "Field required"),
    (["watchdog"], {"WATCHDOG_GATEWAY_URL": "http://gw.example.com/hook"}, "WATCHDOG_GATEWAY_URL", "https://"),
    (["watchdog"], {**WATCHDOG, "WATCHDOG_INTERVAL_S": "0"}, "WATCHDOG_INTERVAL_S", "greater than or equal to 1"),
    (["watchdog"], {**WATCHDOG, "WATCHDOG_EXTRA_EVENTS": "income.addded"}, "WATCHDOG_EXTRA_EVENTS", "unknown event"),
    (["watchdog"], {**WATCHDOG, "READINESS_RULE": "paystubs"}, "READINESS_RULE", "not a job or sync event type"),
    (
        ["watchdog"],
        {**WATCHDOG, "PINWHEEL_API_SECRET_FILE": "/nonexistent/api-secret"},
        "PINWHEEL_API_SECRET_FILE",
        "cannot read",
    ),
]


def run_cli(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PROCESSOR_", "TOPICS_", "RUN_", "GATEWAY_", "WATCHDOG_", "READINESS_", "PINWHEEL_API_"))
    }
    clean["KAFKA_BOOTSTRAP_SERVERS"] = "127.0.0.1:9"  # never reached: the settings fail first
    command = [sys.executable, "-m", "connector.cli", *argv]
    return subprocess.run(
        command, cwd=cwd, env={**clean, "PYTHONPATH": str(ROOT), **env}, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(("argv", "env", "variable", "reason"), CASES, ids=[" ".join(c[0]) + " " + c[2] for c in CASES])
def test_a_bad_setting_exits_2_naming_the_variable_and_the_reason(
    argv: list[str], env: dict[str, str], variable: str, reason: str, tmp_path: Path
) -> None:
    result = run_cli(argv, env, tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    first, *problems = result.stderr.strip().splitlines()
    assert first == f"{argv[0]}: invalid configuration:", result.stderr
    assert any(line.strip().startswith(variable) and reason in line for line in problems), result.stderr
    assert "s3cr3t" not in result.stderr  # values are never echoed (they may be secrets)


def test_every_problem_is_listed_once(tmp_path: Path) -> None:
    env = {"PROCESSOR_COMMIT_INTERVAL_MS": "5", "PROCESSOR_SESSION_TIMEOUT_MS": "1"}
    result = run_cli(["processor"], env, tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[1:] == [
        "  PROCESSOR_COMMIT_INTERVAL_MS: Input should be greater than or equal to 10",
        "  PROCESSOR_SESSION_TIMEOUT_MS: Input should be greater than or equal to 1000",
    ]
