"""Capped exponential back-off with jitter, for everything that waits for a dependency to come back."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class Backoff:
    """Attempt n waits between half and all of min(cap, base * 2**n): growing, capped, and spread out so that
    many clients retrying the same cluster do not come back in step. `reset` after a success."""

    base_s: float = 0.5
    cap_s: float = 30.0
    attempts: int = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap_s, self.base_s * 2**self.attempts)
        self.attempts += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempts = 0
