"""Open enums for the closed-looking string fields of Pinwheel payloads.

Pinwheel may add a value tomorrow (a new monitoring status, a new recommendation action). A strict
enum would reject the whole event; a plain string would lose typing for the values we know. Each enum
here has an `UNKNOWN` member that any unrecognised *string* maps to: known values stay typed, the event
still flows to its family topic, and the exact new value stays in the record's `raw_body`. Non-strings
are still rejected (the event is then dead-lettered, not lost). The Avro enums carry the same symbols
with `"default": "unknown"`, so consumers on an older schema can read symbols we add later.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Self

from schemas import catalog


class OpenEnum(StrEnum):
    """A StrEnum whose unknown string values become `UNKNOWN` instead of an error."""

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if isinstance(value, str):
            return cls("unknown")
        return None

    @classmethod
    def known(cls) -> tuple[Self, ...]:
        return tuple(member for member in cls if member.value != "unknown")


class Outcome(OpenEnum):
    SUCCESS = catalog.SUCCESS
    ERROR = catalog.ERROR
    PENDING = catalog.PENDING
    UNKNOWN = "unknown"


class MonitoringStatus(OpenEnum):
    ACTIVE = "active"
    DEGRADED = "degraded"
    USER_ACTION_REQUIRED = "user_action_required"
    UNAVAILABLE = "unavailable"
    CUSTOMER_DISABLED = "customer_disabled"
    UNKNOWN = "unknown"


class SyncStatus(OpenEnum):
    IN_PROGRESS = "in_progress"
    COMPLETE = "complete"
    UNKNOWN = "unknown"


class PlatformType(OpenEnum):
    PAYROLL = "payroll"
    TIME_AND_ATTENDANCE = "time_and_attendance"
    UNKNOWN = "unknown"


class PlatformAction(OpenEnum):
    NONE = "none"
    LOGIN = "login"
    SEARCH = "search"
    ASK = "ask"
    UNKNOWN = "unknown"
