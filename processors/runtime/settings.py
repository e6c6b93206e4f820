"""Settings of the generic exactly-once runtime (env prefix `PROCESSOR_`).

The logic's settings are `processors.logic.config.LogicSettings`; the service reads both and its own as
`processors.settings.ProcessorSettings`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RuntimeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PROCESSOR_", extra="ignore")

    application_id: str = Field(
        default="pinwheel-processor",
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Consumer group id, prefix of transactional ids and changelog topics.",
    )
    instance_id: str | None = Field(
        default=None,
        description="Static group membership id (stable per instance, e.g. the hostname): a restarted "
        "instance gets its partitions back without waiting for a rebalance.",
    )
    state_dir: Path = Field(default=Path("var/state"), description="Local RocksDB stores (a cache of the changelogs).")
    commit_interval_ms: int = Field(
        default=100,
        ge=10,
        le=60_000,
        description="How often each task commits: the floor of the end-to-end latency, and at a low pace what "
        "the cluster is paid for (each commit writes a marker into every partition it touched: at a Pinwheel-like "
        "pace, 1000 uses about half the offsets of 100, the broker's own topics included; docs/benchmarks.md).",
    )
    commit_max_records: int = Field(
        default=5_000, ge=1, description="Commit a task early once it has buffered this many output records."
    )
    commit_timeout_s: float = Field(
        default=30.0, gt=0, description="A commit slower than this restarts the task (never skips a record)."
    )
    punctuate_interval_ms: int = Field(default=1_000, ge=10, description="Wall-clock timer period.")
    max_checkpoint_age_h: float = Field(
        default=12.0,
        gt=0,
        description="An older local checkpoint is not trusted (tombstones may be compacted away): full restore.",
    )
    session_timeout_ms: int = Field(default=10_000, ge=1_000, description="Consumer group session timeout.")
    max_poll_records: int = Field(
        default=2_000,
        ge=1,
        description="Records fetched per poll; also what a task buffers of one input partition before pausing it, "
        "and processes per loop.",
    )
    max_task_idle_ms: int = Field(
        default=5_000,
        ge=0,
        description="How long a task waits for an input partition that has nothing buffered but more on the "
        "broker before processing the others out of event-time order (timers still wait for it).",
    )
