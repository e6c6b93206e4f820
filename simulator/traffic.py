"""Pinwheel-like webhook traffic as a pure, deterministic function of a seed (functional core).

`build_traffic(config, base_time)` returns every event of a run with the exact body bytes Pinwheel would
sign and the times (seconds after the start) at which each delivery is due: the first delivery and any
duplicate deliveries. Nothing here does I/O or reads a clock; the same config and base time give the same
bytes, so a run can be replayed and a test can pin what it sends.

Per account (see docs/consuming.md for what the processors make of it):
- `account.added`, sometimes `account.additional_connections_recommended`;
- jobs (identity, income, employment, direct deposit allocations/switch): success or error at once, or
  `pending` first and the final outcome (same job id, same event type) a few seconds later, or a pending that
  is never resolved (the processors time it out);
- paystubs and shifts batches (`*.added`, each batch its own job id, the last one `sync_status: complete`)
  with their sync milestones (`fully_synced` shares the job id of the last batch, as in the real capture);
- monitoring-status changes (degraded and back, user_action_required).
Plus a few events without an account (`company_connect.status.updated`), which produce no account update,
and, optionally, the 12 real sandbox deliveries byte-exact.

Bodies are written like Pinwheel's: Python `json.dumps` separators, key order event_id, event, payload.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal

from schemas import catalog

CAPTURE_FILE: Final = Path(__file__).parent / "data" / "pinwheel-sandbox-capture.jsonl"
DEFAULT_WEBHOOK_ID: Final = "420900d5-2ffb-4ad9-b2a6-38ef975f9b21"
DEFAULT_VERSION: Final = "2023-11-22"
USER_AGENT: Final = "python-requests/2.31.0"

PLATFORMS: Final = ("Workday", "ADP", "Gusto", "Paychex", "Justworks", "Paylocity", "UKG", "Rippling")
ERRORS: Final = (
    ("platform_unavailable", "platform_error"),
    ("invalid_credentials", "user_action_required"),
    ("unsupported_account", "platform_error"),
    ("timeout", "system_error"),
)
SIMPLE_JOBS: Final = (
    ("identity.added", "identity", 0.9),
    ("income.added", "income", 0.9),
    ("employment.added", "employment", 0.9),
    ("direct_deposit_allocations.added", "direct_deposit_allocations", 0.5),
    ("direct_deposit_switch.added", "direct_deposit_switch", 0.2),
)
JOB_OUTCOMES: Final = catalog.JOB_OUTCOMES

Source = Literal["generated", "capture"]


@dataclass(frozen=True, slots=True)
class TrafficConfig:
    """What a run looks like. Times are seconds of real time after the start of the run."""

    accounts: int = 300
    seed: int = 1
    #: account.added of the accounts are spread uniformly over this many seconds
    spread_s: float = 40.0
    #: share of jobs that go pending first
    pending_rate: float = 0.15
    #: share of pending jobs never resolved (they time out in the processors)
    unresolved_rate: float = 0.2
    #: share of final job outcomes that are errors
    error_rate: float = 0.08
    #: share of events delivered more than once (same body, re-signed)
    duplicate_rate: float = 0.05
    #: each delivery is delayed by a random 0..reorder_s, so events of an account arrive out of order
    reorder_s: float = 1.0
    #: a pending job is resolved this long after it went pending (uniform between the two)
    resolve_min_s: float = 2.5
    resolve_max_s: float = 10.0
    #: events without account_id (company_connect.status.updated), per account
    no_account_rate: float = 0.02
    #: send the 12 real sandbox deliveries too (byte-exact), starting at this offset
    include_capture: bool = True
    capture_at_s: float = 1.0
    webhook_id: str = DEFAULT_WEBHOOK_ID
    pinwheel_version: str = DEFAULT_VERSION

    def __post_init__(self) -> None:
        if self.accounts < 0:
            raise ValueError("accounts must not be negative")
        for name in ("pending_rate", "unresolved_rate", "error_rate", "duplicate_rate", "no_account_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.spread_s < 0 or self.reorder_s < 0:
            raise ValueError("spread_s and reorder_s must not be negative")
        if not 0 < self.resolve_min_s <= self.resolve_max_s:
            raise ValueError("need 0 < resolve_min_s <= resolve_max_s")
        # The final of a pending job must never overtake its pending through reordering alone: a final
        # before its pending is a different scenario (stale pending), not random noise.
        if self.resolve_min_s <= self.reorder_s:
            raise ValueError("resolve_min_s must be larger than reorder_s")


@dataclass(frozen=True, slots=True)
class PlannedEvent:
    """One webhook event of the run: identity, the bytes to sign, and when its deliveries are due."""

    event_id: str
    event_type: str
    account_id: str | None
    job_id: str | None
    outcome: str | None
    #: the payload's own time (timestamp / created_at / updated_at), ISO 8601
    occurred_at: str | None
    source: Source
    body: bytes
    #: due time of each delivery, seconds after the start; [0] is the original, the rest duplicates
    due_s: tuple[float, ...]
    #: request headers besides signature and timestamp (content type, webhook id, version, user agent)
    headers: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    @property
    def deliveries(self) -> int:
        return len(self.due_s)

    def ledger_record(self) -> dict[str, Any]:
        """What the ledger keeps about the event: identifiers and job fields, never the payload."""
        return {
            "kind": "event",
            "event_id": self.event_id,
            "event_type": self.event_type,
            "account_id": self.account_id,
            "job_id": self.job_id,
            "outcome": self.outcome,
            "occurred_at": self.occurred_at,
            "source": self.source,
            "deliveries": self.deliveries,
        }


@dataclass(frozen=True, slots=True)
class PlannedDelivery:
    """One delivery of an event (the original, or a duplicate), due `due_s` seconds after the start."""

    event: PlannedEvent
    number: int  # 1 = original, 2.. = duplicate deliveries
    due_s: float


def planned_deliveries(events: Sequence[PlannedEvent]) -> list[PlannedDelivery]:
    """Every delivery of the run, in due order (ties broken by event order, so deterministic)."""
    out = [PlannedDelivery(e, n + 1, due) for e in events for n, due in enumerate(e.due_s)]
    out.sort(key=lambda d: d.due_s)
    return out


def pinwheel_body(event_id: str, event_type: str, payload: dict[str, Any]) -> bytes:
    """A body as Pinwheel writes it: json.dumps defaults (", " and ": "), key order event_id, event, payload."""
    return json.dumps({"event_id": event_id, "event": event_type, "payload": payload}).encode()


def base_headers(webhook_id: str, version: str) -> tuple[tuple[str, str], ...]:
    return (
        ("Content-Type", "application/json"),
        ("Pinwheel-Version", version),
        ("X-Pinwheel-Webhook-Id", webhook_id),
        ("User-Agent", USER_AGENT),
    )


class _Gen:
    """The state of one generation: the random source, the base time and the events so far."""

    def __init__(self, config: TrafficConfig, base_time: datetime) -> None:
        self.c = config
        self.rng = random.Random(config.seed)
        self.base = base_time.astimezone(UTC)
        self.events: list[PlannedEvent] = []
        self.headers = base_headers(config.webhook_id, config.pinwheel_version)

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def iso(self, at_s: float) -> str:
        return (self.base + timedelta(seconds=at_s)).isoformat()

    def day(self, days_ago: int) -> str:
        return (self.base.date() - timedelta(days=days_ago)).isoformat()

    def due(self, at_s: float) -> tuple[float, ...]:
        rng = self.rng
        first = at_s + rng.uniform(0, self.c.reorder_s)
        extra: list[float] = []
        if rng.random() < self.c.duplicate_rate:
            copies = 1 if rng.random() < 0.8 else 2
            extra = sorted(first + rng.uniform(0.2, 5.0) for _ in range(copies))
        return (round(first, 4), *(round(x, 4) for x in extra))

    def add(
        self,
        event_type: str,
        payload: dict[str, Any],
        at_s: float,
        *,
        occurred_at: str | None,
        account_id: str | None,
    ) -> PlannedEvent:
        event_id = self.uuid()
        event = PlannedEvent(
            event_id=event_id,
            event_type=event_type,
            account_id=account_id,
            job_id=payload.get("id") if "outcome" in payload else None,
            outcome=payload.get("outcome"),
            occurred_at=occurred_at,
            source="generated",
            body=pinwheel_body(event_id, event_type, payload),
            due_s=self.due(at_s),
            headers=self.headers,
        )
        self.events.append(event)
        return event


@dataclass(slots=True)
class _Account:
    account_id: str
    end_user_id: str
    link_token_id: str


def _job_payload(
    g: _Gen,
    acct: _Account,
    *,
    job_id: str,
    name: str,
    at_s: float,
    outcome: str,
    params: dict[str, Any],
    head: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Key order of the real capture: [added, deleted,] id, name, timestamp, outcome, errors, link token, params,
    account_id, end_user_id."""
    error_code, error_type = g.rng.choice(ERRORS) if outcome == catalog.ERROR else (None, None)
    return {
        **(head or {}),
        "id": job_id,
        "name": name,
        "timestamp": g.iso(at_s),
        "outcome": outcome,
        "error_code": error_code,
        "error_type": error_type,
        "link_token_id": acct.link_token_id,
        "params": params,
        "account_id": acct.account_id,
        "end_user_id": acct.end_user_id,
    }


