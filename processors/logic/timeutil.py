"""Time as integer epoch microseconds.

State and timers keep time as ``int`` microseconds: comparisons and arithmetic are cheap, the
serialized form is exact, and no timezone can leak in. Conversion to ``datetime`` happens only at the
edges (``Event`` in, ``to_dict()`` out).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


def to_us(value: datetime) -> int:
    """Epoch microseconds of an aware datetime (a naive one raises TypeError: never guess a zone)."""
    return (value - EPOCH) // _ONE_US


def from_us(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


def opt_from_us(value: int | None) -> datetime | None:
    return None if value is None else EPOCH + timedelta(microseconds=value)


def _keep(value: int | None) -> int | None:
    return value


def time_out(micros: bool) -> Callable[[int | None], datetime | int | None]:
    """The ``to_dict`` time converter: ``datetime`` (default) or the raw epoch µs, which is exactly what
    Avro ``timestamp-micros`` stores (fastavro writes ints as-is, skipping ~1 µs per datetime)."""
    return _keep if micros else opt_from_us


def span_us(value: timedelta) -> int:
    return value // _ONE_US
