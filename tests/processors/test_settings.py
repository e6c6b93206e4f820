"""The processor's settings, split by owner: the generic runtime's (`RuntimeSettings`), the logic's
(`LogicSettings`) and the service's own; `ProcessorSettings` reads them all from the same `PROCESSOR_*` variables."""

from __future__ import annotations

from datetime import timedelta

import pytest

from common.settings import env_names
from processors.logic.config import LogicConfig, LogicSettings
from processors.logic.readiness import parse_rule
from processors.runtime.settings import RuntimeSettings
from processors.settings import ProcessorSettings

LOGIC = ["dedupe_retention_h", "pending_timeout_h", "timeout_grace_s"]
SERVICE = ["health_port", "log_level", "health_host"]


def test_the_runtime_settings_carry_neither_logic_nor_service_settings() -> None:
    assert not set(RuntimeSettings.model_fields) & {*LOGIC, *SERVICE}
    assert list(LogicSettings.model_fields) == LOGIC


def test_the_service_reads_every_setting_under_its_documented_name_runtime_first() -> None:
    names = env_names(ProcessorSettings)
    runtime = list(RuntimeSettings.model_fields)
    assert list(names) == [*runtime, *LOGIC, *SERVICE]
    assert all(env == f"PROCESSOR_{name.upper()}" for name, env in names.items())


def test_the_logic_settings_default_to_the_logics_own_defaults() -> None:
    assert LogicSettings().logic_config() == LogicConfig()


def test_the_logic_config_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROCESSOR_DEDUPE_RETENTION_H", "3")
    monkeypatch.setenv("PROCESSOR_PENDING_TIMEOUT_H", "2")
    monkeypatch.setenv("PROCESSOR_TIMEOUT_GRACE_S", "60")
    rule = parse_rule("income.added")
    config = ProcessorSettings().logic_config(rule)
    assert (config.dedupe_retention, config.pending_timeout, config.timeout_grace, config.readiness) == (
        timedelta(hours=3),
        timedelta(hours=2),
        timedelta(seconds=60),
        rule,
    )
