"""The pure parts of the operator commands: dead-letter selection, time arguments, how raw bytes are shown."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

import pytest

from operate.cli import parse_time, printable, render_dead_letter
from operate.deadletters import DeadLetterFilter, DeadLetterRecord

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def letter(stage: str = "gateway", reason: str = "invalid_payload", event_type: str | None = "paystubs.added",
           event_id: str | None = "e1", failed_at: datetime = NOW, raw: bytes = b"{}") -> DeadLetterRecord:  # fmt: skip
    datum = {
        "stage": stage, "reason": reason, "error": "payload.account_id: missing", "event_id": event_id,
        "event_type": event_type, "failed_at": failed_at, "source_topic": None, "source_partition": None,
        "source_offset": None, "source_key": None, "headers": [{"name": "x-timestamp", "value": b"1700000000"}],
        "raw": raw,
    }  # fmt: skip
    return DeadLetterRecord(2, 7, datum)


def test_filter_criteria_combine_and_empty_matches_all() -> None:
    assert DeadLetterFilter().matches(letter())
    assert DeadLetterFilter(stages=frozenset({"processor"})).matches(letter(stage="processor"))
    assert not DeadLetterFilter(stages=frozenset({"processor"})).matches(letter())
    assert not DeadLetterFilter(reasons=frozenset({"invalid_json"})).matches(letter())
    assert DeadLetterFilter(event_types=("paystubs.*",)).matches(letter())
    assert not DeadLetterFilter(event_types=("shifts.*", "account.added")).matches(letter())
    assert not DeadLetterFilter(event_types=("paystubs.*",)).matches(letter(event_type=None))
    assert DeadLetterFilter(event_ids=frozenset({"e1"})).matches(letter())
    assert not DeadLetterFilter(event_ids=frozenset({"e1"})).matches(letter(event_id=None))
    window = DeadLetterFilter(since=NOW - timedelta(hours=1), until=NOW)
    assert window.matches(letter(failed_at=NOW - timedelta(minutes=1)))
    assert not window.matches(letter(failed_at=NOW))  # until is exclusive
    assert not window.matches(letter(failed_at=NOW - timedelta(hours=2)))


def test_time_arguments() -> None:
    assert parse_time("90m", now=NOW) == NOW - timedelta(minutes=90)
    assert parse_time("7d", now=NOW) == NOW - timedelta(days=7)
    assert parse_time("2026-05-01T10:00:00") == datetime(2026, 5, 1, 10, tzinfo=UTC)  # no offset: UTC
    assert parse_time("2026-05-01T10:00:00+02:00") == datetime(2026, 5, 1, 8, tzinfo=UTC)
    with pytest.raises(argparse.ArgumentTypeError, match="duration like 30m"):
        parse_time("yesterday")


def test_raw_bytes_shown_as_text_only_when_printable() -> None:
    assert printable(b'{"a": "caf\xc3\xa9"}\n') == '{"a": "café"}\n'
    assert printable(b"\xff\xfe") is None
    assert printable(b"a\x00b") is None
    shown = render_dead_letter(letter(raw=b"\x00\x01binary"))
    assert "raw (8 bytes, hex):\n0001" in shown
    assert "x-timestamp: 1700000000" in shown
    assert "dead letter 2:7" in shown
