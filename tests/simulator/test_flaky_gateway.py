"""The simulator against a receiver that fails on purpose: 5xx, timeouts, dropped connections.

Checks Pinwheel's redelivery policy end to end over real HTTPS: at most 6 attempts per delivery, growing
backoff inside the (scaled) 15-minute window, a fresh x-timestamp and signature on every attempt, no retry
after a 4xx, and a ledger line per attempt without the secret.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.tls import ensure_self_signed
from simulator.ledger import read_ledger, summarize
from simulator.retry import RetryPolicy
from simulator.sender import RateLimiter, SendOptions, send_all
from simulator.settings import SimulatorSettings
from simulator.simulate import simulate
from simulator.traffic import PlannedEvent, TrafficConfig, build_traffic
from tests.simulator.sim_helpers import FlakyReceiver

SECRET = "flaky-secret-do-not-log"
SCALE = 0.002  # 15 minutes -> 1.8 s; delays 0.028-0.056 s ... 0.448-0.896 s

PLANS: dict[int, list[str]] = {
    0: ["500", "503", "ok"],
    1: ["slow", "ok"],  # the first attempt times out at the client
    2: ["drop", "drop", "ok"],
    3: ["500"] * 10,  # never succeeds: 6 attempts, then the simulator gives up
    4: ["400"],  # a 4xx is final: no retry
    5: ["drop"] * 10,
}


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("sim-tls")
    ensure_self_signed(d / "c.pem", d / "k.pem")
    return d / "c.pem", d / "k.pem"


@pytest.fixture
def events() -> list[PlannedEvent]:
    planned = build_traffic(
        TrafficConfig(accounts=2, seed=5, duplicate_rate=0, include_capture=False), datetime.now(UTC)
    )[: len(PLANS) + 4]
    # all due at once: the test is about retries, not pacing
    return [
        PlannedEvent(
            e.event_id,
            e.event_type,
            e.account_id,
            e.job_id,
            e.outcome,
            e.occurred_at,
            e.source,
            e.body,
            (0.0,),
            e.headers,
        )
        for e in planned
    ]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The simulator's wall clock jumps 7 s per attempt, so every attempt gets a distinct x-timestamp."""
    import time as real

    import simulator.sender as sender

    class Clock:
        calls = 0
        perf_counter = staticmethod(real.perf_counter)
        monotonic = staticmethod(real.monotonic)

        def time(self) -> float:
            Clock.calls += 1
            return real.time() + 7 * Clock.calls

    monkeypatch.setattr(sender, "time", Clock())
    return


