"""Tunables of the processor logic: `LogicConfig` (what the logic takes) and `LogicSettings` (the environment
variables that set its deployment-tunable part)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from processors.logic.readiness import ReadinessRule


@dataclass(frozen=True, slots=True)
class LogicConfig:
    #: How long (in stream time) an event_id is remembered. Pinwheel retries for 15 minutes; the rest covers
    #: our own replays (gateway spool, reprocessing).
    dedupe_retention: timedelta = timedelta(days=7)
    #: Pinwheel: a pending job resolves "within the 24-hour window" after its first attempt.
    pending_timeout: timedelta = timedelta(hours=24)
    #: Slack for delivery delays (Pinwheel retries up to 15 min, gateway spooling) and clock skew between
    #: Pinwheel's payload timestamps and the gateway's receive time.
    timeout_grace: timedelta = timedelta(hours=1)
    #: Dedupe expiries are rounded up to this granularity so they fire in batches (one timer scan per
    #: bucket instead of one per event): retention is at least ``dedupe_retention``, at most one bucket more.
    dedupe_bucket: timedelta = timedelta(minutes=1)
    #: How far ``received_at`` may run ahead of the broker's append time and still move stream time: a record
    #: stamped further ahead (a gateway clock jump) moves it only to its append time plus this skew, so it
    #: cannot expire every dedupe entry or time out every pending of its partition.
    max_clock_skew: timedelta = timedelta(minutes=5)
    #: Cap on the added/deleted id lists kept per sync dataset in the account state (most recent kept).
    max_sync_ids: int = 50
    #: The deployment's readiness rule (``READINESS_RULE``); None: no readiness updates.
    readiness: ReadinessRule | None = None

    def __post_init__(self) -> None:
        for name in ("dedupe_retention", "pending_timeout", "dedupe_bucket"):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"{name} must be positive")
        for name in ("timeout_grace", "max_clock_skew"):
            if getattr(self, name) < timedelta(0):
                raise ValueError(f"{name} must not be negative")
        if self.max_sync_ids < 0:
            raise ValueError("max_sync_ids must not be negative")


class LogicSettings(BaseSettings):
    """The logic's settings (env prefix `PROCESSOR_`): read by the service, given to the logic as a LogicConfig."""

    model_config = SettingsConfigDict(env_prefix="PROCESSOR_", extra="ignore")

    dedupe_retention_h: float = Field(
        default=7 * 24, gt=0, description="How long (event time) event ids are remembered."
    )
    pending_timeout_h: float = Field(default=24, gt=0, description="After this, an unresolved pending job times out.")
    timeout_grace_s: float = Field(default=3600, ge=0, description="Extra wait before a pending job times out.")

    def logic_config(self, readiness: ReadinessRule | None = None) -> LogicConfig:
        """The LogicConfig of these settings; ``readiness``: the rule judged (``READINESS_RULE``), None for none."""
        return LogicConfig(
            dedupe_retention=timedelta(hours=self.dedupe_retention_h),
            pending_timeout=timedelta(hours=self.pending_timeout_h),
            timeout_grace=timedelta(seconds=self.timeout_grace_s),
            readiness=readiness,
        )
