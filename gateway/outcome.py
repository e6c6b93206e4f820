"""What became of a record handed to the publisher: the request's answer follows from it."""

from __future__ import annotations

from enum import StrEnum


class PublishOutcome(StrEnum):
    ACKED = "acked"  # the broker acknowledged it: 200
    SPOOLED = "spooled"  # durable in the spool: 200
    SPOOL_FULL = "spool_full"  # neither: answer 503
    FAILED = "producer_error"  # a permanent producer error: answer 503