def _simple_job(g: _Gen, acct: _Account, event_type: str, name: str, at_s: float) -> None:
    rng, c = g.rng, g.c
    job_id = g.uuid()
    params: dict[str, Any] = {}
    if event_type == "direct_deposit_switch.added":
        params = {"amount": rng.choice((None, 5000, 12500, 25000))}

    def final_outcome() -> str:
        return catalog.ERROR if rng.random() < c.error_rate else catalog.SUCCESS

    def emit(outcome: str, t: float) -> None:
        payload = _job_payload(g, acct, job_id=job_id, name=name, at_s=t, outcome=outcome, params=params)
        g.add(event_type, payload, t, occurred_at=payload["timestamp"], account_id=acct.account_id)

    if rng.random() < c.pending_rate:
        emit(catalog.PENDING, at_s)
        if rng.random() >= c.unresolved_rate:
            emit(final_outcome(), at_s + rng.uniform(c.resolve_min_s, c.resolve_max_s))
    else:
        emit(final_outcome(), at_s)


def _items(g: _Gen, count: int) -> list[dict[str, Any]]:
    return [{"id": g.uuid(), "document_type": None, "year": None, "pay_date": None} for _ in range(count)]


def _sync_dataset(g: _Gen, acct: _Account, dataset: str, at_s: float) -> float:
    """Batches of `<dataset>.added` with their sync milestones; returns the time of the last event."""
    rng = g.rng
    batches = rng.randint(1, 4)
    t = at_s
    total = 0
    last_job = ""
    milestones = ["seven_days", "thirty_days", "ninety_days", "fully"]
    # Not enough history for the 30d/90d thresholds: that milestone is skipped (pinwheel-webhooks.md).
    if rng.random() < 0.15:
        milestones.remove("ninety_days")
    span_days = 0
    for index in range(batches):
        last = index == batches - 1
        count = rng.randint(1, 8)
        total += count
        span_days += rng.randint(7, 60)
        last_job = g.uuid()
        params: dict[str, Any] = {"count": count}
        if dataset == "paystubs":
            params |= {"from_pay_date": g.day(span_days), "to_pay_date": g.day(span_days - 7)}
        params["sync_status"] = "complete" if last else "in_progress"
        head = {"added": _items(g, count), "deleted": []}
        payload = _job_payload(
            g, acct, job_id=last_job, name=dataset, at_s=t, outcome=catalog.SUCCESS, params=params, head=head
        )
        g.add(f"{dataset}.added", payload, t, occurred_at=payload["timestamp"], account_id=acct.account_id)
        # Milestones interleave with the batches that reach them.
        if milestones and (last or rng.random() < 0.5):
            reached = milestones if last else [milestones[0]]
            for milestone in reached:
                t += rng.uniform(0.05, 0.5)
                sync_params: dict[str, Any] = {"count": total}
                if dataset == "paystubs":
                    sync_params |= {"from_pay_date": g.day(span_days), "to_pay_date": g.day(0)}
                job_id = last_job if milestone == "fully" else g.uuid()
                payload = _job_payload(
                    g, acct, job_id=job_id, name=dataset, at_s=t, outcome=catalog.SUCCESS, params=sync_params
                )
                g.add(
                    f"{dataset}.{milestone}_synced",
                    payload,
                    t,
                    occurred_at=payload["timestamp"],
                    account_id=acct.account_id,
                )
            milestones = [m for m in milestones if m not in reached]
        t += rng.uniform(0.2, 1.5)
    return t


