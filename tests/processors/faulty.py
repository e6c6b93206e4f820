"""A bug injected into a running processor, as a test's fault: the real `AccountPipeline` of every task, behind
a `TaskProcessor` that fails the records a test picks.

The pipeline is compiled (setup.py: mypyc), so its classes and functions cannot be patched; the service's task
factory can (processors/service.py is Python). A picked record is processed first, then fails as a bug in the
logic makes it fail (`RecordFailed`, what the pipeline raises for an exception in its logic): its effects are
half written, and the runtime must drop them and keep the record as a dead letter.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from processors import service
from processors.pipeline import AccountPipeline
from processors.runtime.ports import Record
from processors.runtime.task import RecordFailed


class FaultyPipeline:
    def __init__(self, inner: AccountPipeline, fails: Callable[[Record], str | None]) -> None:
        self.inner = inner
        self.fails = fails

    def event_time(self, record: Record) -> int:
        return self.inner.event_time(record)

    def process(self, record: Record, watermark_us: int) -> None:
        self.inner.process(record, watermark_us)
        if (reason := self.fails(record)) is not None:
            raise RecordFailed(record, reason, "RuntimeError")

    def punctuate(self, wall_clock_ms: int, watermark_us: int) -> None:
        self.inner.punctuate(wall_clock_ms, watermark_us)

    def end_of_batch(self) -> None:
        self.inner.end_of_batch()

    def reject(self, record: Record, reason: str, error: str) -> None:
        self.inner.reject(record, reason, error)


def inject_bug(monkeypatch: pytest.MonkeyPatch, fails: Callable[[Record], str | None]) -> None:
    """Until `monkeypatch.undo()`, processors built by `processors.service` fail the records `fails` names a
    dead-letter reason for."""

    def faulty(*args: object) -> FaultyPipeline:
        return FaultyPipeline(AccountPipeline(*args), fails)  # type: ignore[arg-type]

    monkeypatch.setattr(service, "AccountPipeline", faulty)


def event_id_of(record: Record) -> str | None:
    """The `event_id` header the gateway sets on a family record."""
    return next((value.decode() for name, value in record.headers if name == "event_id"), None)
