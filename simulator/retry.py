"""Pinwheel's redelivery policy as pure functions.

pinwheel-webhooks.md: a response is expected within 15 seconds; on a 5xx or a network failure "up to 5
subsequent delivery attempts will be made with exponential backoff including jitter in the 15 minutes
following the initial delivery attempt". Pinwheel does not publish its base delay, so we choose one that
fits: delays of base·2^k with *equal jitter* (half fixed, half random), base 28 s, give at most
28+56+112+224+448 = 868 s of waiting, inside the 900 s window even with the request timeouts of the first
attempts; every delay is at least the previous one (delay k lies in [base·2^(k-1), base·2^k]).

All times scale with `time_scale` (0.01 turns the 15 minutes into 9 seconds), so tests and demos can run the
real schedule compressed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

RETRYABLE_NETWORK_ERRORS: Final = frozenset({"timeout", "connect_error", "read_error", "write_error", "protocol_error"})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 5
    base_delay_s: float = 28.0
    window_s: float = 900.0
    time_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must not be negative")
        if self.base_delay_s <= 0 or self.window_s <= 0 or self.time_scale <= 0:
            raise ValueError("base_delay_s, window_s and time_scale must be positive")

    @property
    def scaled_window_s(self) -> float:
        return self.window_s * self.time_scale


def retry_delays(policy: RetryPolicy, rng: random.Random) -> list[float]:
    """The waits before attempts 2..max_retries+1 (already scaled), never summing past the window."""
    delays: list[float] = []
    total = 0.0
    for k in range(policy.max_retries):
        ceiling = policy.base_delay_s * 2**k
        delay = (ceiling / 2 + rng.uniform(0, ceiling / 2)) * policy.time_scale
        if total + delay > policy.scaled_window_s:
            break  # an attempt would fall outside the window: Pinwheel gives up instead
        delays.append(delay)
        total += delay
    return delays


def is_retryable(status: int | None, error: str | None) -> bool:
    """5xx or a network failure: Pinwheel tries again. Any other answer (2xx, 3xx, 4xx) is final."""
    if status is None:
        return error is not None
    return status >= 500


def is_accepted(status: int | None) -> bool:
    return status is not None and 200 <= status < 300


def next_delay(delays: list[float], attempt: int, elapsed_s: float, policy: RetryPolicy) -> float | None:
    """The wait before attempt `attempt + 1`, or None when there is none left.

    `elapsed_s` is the (scaled) time since the first attempt: a retry past the 15-minute window is dropped
    even if the schedule has one left (slow timeouts can eat into the window).
    """
    if attempt > len(delays):
        return None
    delay = delays[attempt - 1]
    if elapsed_s + delay > policy.scaled_window_s:
        return None
    return delay