def _account(g: _Gen, at_s: float) -> None:
    rng = g.rng
    acct = _Account(g.uuid(), g.uuid(), g.uuid())
    created = g.iso(at_s)
    added = {
        "created_at": created,
        "link_token_id": acct.link_token_id,
        "platform_id": g.uuid(),
        "connected": True,
        "monitoring_status": "active",
        "end_user_id": acct.end_user_id,
        "account_id": acct.account_id,
        "platform_name": rng.choice(PLATFORMS),
    }
    g.add("account.added", added, at_s, occurred_at=created, account_id=acct.account_id)
    t = at_s + rng.uniform(0.1, 0.8)
    for event_type, name, probability in SIMPLE_JOBS:
        if rng.random() < probability:
            _simple_job(g, acct, event_type, name, t)
            t += rng.uniform(0.05, 0.6)
    end = _sync_dataset(g, acct, "paystubs", t)
    if rng.random() < 0.6:
        end = max(end, _sync_dataset(g, acct, "shifts", t + rng.uniform(0.1, 1.0)))
    if rng.random() < 0.2:
        recommended = {
            "account_id": acct.account_id,
            "additional_platforms": [
                {
                    "platform_type": "time_and_attendance",
                    "action": rng.choice(("none", "login", "search", "ask")),
                    "platform_id": g.uuid(),
                }
            ],
        }
        g.add(
            "account.additional_connections_recommended",
            recommended,
            end + rng.uniform(0.1, 1.0),
            occurred_at=None,
            account_id=acct.account_id,
        )
    if rng.random() < 0.3:
        statuses = rng.choice((("degraded", "active"), ("user_action_required",), ("degraded",), ("unavailable",)))
        ts = end + rng.uniform(0.5, 3.0)
        for status in statuses:
            updated = g.iso(ts)
            payload = {"current_monitoring_status": status, "account_id": acct.account_id, "updated_at": updated}
            g.add("account.monitoring_status.updated", payload, ts, occurred_at=updated, account_id=acct.account_id)
            ts += rng.uniform(1.5, 4.0)


