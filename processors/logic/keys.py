"""The store keys the logic builds and reads back: timers and join keys, each encoded and parsed here only.

Timer keys are ``<due:016d>|<kind>|<target>``: the fixed-width due time first, so the byte order of keys is
due order (then kind, then target) and a range scan of the timers store reads timers in the order they fire.
The stream clock is kept in the same store under ``CLOCK_KEY``, which sorts after every timer key.
Join keys are ``<account_id>|<event_type>``: an event type never contains ``|``, an account id might.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final, final

CLOCK_KEY: Final = "~clock"  # sorts after every "<digits>|..." timer key
TIMERS_END: Final = "~"  # exclusive upper bound of the timer keys
_MAX_DUE: Final = 10**16 - 1  # 16 digits of epoch µs: until year 2286
_DUE_DIGITS: Final = 16
_KIND_AT: Final = _DUE_DIGITS + 1
_TARGET_AT: Final = _KIND_AT + 2


class TimerKind(StrEnum):
    DEDUPE = "d"  # target: an event_id whose dedupe entry expires
    JOB = "j"  # target: the join key of a pending job that times out


def due_prefix(due_us: int) -> str:
    """The key prefix of every timer due at ``due_us``: a range bound (a timer due at exactly ``due_us`` sorts
    after it)."""
    return f"{min(max(due_us, 0), _MAX_DUE):016d}"


def timer_key_bytes(due_us: int, kind: TimerKind, target: bytes) -> bytes:
    """``TimerKey(due_us, kind, target).encode()`` as UTF-8, from the target's UTF-8 bytes: for the restore,
    which derives a timer per changelog record and would otherwise decode and encode every key."""
    if not 0 <= due_us <= _MAX_DUE:
        due_us = min(max(due_us, 0), _MAX_DUE)
    return b"%016d|%s|%s" % (due_us, _KIND_BYTES[kind], target)


_KIND_BYTES: Final = {kind: kind.value.encode() for kind in TimerKind}
_KIND_TEXT: Final = {kind: kind.value for kind in TimerKind}  # an enum's `value` is a descriptor call
_KIND_OF: Final = {kind.value: kind for kind in TimerKind}  # calling the enum runs Python


@final
@dataclass(init=False)
class TimerKey:
    """A timer: its store key is ``encode()``, its value the exact due time. A class with its own ``__init__``
    (built per event: see ``outputs``)."""

    due_us: Final[int]
    kind: Final[TimerKind]
    target: Final[str]

    def __init__(self, due_us: int, kind: TimerKind, target: str) -> None:
        self.due_us = due_us
        self.kind = kind
        self.target = target

    def encode(self) -> str:
        due_us = self.due_us
        if not 0 <= due_us <= _MAX_DUE:
            due_us = min(max(due_us, 0), _MAX_DUE)
        return f"{due_us:016d}|{_KIND_TEXT[self.kind]}|{self.target}"

    @classmethod
    def decode(cls, key: str, due_us: int) -> TimerKey:
        """The key read back; ``due_us`` is the stored value (exact, where the key's digits are clamped)."""
        kind = _KIND_OF.get(key[_KIND_AT])
        if kind is None:
            raise ValueError(f"not a timer key (kind {key[_KIND_AT]!r})")
        return cls(due_us, kind, key[_TARGET_AT:])


def join_key(account_id: str, event_type: str) -> str:
    return f"{account_id}|{event_type}"


def split_join_key(key: str) -> tuple[str, str]:
    """(account_id, event_type) of a join key."""
    account_id, _, event_type = key.rpartition("|")
    return account_id, event_type
