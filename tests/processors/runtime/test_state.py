"""TaskState against a model: reads and ordered ranges see the open transaction's writes over RocksDB,
a commit makes them local, a discard forgets them."""

from __future__ import annotations

import subprocess
import sys
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


_CRASHING_WRITER = """
import os, sys
from pathlib import Path
from processors.runtime.state import TaskState
state = TaskState(Path(sys.argv[1]), "crash", 0, {"s": "crash-s-changelog"})
for n in range(1, int(sys.argv[2]) + 1):
    for i in range(200):
        state.put("s", b"k%06d" % (n * 1000 + i), b"v" * 100)
    state.committed({"s": n})  # batch n: its 200 keys and the checkpoint position n, in one write batch
    if n == 10:
        state._db.flush()  # as RocksDB does when a memtable fills: batches 1-10 reach disk
    if n == int(sys.argv[3]):
        os.kill(os.getpid(), 9)  # dies without closing: nothing flushed on the way out
"""


def test_a_crash_leaves_the_store_at_a_checkpoint_it_matches(tmp_path: Path) -> None:
    """The local store writes without a write-ahead log (the changelog is the durable copy): a process killed
    mid-stream may lose its last batches, but whole, each with its checkpoint, so what survives is exactly the
    batches up to the checkpoint, and the restore resumes from there."""
    path = tmp_path / "store"
    crashed = subprocess.run([sys.executable, "-c", _CRASHING_WRITER, str(path), "50", "30"], check=False)
    assert crashed.returncode == -9
    state = TaskState(path, "crash", 0, {"s": "crash-s-changelog"})
    try:
        checkpoint = state.checkpoint()
        at = checkpoint.positions.get("s", 0) if checkpoint else 0
        assert 10 <= at <= 30  # flushed batches survive; later ones may not
        present = {key for key, _ in state.range("s", b"", b"\xff")}
        expected = {b"k%06d" % (n * 1000 + i) for n in range(1, at + 1) for i in range(200)}
        assert present == expected  # no batch after the checkpoint, none missing before it
    finally:
        state.close()


def _filter_policy(path: Path) -> str:
    """The filter policy of the options RocksDB last opened the store with (its newest OPTIONS file)."""
    newest = max(path.glob("OPTIONS-*"), key=lambda f: int(f.name.split("-")[1]))
    return next(line.split("=", 1)[1].strip() for line in newest.read_text().splitlines() if "filter_policy=" in line)


def test_the_bloom_filter_is_on_when_an_existing_store_is_opened_again(tmp_path: Path) -> None:
    # rocksdict opens an existing database's column families with its own default options unless told: the
    # store would then read without its files' filters (every dedupe miss searching each file).
    state = TaskState(tmp_path, "app", 0, {"s": "app-s-changelog"})
    state.put("s", b"k", b"v")
    state.committed({"s": 1})
    state.close()
    assert _filter_policy(tmp_path) == "bloomfilter"
    again = TaskState(tmp_path, "app", 0, {"s": "app-s-changelog"})
    try:
        assert _filter_policy(tmp_path) == "bloomfilter"
        assert again.get("s", b"k") == b"v"
        checkpoint = again.checkpoint()
        assert checkpoint is not None
        assert checkpoint.positions == {"s": 1}
    finally:
        again.close()
