"""A dependency outside Kafka failed (the schema registry): retry the batch later, never dead-letter it."""

from __future__ import annotations

import random
from dataclasses import dataclass


class RetryLater(RuntimeError):
    """Raised by a processor (or the engine's batch hook) when a batch cannot be processed now.

    The engine discards the task's uncommitted work (the open transaction is never committed), rebuilds
    the task from Kafka after a back-off and processes the same records again.
    """


@dataclass
class Backoff:
    """Exponential back-off with full jitter: attempt n waits uniform(0, min(cap, base * 2**n))."""

    base_s: float = 0.5
    cap_s: float = 15.0
    attempts: int = 0

    def next_delay(self) -> float:
        delay = random.uniform(0, min(self.cap_s, self.base_s * 2**self.attempts))
        self.attempts += 1
        return max(delay, self.base_s / 2)

    def reset(self) -> None:
        self.attempts = 0
