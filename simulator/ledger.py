"""The simulator's ledger: a JSON-lines record of what it sent and what the gateway answered.

Line kinds (field `kind`):
- `run`: one header (run id, start time, target URL, seed, sizes) — never the secret;
- `event`: one per planned event (event_id, event type, account_id, job id, outcome, payload time, source,
  planned deliveries) — identifiers only, never payload data;
- `attempt`: one per HTTP attempt (event_id, event type, account_id, delivery number, attempt number, send
  time, status or network error, latency, the gateway's short `reason`, and the result: accepted, retry,
  rejected or gave_up);
- `end`: the summary written when the run finishes.

`read_ledger` / `summarize` are pure over the lines; `LedgerWriter` is the thin file shell.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import orjson

from simulator.retry import is_accepted

Result = Literal["accepted", "retry", "rejected", "gave_up"]


@dataclass(frozen=True, slots=True)
class Attempt:
    event_id: str
    event_type: str
    account_id: str | None
    delivery: int
    attempt: int
    sent_at: str
    status: int | None
    error: str | None
    latency_ms: float
    result: Result
    reason: str | None = None
    next_delay_s: float | None = None

    def record(self) -> dict[str, Any]:
        return {
            "kind": "attempt",
            "event_id": self.event_id,
            "event_type": self.event_type,
            "account_id": self.account_id,
            "delivery": self.delivery,
            "attempt": self.attempt,
            "sent_at": self.sent_at,
            "status": self.status,
            "error": self.error,
            "latency_ms": self.latency_ms,
            "result": self.result,
            "reason": self.reason,
            "next_delay_s": self.next_delay_s,
        }


@dataclass(frozen=True, slots=True)
class EventInfo:
    event_id: str
    event_type: str
    account_id: str | None
    job_id: str | None
    outcome: str | None
    occurred_at: str | None
    source: str
    deliveries: int


@dataclass(slots=True)
class Ledger:
    run: dict[str, Any] = field(default_factory=dict)
    events: dict[str, EventInfo] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)
    end: dict[str, Any] | None = None


def parse_lines(lines: Iterable[bytes | str]) -> Ledger:
    """A ledger from its JSON lines (blank lines skipped). Unknown kinds are ignored (forward compatible)."""
    ledger = Ledger()
    for line in lines:
        if not line.strip():
            continue
        obj = orjson.loads(line)
        kind = obj.get("kind")
        if kind == "run":
            ledger.run = obj
        elif kind == "event":
            info = EventInfo(
                obj["event_id"],
                obj["event_type"],
                obj.get("account_id"),
                obj.get("job_id"),
                obj.get("outcome"),
                obj.get("occurred_at"),
                obj.get("source", "generated"),
                int(obj.get("deliveries", 1)),
            )
            ledger.events[info.event_id] = info
        elif kind == "attempt":
            ledger.attempts.append(
                Attempt(
                    obj["event_id"],
                    obj["event_type"],
                    obj.get("account_id"),
                    int(obj["delivery"]),
                    int(obj["attempt"]),
                    obj["sent_at"],
                    obj.get("status"),
                    obj.get("error"),
                    float(obj.get("latency_ms", 0.0)),
                    obj["result"],
                    obj.get("reason"),
                    obj.get("next_delay_s"),
                )
            )
        elif kind == "end":
            ledger.end = obj
    return ledger


def read_ledger(path: Path) -> Ledger:
    with path.open("rb") as fh:
        return parse_lines(fh)


@dataclass(frozen=True, slots=True)
class LedgerSummary:
    events: int
    accounts: int
    deliveries: int  # deliveries planned (originals + duplicates)
    duplicates_injected: int
    attempts: int
    retries: int
    accepted_events: int  # events answered 2xx at least once
    failed_events: int  # events never answered 2xx (all attempts failed or refused)
    statuses: Mapping[str, int]
    latency_p50_ms: float | None
    latency_p99_ms: float | None


def accepted_event_ids(attempts: Iterable[Attempt]) -> set[str]:
    return {a.event_id for a in attempts if is_accepted(a.status)}


def summarize(ledger: Ledger) -> LedgerSummary:
    events = ledger.events.values()
    planned = sum(e.deliveries for e in events)
    accepted = accepted_event_ids(ledger.attempts)
    statuses = Counter(str(a.status) if a.status is not None else (a.error or "error") for a in ledger.attempts)
    latencies = sorted(a.latency_ms for a in ledger.attempts)
    p50 = statistics.median(latencies) if latencies else None
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else None
    return LedgerSummary(
        events=len(ledger.events),
        accounts=len({e.account_id for e in events if e.account_id}),
        deliveries=planned,
        duplicates_injected=planned - len(ledger.events),
        attempts=len(ledger.attempts),
        retries=sum(1 for a in ledger.attempts if a.attempt > 1),
        accepted_events=len(accepted & set(ledger.events)),
        failed_events=len(set(ledger.events) - accepted),
        statuses=dict(sorted(statuses.items())),
        latency_p50_ms=p50,
        latency_p99_ms=p99,
    )


class LedgerWriter:
    """Appends ledger lines to a file (parent directories created). Not thread-safe; one event loop."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[bytes] = path.open("wb")

    def write(self, record: Mapping[str, Any]) -> None:
        self._fh.write(orjson.dumps(record) + b"\n")

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()