async def test_retries_follow_pinwheels_policy(
    tls: tuple[Path, Path], events: list[PlannedEvent], tmp_path: Path, clock: None
) -> None:
    ids = [e.event_id for e in events]

    def action_for(event_id: str, attempt: int) -> str:
        actions = PLANS.get(ids.index(event_id), ["ok"])
        return actions[min(attempt, len(actions)) - 1]

    receiver = await FlakyReceiver(action_for, SECRET.encode(), *tls).start()
    settings = SimulatorSettings(
        url=receiver.url,
        ca_file=tls[0],
        ledger=tmp_path / "ledger.jsonl",
        time_scale=SCALE,
        timeout_s=0.5,
        concurrency=8,
        rate=0,
        progress=False,
    )
    started = time.monotonic()
    try:
        run = await simulate(settings, secret=SECRET, events=events)
    finally:
        await receiver.stop()
    elapsed = time.monotonic() - started

    ledger = read_ledger(settings.ledger)
    by_event: dict[str, list[Any]] = {}
    for a in ledger.attempts:
        by_event.setdefault(a.event_id, []).append(a)
    results = {i: [a.result for a in by_event[ids[i]]] for i in range(len(ids))}
    assert results[0] == ["retry", "retry", "accepted"]
    assert [a.status for a in by_event[ids[0]]] == [500, 503, 200]
    assert results[1] == ["retry", "accepted"]
    assert by_event[ids[1]][0].error == "timeout"
    assert results[2] == ["retry", "retry", "accepted"]
    assert {a.error for a in by_event[ids[2]][:2]} <= {"read_error", "protocol_error", "connect_error", "network_error"}
    assert results[3] == ["retry"] * 5 + ["gave_up"]
    assert results[4] == ["rejected"]
    assert by_event[ids[4]][0].status == 400
    assert results[5] == ["retry"] * 5 + ["gave_up"]
    for i in range(6, len(ids)):
        assert results[i] == ["accepted"]

    window = RetryPolicy(time_scale=SCALE).scaled_window_s
    for event_id in ids:
        seen = receiver.attempts(event_id)
        attempts = by_event[event_id]
        assert len(seen) == len(attempts) <= 6
        assert [a.attempt for a in attempts] == list(range(1, len(attempts) + 1))
        # every attempt is signed for its own send time, and re-signed on retry
        assert all(s.signature_ok for s in seen)
        stamps = [s.x_timestamp for s in seen]
        assert stamps == sorted(stamps)
        assert len(set(stamps)) == len(stamps)
        # backoff grows, and the retries stay inside the scaled 15-minute window
        delays = [a.next_delay_s for a in attempts if a.next_delay_s is not None]
        assert delays == sorted(delays)
        assert sum(delays) <= window
        gaps = [b.at - a.at for a, b in itertools.pairwise(seen)]
        for gap, delay in zip(gaps, delays, strict=False):
            assert gap >= delay * 0.95
        if len(seen) > 1:
            assert seen[-1].at - seen[0].at <= window + 6 * 0.5 + 1.0  # plus request timeouts and slack

    summary = summarize(ledger)
    assert summary.attempts == len(receiver.seen)
    assert summary.accepted_events == len(ids) - 3
    assert summary.failed_events == 3
    assert run.result.gave_up_deliveries == 2
    assert run.result.rejected_deliveries == 1
    assert SECRET not in settings.ledger.read_text()
    assert elapsed < 15


async def test_rate_limit_and_concurrency_are_respected(tls: tuple[Path, Path], events: list[PlannedEvent]) -> None:
    receiver = await FlakyReceiver(lambda e, a: "ok", SECRET.encode(), *tls).start()
    options = SendOptions(
        url=receiver.url, secret=SECRET.encode(), ca_file=tls[0], rate=20.0, concurrency=2, timeout_s=5
    )
    started = time.monotonic()
    try:
        result = await send_all(events, options)
    finally:
        await receiver.stop()
    elapsed = time.monotonic() - started
    assert result.accepted_deliveries == len(events) == result.attempts
    # 10 attempts at 20/s: at least 9 intervals of 50 ms (a loaded machine only makes it slower). How they are
    # spaced is the limiter's, tested on its own clock below: arrival times also depend on the receiver's load.
    assert elapsed >= (len(events) - 1) / 20 * 0.9


async def test_rate_limiter_spaces_acquisitions_evenly() -> None:
    now = [100.0]
    granted: list[float] = []

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    limiter = RateLimiter(20.0, clock=lambda: now[0], sleep=sleep)

    async def one() -> None:
        await limiter.acquire()
        granted.append(now[0])

    for _ in range(3):
        await one()
    now[0] += 1.0  # idle for a second: no burst is saved up
    await asyncio.gather(*(one() for _ in range(4)))
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(granted)]
    assert gaps[:3] == [0.05, 0.05, 1.0]
    assert gaps[3:] == [0.05, 0.05, 0.05]


def test_send_options_refuse_plain_http_and_empty_secret() -> None:
    with pytest.raises(ValueError, match="https"):
        SendOptions(url="http://127.0.0.1/x", secret=b"s")
    with pytest.raises(ValueError, match="secret"):
        SendOptions(url="https://127.0.0.1/x", secret=b"")
