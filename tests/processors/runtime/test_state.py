"""TaskState against a model: reads and ordered ranges see the open transaction's writes over RocksDB,
a commit makes them local, a discard forgets them."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.runtime.state import TaskState

KEYS = st.lists(st.sampled_from([b"a", b"b", b"\x00", b"\xff"]), max_size=3).map(b"".join)  # small: keys collide
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), KEYS, st.binary(min_size=1, max_size=2)),
        st.tuples(st.just("delete"), KEYS, st.none()),
        st.tuples(st.just("commit"), st.none(), st.none()),
        st.tuples(st.just("discard"), st.none(), st.none()),
        st.tuples(st.just("range"), KEYS, KEYS),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(ops=OPS)
def test_reads_and_ranges_match_a_model(ops: list[tuple[str, bytes | None, bytes | None]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        state = TaskState(Path(tmp), "app", 0, {"s": "app-s-changelog", "other": "app-other-changelog"})
        committed: dict[bytes, bytes] = {}
        current: dict[bytes, bytes] = {}
        try:
            for op, a, b in ops:
                if op == "put" and a is not None and b is not None:
                    state.put("s", a, b)
                    current[a] = b
                    state.put("other", a, b"x")  # another store's writes never show in "s"
                elif op == "delete" and a is not None:
                    state.delete("s", a)
                    current.pop(a, None)
                elif op == "commit":
                    state.committed({})
                    committed = dict(current)
                elif op == "discard":
                    state.discard()
                    current = dict(committed)
                elif op == "range" and a is not None and b is not None:
                    # Lazy: consume while writing, as the timers do after materializing.
                    seen = list(state.range("s", a, b))
                    assert seen == sorted((k, v) for k, v in current.items() if a <= k < b)
                for key in {a, b} - {None}:
                    assert key is not None
                    assert state.get("s", key) == current.get(key)
            assert list(state.range("s", b"", b"\xff\xff\xff\xff")) == sorted(current.items())
            assert {k for s, k, _ in state.pending_writes() if s == "s"} >= set(current.keys() - committed.keys())
        finally:
            state.close()