def _no_account_event(g: _Gen, at_s: float) -> None:
    payload = {
        "company_connection_id": g.uuid(),
        "status": g.rng.choice(("active", "pending", "error")),
        "updated_at": g.iso(at_s),
    }
    g.add("company_connect.status.updated", payload, at_s, occurred_at=payload["updated_at"], account_id=None)


def load_capture(path: Path = CAPTURE_FILE) -> list[dict[str, Any]]:
    """The real deliveries: [{path, headers, body}] with `body` the exact text that was signed."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def capture_events(records: Sequence[dict[str, Any]], at_s: float) -> list[PlannedEvent]:
    """The captured bodies, byte-exact, due at their original spacing (x-timestamp) from `at_s`."""
    if not records:
        return []
    first = min(int(r["headers"]["X-Timestamp"]) for r in records)
    events = []
    for index, record in enumerate(records):
        body = record["body"].encode()
        decoded = json.loads(body)
        payload = decoded.get("payload") or {}
        kept = tuple((name, value) for name, value in record["headers"].items() if name.lower() not in ("x-timestamp",))
        # Same-second deliveries keep their captured order (tiny offsets).
        due = at_s + int(record["headers"]["X-Timestamp"]) - first + index * 0.01
        events.append(
            PlannedEvent(
                event_id=decoded["event_id"],
                event_type=decoded["event"],
                account_id=payload.get("account_id"),
                job_id=payload.get("id") if "outcome" in payload else None,
                outcome=payload.get("outcome"),
                occurred_at=payload.get("timestamp") or payload.get("created_at"),
                source="capture",
                body=body,
                due_s=(round(due, 4),),
                headers=kept,
            )
        )
    return events


def build_traffic(
    config: TrafficConfig, base_time: datetime, capture: Sequence[dict[str, Any]] | None = None
) -> list[PlannedEvent]:
    """Every event of a run, in generation order. Deterministic in (config, base_time, capture)."""
    if base_time.tzinfo is None:
        raise ValueError("base_time must be timezone-aware")
    g = _Gen(config, base_time)
    starts = sorted(g.rng.uniform(0, config.spread_s) for _ in range(config.accounts))
    for at_s in starts:
        _account(g, at_s)
        if g.rng.random() < config.no_account_rate:
            _no_account_event(g, at_s + g.rng.uniform(0, 2.0))
    events = g.events
    if config.include_capture:
        records = load_capture() if capture is None else capture
        events = [*events, *capture_events(records, config.capture_at_s)]
    return events


def unresolved_pendings(events: Sequence[PlannedEvent]) -> list[PlannedEvent]:
    """Pending events of jobs whose final outcome is not part of the traffic (they must time out)."""
    finals = {(e.account_id, e.event_type, e.job_id) for e in events if e.outcome in catalog.FINAL_OUTCOMES}
    return [e for e in events if e.outcome == catalog.PENDING and (e.account_id, e.event_type, e.job_id) not in finals]
