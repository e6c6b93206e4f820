"""Generated event sequences (duplicates, reordering, pending/final pairs, punctuation) checked against a
slow reference model written straight from docs/processing.md: plain dicts, full scans for expiry and
timeouts, no timer index, no caches, no serialization. It also checks that the processor's outputs survive
restarts (rebuilt from serialized stores at arbitrary points) byte for byte.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.logic import (
    AccountProcessor,
    AccountUpdate,
    Event,
    LogicConfig,
    Output,
    RejectedEvent,
    in_memory_stores,
)
from processors.logic.timeutil import to_us
from tests.processors.logic.logic_helpers import T0, at, job_event

MIN = 60_000_000  # µs
BASE = to_us(T0)
ACCOUNTS = ("acct-a", "acct-b")
TYPES = ("income.added", "direct_deposit_switch.added")
WINDOW = 25 * 60 * MIN  # pending_timeout + timeout_grace (defaults)
RETENTION_MIN = 700  # shorter than the timeout window, so expiry and re-delivery are common

Row = tuple[Any, ...]


@dataclass
class Spec:
    account: str
    event_type: str
    outcome: str | None
    occurred: int  # minutes
    job_id: str


@dataclass
class Job:
    open: dict[str, Any] | None = None
    closed: int | None = None
    timed_out: dict[str, Any] | None = None


@dataclass
class Model:
    bucket_min: int
    seen: dict[str, int] = field(default_factory=dict)
    clock: int | None = None
    jobs: dict[tuple[str, str], Job] = field(default_factory=dict)
    latest: dict[str, dict[str, tuple[Row, int]]] = field(default_factory=dict)
    versions: Counter[str] = field(default_factory=Counter)

    def _update(self, update_id: str, account: str, change: str, outcome: Row | None, as_of: int | None) -> Row:
        if outcome is not None and as_of is not None:
            jobs = self.latest.setdefault(account, {})
            current = jobs.get(outcome[0])
            if current is None or as_of >= current[1]:
                jobs[outcome[0]] = (outcome, as_of)
        self.versions[account] += 1
        return (update_id, account, change, outcome, self.versions[account])

    def advance(self, now: int) -> list[Row]:
        self.clock = now if self.clock is None else max(self.clock, now)
        clock = self.clock
        bucket = self.bucket_min * MIN
        for event_id, first in list(self.seen.items()):
            expiry = -(-(first + RETENTION_MIN * MIN) // bucket) * bucket
            if expiry < clock:
                del self.seen[event_id]
        due = sorted(
            (job.open["since"] + WINDOW, f"{key[0]}|{key[1]}", key)
            for key, job in self.jobs.items()
            if job.open is not None and job.open["since"] + WINDOW < clock
        )
        rows = []
        for _deadline, _name, key in due:
            job = self.jobs[key]
            pending = job.open
            assert pending is not None
            job.open = None
            job.timed_out = pending
            job.closed = pending["last"] if job.closed is None else max(job.closed, pending["last"])
            outcome = (
                pending["name"],
                pending["job_id"],
                "timed_out",
                None,
                pending["since"],
                None,
                pending["n"],
            )
            rows.append(
                self._update(f"{pending['first']}:timed_out", key[0], "job_timed_out", outcome, pending["last"])
            )
        return rows

    def process(self, event_id: str, spec: Spec, received: int) -> list[Row]:
        rows = self.advance(received)
        if event_id in self.seen:
            return rows
        if spec.outcome is None:  # not remembered: a replay after a fix goes through
            return [*rows, ("dead", event_id, "missing_outcome")]
        self.seen[event_id] = received
        job = self.jobs.setdefault((spec.account, spec.event_type), Job())
        name = spec.event_type.split(".")[0]
        occ = BASE + spec.occurred * MIN
        code = "E1" if spec.outcome == "error" else None
        if spec.outcome == "pending":
            if job.closed is not None and occ <= job.closed:
                return [*rows, self._update(event_id, spec.account, "job_stale", None, None)]
            if job.open is None:
                job.open = {
                    "first": event_id,
                    "job_id": spec.job_id,
                    "since": occ,
                    "last": occ,
                    "n": 1,
                    "name": name,
                }
            else:
                job.open["since"] = min(job.open["since"], occ)
                job.open["last"] = max(job.open["last"], occ)
                job.open["n"] += 1
            p = job.open
            outcome = (name, p["job_id"], "pending", None, p["since"], None, p["n"])
            return [*rows, self._update(event_id, spec.account, "job_pending", outcome, p["last"])]
        job.closed = occ if job.closed is None else max(job.closed, occ)
        change = "job_failed" if spec.outcome == "error" else "job_succeeded"
        joined = None
        if job.open is not None and occ >= job.open["since"]:
            joined, job.open = job.open, None
        elif job.timed_out is not None and 0 <= occ - job.timed_out["since"] <= WINDOW:
            joined, job.timed_out = job.timed_out, None
        if joined is None:
            outcome = (name, spec.job_id, spec.outcome, code, None, occ, 1)
            return [*rows, self._update(event_id, spec.account, change, outcome, occ)]
        outcome = (name, spec.job_id, spec.outcome, code, joined["since"], occ, joined["n"] + 1)
        return [*rows, self._update(event_id, spec.account, change, outcome, max(occ, joined["last"]))]


def rows_of(outputs: list[Output]) -> list[Row]:
    rows: list[Row] = []
    for o in outputs:
        if isinstance(o, RejectedEvent):
            rows.append(("dead", o.event_id, o.reason))
        elif isinstance(o, AccountUpdate):
            j = o.outcome
            outcome = None
            if j is not None:
                outcome = (
                    j.job,
                    j.job_id,
                    j.outcome,
                    j.error_code,
                    j.pending_since_us,
                    j.resolved_at_us,
                    j.deliveries_seen,
                )
            rows.append((o.update_id, o.account_id, o.change.value, outcome, o.account.version))
    return rows


specs_st = st.lists(
    st.builds(
        Spec,
        account=st.sampled_from(ACCOUNTS),
        event_type=st.sampled_from(TYPES),
        outcome=st.sampled_from(["pending", "pending", "success", "error", None]),
        occurred=st.integers(0, 4000),
        job_id=st.sampled_from(["00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"]),
    ),
    min_size=1,
    max_size=20,
)
# ("deliver", which event, received-time step) or ("tick", _, step): steps may be slightly negative
# (gateway instances' clocks differ) and large enough to pass timeouts and dedupe retention.
ops_st = st.lists(
    st.tuples(
        st.sampled_from(["deliver", "deliver", "deliver", "tick"]),
        st.integers(0, 1000),
        st.integers(-5, 1500),
    ),
    min_size=1,
    max_size=50,
)


def _event(index: int, spec: Spec, received: int) -> Event:
    return job_event(
        f"ev{index}",
        spec.outcome,
        occurred=spec.occurred,
        received=received,
        event_type=spec.event_type,
        account=spec.account,
        job_id=spec.job_id,
    )


def _run(
    specs: list[Spec],
    ops: list[tuple[str, int, int]],
    config: LogicConfig,
    restarts: frozenset[int],
    serialized: bool,
) -> tuple[list[Output], list[Row], dict[str, Any]]:
    stores = in_memory_stores(serialized=serialized)
    proc = AccountProcessor(config, stores)
    outputs: list[Output] = []
    model_rows: list[Row] = []
    model = Model(bucket_min=int(config.dedupe_bucket / timedelta(minutes=1)))
    received = 0
    for step, (op, n, delta) in enumerate(ops):
        if step in restarts:
            proc.flush()  # the last commit before a rebalance (an abort's writes are lost with the overlay)
            proc = AccountProcessor(config, stores)  # what the runtime does after a rebalance or abort
        received = max(0, received + delta)
        if op == "tick":
            outputs += proc.on_time(at(received))
            model_rows += model.advance(BASE + received * MIN)
        else:
            index = n % len(specs)
            outputs += proc.process(_event(index, specs[index], received))
            model_rows += model.process(f"ev{index}", specs[index], BASE + received * MIN)
    return outputs, model_rows, {a: {k: v[0] for k, v in jobs.items()} for a, jobs in model.latest.items()}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    specs=specs_st,
    ops=ops_st,
    bucket_min=st.sampled_from([1, 7, 60]),
    restarts=st.frozensets(st.integers(0, 50)),
)
def test_processor_matches_reference_model(
    specs: list[Spec], ops: list[tuple[str, int, int]], bucket_min: int, restarts: frozenset[int]
) -> None:
    config = LogicConfig(dedupe_retention=timedelta(minutes=RETENTION_MIN), dedupe_bucket=timedelta(minutes=bucket_min))
    outputs, expected_rows, expected_jobs = _run(specs, ops, config, frozenset(), serialized=False)
    assert rows_of(outputs) == expected_rows

    # The latest job outcomes in the final snapshot of each account are the model's.
    final: dict[str, dict[str, Row]] = {}
    for o in outputs:
        if isinstance(o, AccountUpdate):
            final[o.account_id] = {
                k: (
                    j.job,
                    j.job_id,
                    j.outcome,
                    j.error_code,
                    j.pending_since_us,
                    j.resolved_at_us,
                    j.deliveries_seen,
                )
                for k, j in o.account.jobs.items()
            }
    assert final == expected_jobs

    # Restarts from serialized stores change nothing, byte for byte (determinism included).
    restarted, _, _ = _run(specs, ops, config, restarts, serialized=True)
    assert restarted == outputs


@settings(max_examples=200, deadline=None)
@given(specs=specs_st, ops=ops_st)
def test_invariants(specs: list[Spec], ops: list[tuple[str, int, int]]) -> None:
    config = LogicConfig(dedupe_retention=timedelta(minutes=RETENTION_MIN))
    outputs, _, _ = _run(specs, ops, config, frozenset(), serialized=True)
    updates = [o for o in outputs if isinstance(o, AccountUpdate)]
    versions: dict[str, int] = {}
    timed_out_ids = [u.update_id for u in updates if u.update_id.endswith(":timed_out")]
    assert len(timed_out_ids) == len(set(timed_out_ids))  # a job times out at most once
    for u in updates:
        assert u.account.version == versions.get(u.account_id, 0) + 1  # one snapshot step per update
        versions[u.account_id] = u.account.version
        if u.outcome is not None:
            assert u.outcome.deliveries_seen >= 1
            ttr = u.outcome.time_to_resolve_ms
            assert ttr is None or ttr >= 0
            if u.outcome.outcome == "timed_out":
                assert u.outcome.resolved_at_us is None
    # Between two deliveries of one event_id closer than the retention, the second emits nothing.
    delivered = [(n % len(specs), delta) for op, n, delta in ops if op == "deliver"]
    assert len([u for u in updates if not u.update_id.endswith(":timed_out")]) + sum(
        isinstance(o, RejectedEvent) for o in outputs
    ) <= len(delivered)
