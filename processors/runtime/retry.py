"""A dependency outside Kafka failed (the schema registry): retry the batch later, never dead-letter it."""

from __future__ import annotations


class RetryLater(RuntimeError):
    """Raised by a processor (or the engine's batch hook) when a batch cannot be processed now.

    The engine discards the task's uncommitted work (the open transaction is never committed), rebuilds
    the task from Kafka after a back-off and processes the same records again.
    """
