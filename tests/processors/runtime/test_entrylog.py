"""An expiring store's changelog (processors/runtime/entrylog.py): one record per transaction holding the entries
it put, deletes kept local. The format round-trips and refuses what it did not write; a task's state writes its
puts as such records and never a delete; the retention check refuses a log that keeps less than the store."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.runtime.entrylog import EntryLogError, decode_entries, encode_entries
from processors.runtime.state import TaskState
from processors.service import log_retention_refusal

entries = st.lists(st.tuples(st.binary(max_size=40), st.binary(max_size=40)), max_size=60)


@given(entries, st.integers(min_value=1, max_value=400))
def test_the_records_hold_the_entries_in_order_each_within_the_size(
    written: list[tuple[bytes, bytes]], max_bytes: int
) -> None:
    records = encode_entries(written, max_bytes)
    assert [entry for record in records for entry in decode_entries(record)] == written
    assert (records == []) == (written == [])
    for record in records:  # over the limit only when one entry alone is
        assert len(record) <= max_bytes or len(decode_entries(record)) == 1


def test_a_record_it_did_not_write_is_refused() -> None:
    [record] = encode_entries([(b"event-1", b"\x01" + bytes(8))])
    with pytest.raises(EntryLogError, match="format"):
        decode_entries(b"\x02" + record[1:])
    for cut in range(2, len(record)):
        with pytest.raises(EntryLogError):
            decode_entries(record[:cut])


def test_a_task_logs_its_puts_in_one_record_and_keeps_its_deletes_local(tmp_path: Path) -> None:
    state = TaskState(tmp_path, "app", 0, {"seen": "app-seen-log"}, expiring=("seen",))
    try:
        state.put("seen", b"a", b"1")
        state.put("seen", b"b", b"2")
        [(store, key, value)] = list(state.pending_writes())
        assert (store, key) == ("seen", None)
        assert value is not None
        assert decode_entries(value) == [(b"a", b"1"), (b"b", b"2")]
        state.committed({"seen": 1})
        state.delete("seen", b"a")  # an expiry: nothing to log, no transaction needed for it
        assert list(state.pending_writes()) == []
        assert not state.has_pending_writes()
        state.put("seen", b"c", b"3")  # committed with the next put, the delete goes to the local store
        assert state.has_pending_writes()
        [(_, _, value)] = list(state.pending_writes())
        assert value is not None
        assert decode_entries(value) == [(b"c", b"3")]
        state.committed({"seen": 2})
        assert (state.get("seen", b"a"), state.get("seen", b"b"), state.get("seen", b"c")) == (None, b"2", b"3")
    finally:
        state.close()


def test_an_expiring_store_needs_a_changelog_of_its_own(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="changelog of its own"):
        TaskState(tmp_path, "app", 0, {}, ("seen",), expiring=("seen",))
    with pytest.raises(ValueError, match="changelog of its own"):
        TaskState(tmp_path, "app", 0, {"seen": "an-output"}, output_logged=("seen",), expiring=("seen",))


@pytest.mark.parametrize(
    ("configs", "refused"),
    [
        ({"cleanup.policy": "delete", "retention.ms": str(30 * 24 * 3_600_000)}, None),
        ({"cleanup.policy": "delete", "retention.ms": str(168 * 3_600_000)}, None),  # exactly the store's
        ({"cleanup.policy": "delete", "retention.ms": "-1"}, None),  # kept forever
        ({"cleanup.policy": "delete", "retention.ms": str(24 * 3_600_000)}, "retention.ms=86400000 (24 h)"),
        ({"cleanup.policy": "compact", "retention.ms": "-1"}, "cleanup.policy=compact"),
        ({"cleanup.policy": "compact,delete", "retention.ms": str(30 * 24 * 3_600_000)}, "cleanup.policy"),
    ],
)
def test_a_log_that_keeps_less_than_the_store_is_refused_naming_both(
    configs: dict[str, str | None], refused: str | None
) -> None:
    reason = log_retention_refusal("app-dedupe-log", configs, 168.0)
    if refused is None:
        assert reason is None
    else:
        assert reason is not None
        assert refused in reason
        assert "app-dedupe-log" in reason
        if "retention.ms" in refused:
            assert "PROCESSOR_DEDUPE_RETENTION_H (168 h)" in reason
