"""Settings of the processor service (env prefix `PROCESSOR_`): the runtime's, the logic's and its own.

One class, so that one `ProcessorSettings()` reads (and validates) every `PROCESSOR_*` variable, and the
configuration table lists them in one section: the runtime's first, then the logic's, then the service's.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from processors.logic.config import LogicSettings
from processors.runtime.settings import RuntimeSettings


class ProcessorSettings(LogicSettings, RuntimeSettings):
    model_config = SettingsConfigDict(env_prefix="PROCESSOR_", extra="ignore")

    health_port: int = Field(default=8081, ge=0, le=65535, description="/livez, /readyz and /metrics (0: off).")
    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$", description="Log level.")
    health_host: str = Field(default="127.0.0.1", description="Interface of the health/metrics server.")
