"""Time as integer epoch microseconds.

State, timers and an ``Event``'s delivery times keep time as ``int`` microseconds: comparisons and arithmetic are
cheap, the serialized form is exact, and no timezone can leak in. The records carry these times as epoch µs (Avro
``timestamp-micros``, read and written plain), so ``datetime`` appears only where a time is text or a clock: the
payload's own timestamps, webhook bodies built by tests and the simulator, and punctuation.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


def to_us(value: datetime) -> int:
    """Epoch microseconds of an aware datetime (a naive one raises TypeError: never guess a zone)."""
    return (value - EPOCH) // _ONE_US


def opt_from_us(value: int | None) -> datetime | None:
    return None if value is None else EPOCH + timedelta(microseconds=value)


def span_us(value: timedelta) -> int:
    return value // _ONE_US
