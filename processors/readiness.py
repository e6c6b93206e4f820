"""`READINESS_RULE`: the deployment's readiness rule, read by the processors (which judge it) and the subscription
watchdog (which checks that the Pinwheel subscription enables every event type it needs).

One variable for both, so the two cannot disagree. The rule's grammar and semantics are in
`processors/logic/readiness.py` and docs/consuming.md "Readiness".
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from processors.logic.readiness import ReadinessRule, parse_rule
from schemas import catalog


class ReadinessSettings(BaseSettings):
    """The readiness rule (env prefix `READINESS_`)."""

    model_config = SettingsConfigDict(env_prefix="READINESS_", extra="ignore")

    rule: str = Field(
        default=catalog.DEFAULT_READINESS_RULE,
        description="Comma-separated Pinwheel event types an account needs before it is ready: a job type "
        "(income.added: that job succeeded) or a sync milestone (paystubs.thirty_days_synced: that deep or deeper). "
        "The processors publish account_ready / account_blocked on pinwheel.account_readiness.v1; the watchdog "
        "checks the subscription enables them.",
    )

    @field_validator("rule")
    @classmethod
    def _check_rule(cls, value: str) -> str:
        return parse_rule(value).text

    def parsed(self) -> ReadinessRule:
        return parse_rule(self.rule)
