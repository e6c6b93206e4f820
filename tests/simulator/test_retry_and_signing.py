"""Pinwheel's retry schedule (pure) and the simulator's signatures checked by the gateway's verification."""

from __future__ import annotations

import itertools
import random
import time
from datetime import UTC, datetime

import pytest

from gateway.signature import Refused, Verified, verify
from simulator.retry import RetryPolicy, is_accepted, is_retryable, next_delay, retry_delays
from simulator.sender import signed_headers
from simulator.traffic import TrafficConfig, build_traffic


@pytest.mark.parametrize("scale", [1.0, 0.01, 0.0005])
def test_at_most_five_retries_growing_within_the_window(scale: float) -> None:
    policy = RetryPolicy(time_scale=scale)
    for seed in range(300):
        delays = retry_delays(policy, random.Random(seed))
        assert len(delays) == 5  # the default base fits all five into 15 minutes
        assert all(b >= a for a, b in itertools.pairwise(delays)), delays
        assert sum(delays) <= 900 * scale
        for k, delay in enumerate(delays):  # equal jitter: [base*2^k / 2, base*2^k]
            assert 28 * 2**k / 2 * scale <= delay <= 28 * 2**k * scale


def test_jitter_differs_between_deliveries() -> None:
    policy = RetryPolicy()
    schedules = {tuple(retry_delays(policy, random.Random(seed))) for seed in range(20)}
    assert len(schedules) == 20


def test_a_schedule_that_does_not_fit_is_cut_at_the_window() -> None:
    policy = RetryPolicy(base_delay_s=100.0)  # 50..100, 100..200, 200..400, 400..800: cannot all fit in 900
    for seed in range(50):
        delays = retry_delays(policy, random.Random(seed))
        assert len(delays) < 5
        assert sum(delays) <= 900


def test_next_delay_stops_after_the_schedule_or_past_the_window() -> None:
    policy = RetryPolicy(time_scale=0.01)
    delays = [0.2, 0.5, 1.0, 2.0, 4.0]
    assert next_delay(delays, 1, 0.0, policy) == 0.2
    assert next_delay(delays, 5, 1.0, policy) == 4.0
    assert next_delay(delays, 6, 1.0, policy) is None  # the 6th attempt was the last
    assert next_delay(delays, 3, 8.5, policy) is None  # 8.5 + 1.0 > 9 s (the scaled 15 minutes)


@pytest.mark.parametrize(
    ("status", "error", "retry", "accepted"),
    [
        (200, None, False, True),
        (204, None, False, True),
        (500, None, True, False),
        (503, None, True, False),
        (400, None, False, False),
        (401, None, False, False),
        (413, None, False, False),
        (None, "timeout", True, False),
        (None, "connect_error", True, False),
    ],
)
def test_what_is_retried(status: int | None, error: str | None, retry: bool, accepted: bool) -> None:
    assert is_retryable(status, error) is retry
    assert is_accepted(status) is accepted


def test_signed_headers_verify_with_the_gateway_and_are_per_timestamp() -> None:
    events = build_traffic(TrafficConfig(accounts=2, seed=3), datetime.now(UTC))
    secret = b"sim-secret-1"
    now = int(time.time())
    for event in events:
        headers = signed_headers(event, secret, now)
        verdict = verify(headers, event.body, [b"other", secret], now=now, tolerance_s=300)
        assert isinstance(verdict, Verified)
        assert verdict.secret_index == 1
        assert headers["X-Pinwheel-Webhook-Id"] == verdict.webhook_id
        assert headers["X-Timestamp"] == str(now)
        # A retry 40 s later carries its own timestamp and signature; the old signature does not fit it.
        later = signed_headers(event, secret, now + 40)
        assert later["X-Pinwheel-Signature"] != headers["X-Pinwheel-Signature"]
        stale = {**later, "X-Pinwheel-Signature": headers["X-Pinwheel-Signature"]}
        assert isinstance(verify(stale, event.body, [secret], now=now + 40, tolerance_s=300), Refused)
        assert isinstance(verify(headers, event.body, [b"wrong"], now=now, tolerance_s=300), Refused)
