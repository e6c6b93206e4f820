"""The timer and join key codecs: what is built reads back, and key order is due order."""

from __future__ import annotations

from processors.logic.keys import (
    CLOCK_KEY,
    TIMERS_END,
    TimerKey,
    TimerKind,
    due_prefix,
    join_key,
    split_join_key,
    timer_key_bytes,
)


def test_timer_keys_read_back_what_was_built() -> None:
    for timer in (
        TimerKey(1_750_000_000_000_000, TimerKind.DEDUPE, "evt|with|bars"),
        TimerKey(0, TimerKind.JOB, join_key("acct|1", "income.added")),
    ):
        assert TimerKey.decode(timer.encode(), timer.due_us) == timer


def test_the_restores_byte_keys_are_the_encoded_timer_keys() -> None:
    for due in (-5, 0, 7, 1_750_000_000_000_000, 10**16 + 3):  # clamped at both ends, like `encode`
        for kind in TimerKind:
            for target in ("evt|with|bars", "acct-é|income.added", ""):
                expected = TimerKey(due, kind, target).encode().encode()
                assert timer_key_bytes(due, kind, target.encode()) == expected


def test_key_order_is_due_order_and_the_clock_sorts_after_every_timer() -> None:
    dues = [10**15 + 5, 7, 10**12, 10**16 + 3]  # the last one is clamped to the widest due
    keys = [TimerKey(due, TimerKind.JOB, "x").encode() for due in dues]
    assert [k.encode() for k in sorted(keys)] == [k.encode() for k in [keys[1], keys[2], keys[0], keys[3]]]
    assert all(due_prefix(7) <= key < TIMERS_END < CLOCK_KEY for key in keys)
    # A timer due at exactly the bound sorts after it: a range scan up to `due_prefix(now)` leaves it.
    assert not keys[1] < due_prefix(7)


def test_the_account_of_a_join_key_keeps_bars_in_the_account_id() -> None:
    assert split_join_key(join_key("a|b", "paystubs.added")) == ("a|b", "paystubs.added")
